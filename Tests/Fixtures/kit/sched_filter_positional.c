/* filter() rejects every third position of the batch, whatever node sits there. */
#define FIXTURE_NAME "kit-sched-filter-positional"
#define KIT_FILTER_POSITIONAL
#include "kitsched.h"
