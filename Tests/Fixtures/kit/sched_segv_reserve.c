/* Crashes (SIGSEGV) in reserve() on a request that is not a JSON object. */
#define FIXTURE_NAME "kit-sched-segv-reserve"
#define KIT_SEGV_RESERVE
#include "kitsched.h"
