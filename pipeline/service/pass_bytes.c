/*
 * pass_bytes.c - the one place serve reads a pass's objects.
 *
 * An object is one key of the store (pkpass_key, qr_key) read with
 * pm_store_get.  With store.layout = split the store serve opened is the
 * split store (stores/store.h), whose get assembles the template prefix and
 * the pass's own part into the bytes the full layout keeps, so serve needs
 * no layout of its own (stores/pass_read.h reads the same way).
 */
#include "service/internal.h"

#include "stores/store.h"

int service_pass_bytes(pm_service *s, const pm_registry_service_pass *pass, bool qr, pm_buf *out,
                       pm_error *err)
{
    pm_buf_reset(out);
    const char *key = qr ? pass->qr_key : pass->pkpass_key;
    if (!pm_store_key_valid(key))
        return pm_error_set(err, PM_ERR_STORE, "pass object key '%s' is not a valid store key", key);
    return pm_store_get(s->store, key, out, err);
}
