/* No fault: the network base with identities; passes every case, release policies included (not skipped). */
#define FIXTURE_NAME "kit-identity-ok"
#define KIT_IDENTITIES
#include "kitnet.h"
