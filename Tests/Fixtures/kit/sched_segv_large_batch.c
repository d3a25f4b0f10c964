/* filter() keeps a fixed table of 4096 nodes and crashes (SIGSEGV) on a larger batch. */
#define FIXTURE_NAME "kit-sched-segv-large-batch"
#define KIT_SEGV_LARGE_BATCH
#include "kitsched.h"
