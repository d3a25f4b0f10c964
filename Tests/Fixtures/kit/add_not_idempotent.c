/* A repeated ADD of the same key allocates another address. */
#define FIXTURE_NAME "kit-add-not-idempotent"
#define KIT_ADD_NOT_IDEMPOTENT
#include "kitnet.h"
