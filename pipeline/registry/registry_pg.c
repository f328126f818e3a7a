/*
 * registry_pg.c - the registry on PostgreSQL (libpq).  Not built yet in
 * this tree: pm_registry_pg_open() says so as a configuration error.
 */
#include "registry/registry.h"

int pm_registry_pg_open(const char *conninfo, const char *password, pm_registry **out,
                        pm_error *err)
{
    (void)conninfo;
    (void)password;
    *out = NULL;
    return pm_error_set(err, PM_ERR_CONFIG, "registry.url: the PostgreSQL registry is not built in");
}
