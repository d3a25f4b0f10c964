/* Counts its deliveries in the namespace: a repeated batch changes the state (not idempotent). */
#define FIXTURE_NAME "kit-disc-counts"
#define KIT_DISC_COUNTS
#include "kitdisc.h"
