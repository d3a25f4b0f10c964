/* constructor_marker — a valid plugin (good.c) whose constructor leaves <MARKER_DIR>/marker-<pid>: shows in which
 * process a plugin's code ran when it was loaded (a dry run of a site must never load it into berthd). */
#include <stdio.h>
#include <unistd.h>
#include "good.c"

#ifndef MARKER_DIR
#error "compile with -DMARKER_DIR=\"/some/dir\""
#endif

__attribute__((constructor)) static void leave_marker(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/marker-%d", MARKER_DIR, (int)getpid());
    FILE *f = fopen(path, "w");
    if (f) { fputs("constructor ran\n", f); fclose(f); }
}
