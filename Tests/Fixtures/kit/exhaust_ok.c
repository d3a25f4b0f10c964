/* A full pool answers OK with no ips instead of RESOURCE_EXHAUSTED. */
#define FIXTURE_NAME "kit-exhaust-ok"
#define KIT_EXHAUST_OK
#include "kitnet.h"
