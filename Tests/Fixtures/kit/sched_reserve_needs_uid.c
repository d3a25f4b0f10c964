/* reserve() requires a "uid" field that berthd never sends: every reserve fails. */
#define FIXTURE_NAME "kit-sched-reserve-needs-uid"
#define KIT_RESERVE_NEEDS_UID
#include "kitsched.h"
