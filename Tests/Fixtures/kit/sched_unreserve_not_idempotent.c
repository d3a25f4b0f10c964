/* unreserve() of a reservation that is not there returns NOT_FOUND. */
#define FIXTURE_NAME "kit-sched-unreserve-not-idempotent"
#define KIT_UNRESERVE_NOT_IDEMPOTENT
#include "kitsched.h"
