/* No fault: the kit base passes every network case. */
#define FIXTURE_NAME "kit-base"
#define KIT_NONE
#include "kitnet.h"
