/* An identity added while its address is still attached to another container takes it over: two live attachments
 * share the address (what ipam-pool did before; the kit refuses it). */
#define FIXTURE_NAME "kit-identity-takes-over"
#define KIT_IDENTITY_TAKES_OVER
#include "kitnet.h"
