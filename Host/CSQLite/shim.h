#include <sqlite3.h>

/* sqlite3_config and sqlite3_db_config are variadic, which Swift cannot call: these fixed-argument wrappers can. */

/* Process-wide, before the first connection opens: no memory-use accounting (it takes a global mutex on every
   allocation; berthd never reads the figures). Returns SQLITE_MISUSE when SQLite is already initialised. */
static inline int berth_sqlite_configure(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* Per connection: a larger lookaside pool (small allocations served from a per-connection arena). */
static inline int berth_sqlite_lookaside(sqlite3 *db, int slot_size, int slots) {
    return sqlite3_db_config(db, SQLITE_DBCONFIG_LOOKASIDE, (void *)0, slot_size, slots);
}
