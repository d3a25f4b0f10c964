/* Crashes (SIGSEGV) in unreserve() on a request that is not a JSON object. */
#define FIXTURE_NAME "kit-sched-segv-unreserve"
#define KIT_SEGV_UNRESERVE
#include "kitsched.h"
