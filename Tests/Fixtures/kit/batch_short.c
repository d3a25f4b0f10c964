/* add_batch returns one result fewer than the items it was given (the last is left out). */
#define FIXTURE_NAME "kit-batch-short"
#define KIT_BATCH_SHORT
#include "kitnet.h"
