/* filter() rejects a different node on each call. */
#define FIXTURE_NAME "kit-sched-filter-nondeterministic"
#define KIT_FILTER_NONDETERMINISTIC
#include "kitsched.h"
