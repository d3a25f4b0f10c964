/* reserve() and bind() take requests they cannot read and record them under "?". */
#define FIXTURE_NAME "kit-sched-accepts-invalid"
#define KIT_ACCEPTS_INVALID
#include "kitsched.h"
