/* pass_read.c - a stored pass's bytes, whatever the layout (see pass_read.h). */
#include "stores/pass_read.h"

static int pass_key(const char *serial, char *key, size_t keylen, pm_error *err)
{
    char qr[8];
    pm_store_pass_keys(serial ? serial : "", key, keylen, qr, sizeof qr);
    if (!serial || !*serial || !pm_store_key_valid(key))
        return pm_error_set(err, PM_ERR_STORE, "serial '%s': not a valid pass serial",
                            serial ? serial : "");
    return 0;
}

int pm_pass_read(pm_store *store, const char *serial, pm_buf *out, pm_error *err)
{
    char key[1100];
    if (pass_key(serial, key, sizeof key, err) != 0)
        return -1;
    return pm_store_get(store, key, out, err);
}

int pm_pass_stream(pm_store *store, const char *serial, pm_store_sink sink, void *ctx,
                   pm_error *err)
{
    char key[1100];
    if (pass_key(serial, key, sizeof key, err) != 0)
        return -1;
    return pm_store_stream(store, key, sink, ctx, err);
}
