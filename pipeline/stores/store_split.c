/*
 * store_split.c - store.layout = split: a pass's static prefix once, its own
 * bytes per pass (see store.h).
 *
 * Wraps another store.  A put of "passes/<serial>.pkpass" is cut where the
 * archive's "pass.json" entry begins (the bundle stage writes the static
 * template files first, then the pass's own entries, then the central
 * directory).  The bytes before it, identical in every pass of one template
 * version, go once to "prefixes/<sha256 of those bytes>.zip-prefix"; the
 * rest, about 5 KB, to "passes/<serial>.part" behind a one-line header
 * naming the prefix:
 *
 *     passmill-split 1 prefixes/<64 hex>.zip-prefix <prefix length>\n
 *
 * A get of the .pkpass key reads the part and its prefix and hands back
 * prefix + rest: the very bytes that were put.
 *
 * Why content-addressed and not templates/<id>/<version>: the key then
 * names exactly the bytes a part needs, whatever produced them (a template
 * version, a strip image variant, a passmill upgrade that packs the static
 * files differently), so an old part never meets a different prefix.
 *
 * Durability: the prefix is put (synchronously, under the lock, so other
 * workers with the same prefix wait) before the first part that needs it,
 * in this process; it is durable by the time that part is (S3: both on
 * return; local: the same next sync).  Every known prefix stays in memory
 * (one per template version and strip variant in use, ~90 KB each), so
 * cutting a pass costs a memcmp and reading one costs one object.
 */
#include "stores/store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define HEADER_MAGIC "passmill-split 1 "
#define PASS_DIR "passes/"
#define PASS_EXT ".pkpass"
#define PART_EXT ".part"

typedef struct known_prefix {
    struct known_prefix *next; /* immutable once published */
    char key[96];              /* "prefixes/<hex>.zip-prefix" */
    uint8_t *data;
    size_t len;
} known_prefix;

typedef struct split_store {
    pm_store base;
    pm_store *inner;
    _Atomic(known_prefix *) prefixes; /* read without the lock, pushed under it */
    pthread_mutex_t lock;
} split_store;

/* "passes/<serial>.pkpass" -> "passes/<serial>.part"; false for every other key. */
static bool part_key(const char *key, char *out, size_t outlen)
{
    size_t n = strlen(key), d = strlen(PASS_DIR), e = strlen(PASS_EXT);
    if (n <= d + e || strncmp(key, PASS_DIR, d) != 0 || strcmp(key + n - e, PASS_EXT) != 0)
        return false;
    return snprintf(out, outlen, "%.*s" PART_EXT, (int)(n - e), key) < (int)outlen;
}

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) { return le16(p) | le16(p + 2) << 16; }

/*
 * Offset of the local entry of "pass.json", found through the central
 * directory: where the pass's own bytes begin.  -1 if data is no archive of
 * that shape.
 */
static long own_bytes_start(const uint8_t *data, size_t len)
{
    if (len < 22 || le32(data + len - 22) != 0x06054b50u)
        return -1;
    const uint8_t *eocd = data + len - 22;
    size_t cd_len = le32(eocd + 12), cd_off = le32(eocd + 16), n = le16(eocd + 10);
    if (cd_off + cd_len + 22 != len)
        return -1;
    const uint8_t *p = data + cd_off, *end = p + cd_len;
    for (size_t i = 0; i < n; i++) {
        if ((size_t)(end - p) < 46 || le32(p) != 0x02014b50u)
            return -1;
        size_t name_len = le16(p + 28), skip = 46 + name_len + le16(p + 30) + le16(p + 32);
        if ((size_t)(end - p) < skip)
            return -1;
        if (name_len == 9 && memcmp(p + 46, "pass.json", 9) == 0) {
            size_t off = le32(p + 42);
            return off <= cd_off ? (long)off : -1;
        }
        p += skip;
    }
    return -1;
}

static known_prefix *find_by_bytes(split_store *ss, const uint8_t *data, size_t len)
{
    for (known_prefix *k = atomic_load(&ss->prefixes); k; k = k->next)
        if (k->len == len && memcmp(k->data, data, len) == 0)
            return k;
    return NULL;
}

static known_prefix *find_by_key(split_store *ss, const char *key)
{
    for (known_prefix *k = atomic_load(&ss->prefixes); k; k = k->next)
        if (strcmp(k->key, key) == 0)
            return k;
    return NULL;
}

static int prefix_key(const uint8_t *data, size_t len, char *out, size_t outlen)
{
    uint8_t md[32];
    unsigned mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return -1;
    char hex[65];
    pm_hex_encode(md, 32, hex);
    snprintf(out, outlen, "prefixes/%s.zip-prefix", hex);
    return 0;
}

/* Remember a prefix; the caller holds the lock. */
static known_prefix *remember(split_store *ss, const char *key, const uint8_t *data, size_t len)
{
    known_prefix *k = calloc(1, sizeof *k);
    if (!k || !(k->data = malloc(len ? len : 1))) {
        free(k);
        return NULL;
    }
    snprintf(k->key, sizeof k->key, "%s", key);
    memcpy(k->data, data, len);
    k->len = len;
    k->next = atomic_load(&ss->prefixes);
    atomic_store(&ss->prefixes, k);
    return k;
}

/* The stored prefix for these bytes, put on first sight. */
static const known_prefix *ensure_prefix(split_store *ss, const uint8_t *data, size_t len,
                                         pm_error *err)
{
    known_prefix *k = find_by_bytes(ss, data, len);
    if (k)
        return k;
    pthread_mutex_lock(&ss->lock);
    k = find_by_bytes(ss, data, len);
    if (!k) {
        char key[96];
        if (prefix_key(data, len, key, sizeof key) != 0) {
            pm_error_set(err, PM_ERR_CRYPTO, "store: SHA-256 of a pass prefix failed");
        } else {
            pm_object o = {key, data, len, "application/octet-stream", NULL};
            if (pm_store_put(ss->inner, &o, err) == 0 && !(k = remember(ss, key, data, len)))
                pm_error_set(err, PM_ERR_NOMEM, "store: out of memory");
        }
    }
    pthread_mutex_unlock(&ss->lock);
    return k;
}

static int split_put(pm_store *s, const pm_object *obj, pm_error *err)
{
    split_store *ss = (split_store *)s;
    char part[1100];
    if (!part_key(obj->key, part, sizeof part))
        return pm_store_put(ss->inner, obj, err);
    long cut = own_bytes_start(obj->data, obj->len);
    if (cut < 0)
        return pm_error_set(err, PM_ERR_STORE, "store: '%s' is not a pass archive of the "
                            "bundle stage's shape (static entries, pass.json, ...)", obj->key);
    const known_prefix *k = ensure_prefix(ss, obj->data, (size_t)cut, err);
    if (!k)
        return -1;
    char header[160];
    int hlen = snprintf(header, sizeof header, HEADER_MAGIC "%s %zu\n", k->key, k->len);
    size_t rest = obj->len - (size_t)cut;
    uint8_t *buf = malloc((size_t)hlen + rest);
    if (!buf)
        return pm_error_set(err, PM_ERR_NOMEM, "store: out of memory");
    memcpy(buf, header, (size_t)hlen);
    memcpy(buf + hlen, obj->data + cut, rest);
    /* No sha256 metadata: the pass's hash is not this object's (the registry has it). */
    pm_object o = {part, buf, (size_t)hlen + rest, "application/octet-stream", NULL};
    int rc = pm_store_put(ss->inner, &o, err);
    free(buf);
    return rc;
}

/* A pass's object is its part; anything else (a QR image) is the inner store's own. */
static int split_del(pm_store *s, const char *key, pm_error *err)
{
    split_store *ss = (split_store *)s;
    char part[1100];
    return pm_store_delete(ss->inner, part_key(key, part, sizeof part) ? part : key, err);
}

static int split_sync(pm_store *s, pm_error *err)
{
    return pm_store_sync(((split_store *)s)->inner, err);
}

/* The prefix a part names, from memory or read (and checked) once. */
static const known_prefix *load_prefix(split_store *ss, const char *key, size_t len,
                                       pm_error *err)
{
    known_prefix *k = find_by_key(ss, key);
    if (k && k->len != len)
        pm_error_set(err, PM_ERR_STORE, "store: prefix '%s' is %zu bytes, its part says %zu",
                     key, k->len, len);
    if (k)
        return k->len == len ? k : NULL;
    pm_buf b;
    pm_buf_init(&b);
    if (pm_store_get(ss->inner, key, &b, err) != 0) {
        pm_buf_free(&b);
        return NULL;
    }
    char want[96];
    if (b.len != len || prefix_key(b.data, b.len, want, sizeof want) != 0 ||
        strcmp(want, key) != 0) {
        pm_buf_free(&b);
        pm_error_set(err, PM_ERR_STORE, "store: prefix '%s' does not match its name", key);
        return NULL;
    }
    pthread_mutex_lock(&ss->lock);
    if (!(k = find_by_key(ss, key)) && !(k = remember(ss, key, b.data, b.len)))
        pm_error_set(err, PM_ERR_NOMEM, "store: out of memory");
    pthread_mutex_unlock(&ss->lock);
    pm_buf_free(&b);
    return k;
}

/* Read a part: its prefix and where the pass's own bytes start in part. */
static int read_part(split_store *ss, const char *key, pm_buf *part, const known_prefix **pre,
                     size_t *rest_off, pm_error *err)
{
    char pk[1100];
    if (!part_key(key, pk, sizeof pk) || pm_store_get(ss->inner, pk, part, err) != 0)
        return -1;
    const uint8_t *nl = memchr(part->data, '\n', part->len < 160 ? part->len : 160);
    char pkey[96];
    size_t plen;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "%s%%95s %%zu", HEADER_MAGIC);
    char line[161];
    if (nl) {
        memcpy(line, part->data, (size_t)(nl - part->data));
        line[nl - part->data] = '\0';
    }
    if (!nl || sscanf(line, fmt, pkey, &plen) != 2 || strncmp(pkey, "prefixes/", 9) != 0 ||
        !pm_store_key_valid(pkey))
        return pm_error_set(err, PM_ERR_STORE, "store: '%s' is not a split-layout part", pk);
    if (!(*pre = load_prefix(ss, pkey, plen, err)))
        return -1;
    *rest_off = (size_t)(nl - part->data) + 1;
    return 0;
}

static int split_get(pm_store *s, const char *key, pm_buf *out, pm_error *err)
{
    split_store *ss = (split_store *)s;
    char pk[1100];
    if (!part_key(key, pk, sizeof pk))
        return pm_store_get(ss->inner, key, out, err);
    pm_buf part;
    pm_buf_init(&part);
    const known_prefix *pre;
    size_t off;
    int rc = read_part(ss, key, &part, &pre, &off, err);
    if (rc == 0) {
        pm_buf_reset(out);
        if (pm_buf_append(out, pre->data, pre->len) != 0 ||
            pm_buf_append(out, part.data + off, part.len - off) != 0)
            rc = pm_error_set(err, PM_ERR_NOMEM, "store: out of memory");
    }
    pm_buf_free(&part);
    return rc;
}

static int split_stream(pm_store *s, const char *key, pm_store_sink sink, void *ctx,
                        pm_error *err)
{
    split_store *ss = (split_store *)s;
    char pk[1100];
    if (!part_key(key, pk, sizeof pk))
        return pm_store_stream(ss->inner, key, sink, ctx, err);
    pm_buf part;
    pm_buf_init(&part);
    const known_prefix *pre;
    size_t off;
    int rc = read_part(ss, key, &part, &pre, &off, err);
    if (rc == 0 && (sink(ctx, pre->data, pre->len) != 0 ||
                    sink(ctx, part.data + off, part.len - off) != 0))
        rc = pm_error_set(err, PM_ERR_IO, "store: writing '%s' out failed", key);
    pm_buf_free(&part);
    return rc;
}

/* No direct link to a pass: its bytes exist only once assembled. */
static char *split_url(pm_store *s, const char *key, int64_t now)
{
    split_store *ss = (split_store *)s;
    char pk[1100];
    return part_key(key, pk, sizeof pk) ? NULL : pm_store_url(ss->inner, key, now);
}

static void split_close(pm_store *s)
{
    split_store *ss = (split_store *)s;
    for (known_prefix *k = atomic_load(&ss->prefixes), *next; k; k = next) {
        next = k->next;
        free(k->data);
        free(k);
    }
    pthread_mutex_destroy(&ss->lock);
    pm_store_close(ss->inner);
    free(ss);
}

static const pm_store_ops split_ops = {
    .name = "split",
    .put = split_put,
    .sync = split_sync,
    .get = split_get,
    .url = split_url,
    .close = split_close,
    .stream = split_stream,
    .del = split_del,
};

int pm_store_split_open(pm_store *inner, pm_store **out, pm_error *err)
{
    split_store *ss = calloc(1, sizeof *ss);
    if (!ss) {
        pm_store_close(inner);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    ss->base.ops = &split_ops;
    ss->inner = inner;
    atomic_init(&ss->prefixes, NULL);
    pthread_mutex_init(&ss->lock, NULL);
    *out = &ss->base;
    return 0;
}
