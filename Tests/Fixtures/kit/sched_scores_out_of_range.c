/* A scheduler plugin whose score() writes 150 for every node: out of the 0..100 range. */
#define FIXTURE_NAME "kit-sched-scores-out-of-range"
#define KIT_SCORES_OUT_OF_RANGE
#include "kitsched.h"
