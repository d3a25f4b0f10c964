/* unreserve() deletes the wrong key: the reservation stays after unreserve. */
#define FIXTURE_NAME "kit-sched-unreserve-leaks"
#define KIT_UNRESERVE_LEAKS
#include "kitsched.h"
