/* Merges a resync into what it knows: an instance the snapshot no longer lists survives (the resync does not converge). */
#define FIXTURE_NAME "kit-disc-resync-merges"
#define KIT_DISC_RESYNC_MERGES
#include "kitdisc.h"
