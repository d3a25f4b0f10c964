/* score() depends on a per-call counter: the same batch scores differently each time. */
#define FIXTURE_NAME "kit-sched-scores-nondeterministic"
#define KIT_SCORES_NONDETERMINISTIC
#include "kitsched.h"
