/* Applies every event whatever its rev: an older batch after a newer one resurrects a gone instance. */
#define FIXTURE_NAME "kit-disc-ignores-rev"
#define KIT_DISC_IGNORES_REV
#include "kitdisc.h"
