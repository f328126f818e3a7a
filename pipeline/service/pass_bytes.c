/*
 * pass_bytes.c - the one place serve reads a pass's objects.
 *
 * Today an object is one key of the store (pkpass_key, qr_key) read with
 * pm_store_get; a store with another layout swaps its reader in here and
 * nowhere else.
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
