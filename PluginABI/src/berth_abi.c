/* The ABI is header-only; this file lets SwiftPM build the module and checks the header compiles as C11. */
#include "berth_plugin.h"

_Static_assert(sizeof(berth_status) == sizeof(int), "berth_status is an int-sized enum");
