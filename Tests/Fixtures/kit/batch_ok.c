/* No fault: add_batch (ABI 1.1) done right; the kit base with it passes every network case. */
#define FIXTURE_NAME "kit-batch-ok"
#define KIT_BATCH
#include "kitnet.h"
