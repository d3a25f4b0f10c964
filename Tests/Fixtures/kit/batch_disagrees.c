/* add_batch allocates from the top of the pool down, add from the bottom up: a batch hands out other addresses
 * than the same items added one at a time. */
#define FIXTURE_NAME "kit-batch-disagrees"
#define KIT_BATCH_DISAGREES
#include "kitnet.h"
