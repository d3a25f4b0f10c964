/* Crashes (SIGSEGV) on an event or instance record over 1 MiB (copies it into a fixed buffer). */
#define FIXTURE_NAME "kit-disc-segv-huge"
#define KIT_DISC_SEGV_HUGE
#include "kitdisc.h"
