/* Hands out the same address twice: a counter that wraps, no reservations. */
#define FIXTURE_NAME "kit-duplicates"
#define KIT_DUPLICATES
#include "kitnet.h"
