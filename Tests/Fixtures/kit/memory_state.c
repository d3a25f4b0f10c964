/* Keeps its state in the instance's memory: lost when a new instance is created. */
#define FIXTURE_NAME "kit-memory-state"
#define KIT_MEMORY_STATE
#include "kitnet.h"
