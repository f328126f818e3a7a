/* store.c - picking a store implementation, and the key rules they share. */
#include "stores/store.h"

#include <stdio.h>
#include <string.h>

bool pm_store_key_valid(const char *key)
{
    if (!key || !*key || key[0] == '/' || strlen(key) > 1024)
        return false;
    const char *seg = key;
    for (const char *p = key;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t n = (size_t)(p - seg);
            if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            if (*p == '\0')
                return true;
            seg = p + 1;
        } else if (*p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f) {
            return false;
        }
    }
}

int pm_store_open(const pm_config *cfg, pm_store **out, pm_error *err)
{
    bool split = strcmp(cfg->store_layout, "split") == 0;
    if (!split && strcmp(cfg->store_layout, "full") != 0)
        return pm_error_set(err, PM_ERR_CONFIG, "store.layout: expected full or split, got '%s'",
                            cfg->store_layout);
    pm_store *s;
    int rc;
    if (strcmp(cfg->store_type, "local") == 0)
        rc = pm_store_local_open(cfg->store_dir, cfg->store_fsync, &s, err);
    else if (strcmp(cfg->store_type, "s3") == 0)
        rc = pm_store_s3_open(cfg, &s, err);
    else
        return pm_error_set(err, PM_ERR_CONFIG, "store.type: expected local or s3, got '%s'",
                            cfg->store_type);
    if (rc != 0)
        return rc;
    if (!split) {
        *out = s;
        return 0;
    }
    return pm_store_split_open(s, out, err);
}

int pm_store_stream(pm_store *s, const char *key, pm_store_sink sink, void *ctx, pm_error *err)
{
    if (s->ops->stream)
        return s->ops->stream(s, key, sink, ctx, err);
    pm_buf b;
    pm_buf_init(&b);
    int rc = pm_store_get(s, key, &b, err);
    if (rc == 0 && sink(ctx, b.data, b.len) != 0)
        rc = pm_error_set(err, PM_ERR_IO, "store: writing '%s' out failed", key);
    pm_buf_free(&b);
    return rc;
}

void pm_store_close(pm_store *s)
{
    if (s)
        s->ops->close(s);
}

void pm_store_pass_keys(const char *serial, char *pkpass, size_t plen, char *qr, size_t qlen)
{
    snprintf(pkpass, plen, "passes/%s.pkpass", serial);
    snprintf(qr, qlen, "qr/%s.png", serial);
}
