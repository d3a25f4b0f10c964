/* Refuses every identity (the old advice of the network guide): berthd sends one for every App instance. */
#define FIXTURE_NAME "kit-identity-refused"
#define KIT_REFUSES_IDENTITIES
#include "kitnet.h"
