/* DEL of an unknown attachment returns NOT_FOUND instead of OK. */
#define FIXTURE_NAME "kit-del-unknown-fails"
#define KIT_DEL_UNKNOWN_FAILS
#include "kitnet.h"
