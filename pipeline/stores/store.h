/*
 * store.h - where artefacts go: an object store behind one small interface.
 *
 * Implementations: the local directory store (store_local.c, the embedded
 * default) and S3 (store_s3.c).  pm_store_open() picks one from the config.
 *
 * Keys are relative, '/'-separated ("passes/ABC123.pkpass"); a key that is
 * empty, absolute, or contains "." / ".." segments, a backslash, a control
 * byte or an empty segment is refused (pm_store_key_valid), so a key can
 * never escape the store root.
 *
 * pm_store_put() returns 0 only once the object is visible under its key in
 * full (never partially), and durable -- or, for stores with a sync op,
 * durable after the next pm_store_sync().  It is safe to call from many
 * threads at once.
 *
 * Layouts (store.layout, docs/s3.md): "full" keeps every pass as one
 * object, "passes/<serial>.pkpass" (a direct link can hand it out).
 * "split" (store_split.c) wraps the store: the static entries every pass of
 * one template version shares are written once, per pass only its own
 * bytes (~5 KB), and get/stream of the .pkpass key assemble the same bytes
 * that were put.  Read passes through stores/pass_read.h, which works with
 * either.
 */
#ifndef PM_STORE_H
#define PM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/error.h"

typedef struct pm_object {
    const char *key;
    const uint8_t *data;
    size_t len;
    const char *content_type;  /* e.g. "application/vnd.apple.pkpass" */
    const char *sha256_hex;    /* optional, stored as metadata where possible */
} pm_object;

typedef struct pm_store pm_store;

/* Receives an object's bytes in order, in one or more pieces; non-zero stops. */
typedef int (*pm_store_sink)(void *ctx, const uint8_t *data, size_t len);

typedef struct pm_store_ops {
    const char *name;
    int (*put)(pm_store *s, const pm_object *obj, pm_error *err);
    /*
     * Make every put() that returned before this call durable (one fsync
     * batch instead of one per object).  NULL when put() is durable by
     * itself (S3).  The engine reports a pass only after its batch synced.
     */
    int (*sync)(pm_store *s, pm_error *err);
    /* Read an object back (tests, verify). */
    int (*get)(pm_store *s, const char *key, pm_buf *out, pm_error *err);
    /*
     * Remove an object; one that is not there is not an error.  Durable
     * like put(): by itself, or after the next sync().  NULL: the store
     * cannot remove (pm_store_delete then fails).
     */
    int (*del)(pm_store *s, const char *key, pm_error *err);
    /* A URL a buyer can fetch the object with (presigned for S3); NULL if none. Caller frees. */
    char *(*url)(pm_store *s, const char *key, int64_t now);
    void (*close)(pm_store *s);
    /* Hand an object's bytes to sink without one buffer for all of it; NULL: get + one call. */
    int (*stream)(pm_store *s, const char *key, pm_store_sink sink, void *ctx, pm_error *err);
} pm_store_ops;

/* Every implementation's struct starts with this. */
struct pm_store {
    const pm_store_ops *ops;
};

int pm_store_open(const pm_config *cfg, pm_store **out, pm_error *err);
static inline int pm_store_put(pm_store *s, const pm_object *o, pm_error *e) { return s->ops->put(s, o, e); }
static inline int pm_store_get(pm_store *s, const char *k, pm_buf *b, pm_error *e) { return s->ops->get(s, k, b, e); }
static inline int pm_store_delete(pm_store *s, const char *k, pm_error *e)
{
    return s->ops->del ? s->ops->del(s, k, e)
                       : pm_error_set(e, PM_ERR_STORE, "store %s cannot remove '%s'", s->ops->name, k);
}
static inline int pm_store_sync(pm_store *s, pm_error *e) { return s->ops->sync ? s->ops->sync(s, e) : 0; }
static inline char *pm_store_url(pm_store *s, const char *k, int64_t now) { return s->ops->url ? s->ops->url(s, k, now) : NULL; }
void pm_store_close(pm_store *s);
int pm_store_stream(pm_store *s, const char *key, pm_store_sink sink, void *ctx, pm_error *err);

bool pm_store_key_valid(const char *key);

/* The keys of a pass's objects: "passes/<serial>.pkpass" and "qr/<serial>.png". */
void pm_store_pass_keys(const char *serial, char *pkpass, size_t plen, char *qr, size_t qlen);

/* Constructors, used by pm_store_open and tests. */
int pm_store_local_open(const char *root, bool fsync_objects, pm_store **out, pm_error *err);
int pm_store_s3_open(const pm_config *cfg, pm_store **out, pm_error *err);
/* store.layout = split over inner (owned from now on, closed with it, even on error). */
int pm_store_split_open(pm_store *inner, pm_store **out, pm_error *err);

#endif
