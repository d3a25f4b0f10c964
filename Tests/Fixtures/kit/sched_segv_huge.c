/* Crashes (SIGSEGV) in reserve, bind and unreserve on an app name over 1 MiB. */
#define FIXTURE_NAME "kit-sched-segv-huge"
#define KIT_SEGV_HUGE
#include "kitsched.h"
