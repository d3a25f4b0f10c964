/* GC returns OK and releases nothing. */
#define FIXTURE_NAME "kit-gc-ignored"
#define KIT_GC_IGNORED
#include "kitnet.h"
