/* An immutable identity does not get its held address back: its next ADD allocates a new one. */
#define FIXTURE_NAME "kit-identity-not-returned"
#define KIT_IDENTITY_NOT_RETURNED
#include "kitnet.h"
