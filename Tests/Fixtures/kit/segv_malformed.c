/* Crashes (SIGSEGV) on a request that is not a JSON object. */
#define FIXTURE_NAME "kit-segv-malformed"
#define KIT_SEGV_MALFORMED
#include "kitnet.h"
