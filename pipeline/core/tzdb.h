/*
 * tzdb.h - the IANA time zone names this machine knows.
 *
 * Loaded once at start-up from $TZDIR/tzdata.zi (TZDIR defaults to
 * /usr/share/zoneinfo, as in glibc): every "Z name" and "L target alias"
 * line, sorted for binary search.  Without tzdata.zi a name is checked
 * strictly (relative, no "..", letters, digits and "_+-/") and the file
 * $TZDIR/<name> must start with "TZif".  Read-only once loaded; lookups are
 * safe from any thread.
 */
#ifndef PM_TZDB_H
#define PM_TZDB_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

/* Where IANA zone data lives when $TZDIR is not set. */
#define PM_ZONEINFO_DIR "/usr/share/zoneinfo"

typedef struct pm_tz_set pm_tz_set;

/*
 * Load the zone names under zoneinfo_dir (NULL: $TZDIR or PM_ZONEINFO_DIR).
 * Fails (PM_ERR_CONFIG) if zoneinfo_dir is not a directory or its tzdata.zi
 * lists no zones.  The caller frees the set with pm_tz_set_destroy().
 */
int pm_tz_set_load(const char *zoneinfo_dir, pm_tz_set **out, pm_error *err);
void pm_tz_set_destroy(pm_tz_set *set);
/* Is name[0..len) a known zone ("Europe/London", "UTC")? */
bool pm_tz_set_has(const pm_tz_set *set, const char *name, size_t len);
/* Number of names loaded from tzdata.zi; 0 in file-lookup fallback mode. */
size_t pm_tz_set_count(const pm_tz_set *set);

#endif
