/* Crashes (SIGSEGV) on a request over 1 MiB (copies it into a fixed buffer). */
#define FIXTURE_NAME "kit-segv-huge"
#define KIT_SEGV_HUGE
#include "kitnet.h"
