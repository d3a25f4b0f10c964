/* add_batch is not all or nothing: an item it cannot add becomes {"error": ...} in the results and the call
 * returns OK, so the items before it stay attached. */
#define FIXTURE_NAME "kit-batch-not-atomic"
#define KIT_BATCH_NOT_ATOMIC
#include "kitnet.h"
