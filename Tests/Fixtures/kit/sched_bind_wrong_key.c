/* bind() looks for the reservation under the wrong key and returns NOT_FOUND. */
#define FIXTURE_NAME "kit-sched-bind-wrong-key"
#define KIT_BIND_WRONG_KEY
#include "kitsched.h"
