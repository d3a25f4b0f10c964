/* No fault: the kit's scheduler base passes every scheduler case. */
#define FIXTURE_NAME "kit-sched-base"
#define KIT_NONE
#include "kitsched.h"
