/* No fault: the kit's discovery base passes every discovery case. */
#define FIXTURE_NAME "kit-disc-base"
#define KIT_NONE
#include "kitdisc.h"
