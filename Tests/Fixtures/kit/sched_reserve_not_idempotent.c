/* reserve() of an ordinal that is already reserved returns ALREADY_EXISTS instead of replacing it. */
#define FIXTURE_NAME "kit-sched-reserve-not-idempotent"
#define KIT_RESERVE_NOT_IDEMPOTENT
#include "kitsched.h"
