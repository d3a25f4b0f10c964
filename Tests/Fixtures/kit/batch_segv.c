/* Crashes (SIGSEGV) in add_batch when "items" is not an array. */
#define FIXTURE_NAME "kit-batch-segv"
#define KIT_BATCH_SEGV
#include "kitnet.h"
