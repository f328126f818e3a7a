/*
 * bundle.c - stage 5: the .pkpass zip in memory (see bundle.h).
 */
#include "bundle.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <zip.h>
#include <zlib.h>

#include "../pipeline/template.h"

#define DEFLATE_LEVEL 6 /* zlib's usual default; 9 buys nothing on small files */

/* One deflated entry as libzip reads it: bytes at base + off (see pack_*). */
typedef struct packed {
    const pm_buf *base;   /* where the compressed bytes live (stable during zip_close) */
    size_t off, comp_len; /* compressed bytes: base->data[off .. off + comp_len) */
    size_t size;          /* uncompressed size */
    uint32_t crc;         /* CRC-32 of the uncompressed bytes */
    zip_uint64_t pos;     /* read position while libzip copies */
    zip_error_t error;
} packed;

/* Static template files deflated once per worker (index = template file index). */
typedef struct tmpl_pack {
    const pm_template *tmpl;
    pm_buf data;
    packed *files;        /* files_len entries; unused for stored (PNG) files */
} tmpl_pack;

typedef struct bundle_state {
    EVP_MD *sha256; /* fetched once, shared read-only */
} bundle_state;

typedef struct bundle_scratch {
    const bundle_state *st;
    EVP_MD_CTX *md;       /* reused for every archive hash */
    z_stream z;           /* raw deflate, reset per entry: no per-pass zlib allocation */
    pm_buf data;          /* this pass's deflated pass.json, manifest.json, signature */
    packed pass[3];
    tmpl_pack *cache;     /* one per template seen by this worker */
    size_t cache_len;
} bundle_scratch;

/* ---- deflate ---------------------------------------------------------- */

/* Raw-deflate len bytes onto the end of out; describe them in p. */
static int pack(bundle_scratch *sc, const uint8_t *data, size_t len, pm_buf *out, packed *p)
{
    uLong bound = deflateBound(&sc->z, (uLong)len);
    if (deflateReset(&sc->z) != Z_OK || pm_buf_reserve(out, bound) != 0)
        return -1;
    sc->z.next_in = (Bytef *)(uintptr_t)data; /* zlib's API is not const; it only reads */
    sc->z.avail_in = (uInt)len;
    sc->z.next_out = out->data + out->len;
    sc->z.avail_out = (uInt)bound;
    if (deflate(&sc->z, Z_FINISH) != Z_STREAM_END)
        return -1;
    memset(p, 0, sizeof *p);
    p->base = out;
    p->off = out->len;
    p->comp_len = (size_t)sc->z.total_out;
    p->size = len;
    p->crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)len);
    out->len += p->comp_len;
    return 0;
}

/* The worker's deflated copies of tmpl's static files, made on first use. */
static const tmpl_pack *template_pack(bundle_scratch *sc, const pm_template *tmpl)
{
    for (size_t i = 0; i < sc->cache_len; i++)
        if (sc->cache[i].tmpl == tmpl)
            return &sc->cache[i];
    tmpl_pack *grown = realloc(sc->cache, (sc->cache_len + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    sc->cache = grown;
    tmpl_pack *tp = &sc->cache[sc->cache_len];
    tp->tmpl = tmpl;
    pm_buf_init(&tp->data);
    tp->files = calloc(tmpl->files_len ? tmpl->files_len : 1, sizeof *tp->files);
    bool ok = tp->files != NULL;
    for (size_t i = 0; ok && i < tmpl->files_len; i++)
        if (!tmpl->files[i].compressed)
            ok = pack(sc, tmpl->files[i].data, tmpl->files[i].len, &tp->data, &tp->files[i]) == 0;
    if (!ok) {
        free(tp->files);
        pm_buf_free(&tp->data);
        return NULL;
    }
    sc->cache_len++;
    return tp;
}

/* ---- a libzip source over already-deflated bytes ---------------------- */

static zip_int64_t packed_source(void *userdata, void *data, zip_uint64_t len,
                                 zip_source_cmd_t cmd)
{
    packed *p = userdata;
    switch (cmd) {
    case ZIP_SOURCE_OPEN:
        p->pos = 0;
        return 0;
    case ZIP_SOURCE_READ: {
        zip_uint64_t left = p->comp_len - p->pos, n = len < left ? len : left;
        memcpy(data, p->base->data + p->off + p->pos, (size_t)n);
        p->pos += n;
        return (zip_int64_t)n;
    }
    case ZIP_SOURCE_CLOSE:
    case ZIP_SOURCE_FREE: /* the bytes belong to the worker's scratch */
        return 0;
    case ZIP_SOURCE_STAT: {
        zip_stat_t *st = data;
        if (len < sizeof *st) {
            zip_error_set(&p->error, ZIP_ER_INVAL, 0);
            return -1;
        }
        zip_stat_init(st);
        st->valid = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD | ZIP_STAT_CRC |
                    ZIP_STAT_ENCRYPTION_METHOD;
        st->size = p->size;
        st->comp_size = p->comp_len;
        st->comp_method = ZIP_CM_DEFLATE; /* libzip copies it as is, with this CRC */
        st->crc = p->crc;
        st->encryption_method = ZIP_EM_NONE;
        return sizeof *st;
    }
    case ZIP_SOURCE_ERROR:
        return zip_error_to_data(&p->error, data, len);
    case ZIP_SOURCE_SUPPORTS:
        return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE,
                                              ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE,
                                              -1);
    default:
        zip_error_set(&p->error, ZIP_ER_OPNOTSUPP, 0);
        return -1;
    }
}

/* ---- the archive ------------------------------------------------------ */

/*
 * libzip converts an entry's time_t to MS-DOS date/time with localtime_r.
 * Hand it the instant whose *local* wall clock equals now's UTC wall clock,
 * so the stored fields are UTC on any host.  (In the hour a DST jump skips,
 * mktime shifts by that hour; the result is still a function of now and the
 * zone, never of the moment the pass is built.)
 */
static time_t utc_as_local(int64_t now)
{
    time_t t = (time_t)now;
    struct tm g;
    if (!gmtime_r(&t, &g))
        return t;
    g.tm_isdst = -1;
    time_t local = mktime(&g);
    return local == (time_t)-1 ? t : local;
}

static int zip_fail(pm_error *err, const char *what, zip_error_t *ze)
{
    int sys = zip_error_code_zip(ze) == ZIP_ER_MEMORY;
    return pm_error_set(err, sys ? PM_ERR_NOMEM : PM_ERR_IO, "bundle: %s: %s", what,
                        zip_error_strerror(ze));
}

/* Add one entry: deflated bytes described by p, or stored data when p is NULL. */
static int add_entry(zip_t *za, const char *name, packed *p, const void *data, size_t len,
                     time_t mtime, pm_error *err)
{
    /* Borrowed bytes: they outlive zip_close(), which is when libzip reads them. */
    zip_source_t *s = p ? zip_source_function(za, packed_source, p)
                        : zip_source_buffer(za, data, len, 0);
    if (!s)
        return zip_fail(err, name, zip_get_error(za));
    zip_int64_t idx = zip_file_add(za, name, s, ZIP_FL_ENC_GUESS);
    if (idx < 0) {
        zip_source_free(s);
        return zip_fail(err, name, zip_get_error(za));
    }
    if ((!p && zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0) != 0) ||
        zip_file_set_mtime(za, (zip_uint64_t)idx, mtime, 0) != 0)
        return zip_fail(err, name, zip_get_error(za));
    return 0;
}

static int add_entries(bundle_scratch *sc, zip_t *za, const pm_job *job, const tmpl_pack *tp,
                       time_t mtime, pm_error *err)
{
    static const char *const names[] = {"pass.json", "manifest.json", "signature"};
    for (size_t i = 0; i < 3; i++)
        if (add_entry(za, names[i], &sc->pass[i], NULL, 0, mtime, err) != 0)
            return -1;
    const pm_template *t = job->tmpl;
    for (size_t i = 0; i < t->files_len; i++) {
        const pm_template_file *f = &t->files[i];
        packed *p = f->compressed ? NULL : &tp->files[i];
        if (add_entry(za, f->name, p, f->data, f->len, mtime, err) != 0)
            return -1;
    }
    return 0;
}

/* Copy the finished archive out of the (kept) buffer source into out. */
static int read_back(zip_source_t *src, pm_buf *out, pm_error *err)
{
    if (zip_source_open(src) != 0)
        return zip_fail(err, "reading the archive", zip_source_error(src));
    int rc = -1;
    zip_int64_t size = -1;
    if (zip_source_seek(src, 0, SEEK_END) == 0)
        size = zip_source_tell(src);
    if (size < 0 || zip_source_seek(src, 0, SEEK_SET) != 0) {
        zip_fail(err, "sizing the archive", zip_source_error(src));
    } else if (pm_buf_reserve(out, (size_t)size) != 0) {
        pm_error_set(err, PM_ERR_NOMEM, "bundle: out of memory (%lld bytes)", (long long)size);
    } else if (zip_source_read(src, out->data, (zip_uint64_t)size) != size) {
        zip_fail(err, "reading the archive", zip_source_error(src));
    } else {
        out->len = (size_t)size;
        rc = 0;
    }
    zip_source_close(src);
    return rc;
}

static int write_zip(bundle_scratch *sc, pm_job *job, const tmpl_pack *tp)
{
    pm_error *err = &job->err;
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &ze);
    if (!src) {
        zip_fail(err, "creating the archive", &ze);
        zip_error_fini(&ze);
        return -1;
    }
    zip_t *za = zip_open_from_source(src, ZIP_TRUNCATE, &ze);
    if (!za) {
        zip_fail(err, "opening the archive", &ze);
        zip_error_fini(&ze);
        zip_source_free(src);
        return -1;
    }
    zip_error_fini(&ze);
    zip_source_keep(src); /* our reference: zip_close() drops the archive's */
    int rc = add_entries(sc, za, job, tp, utc_as_local(job->now), err);
    if (rc == 0 && zip_close(za) != 0)
        rc = zip_fail(err, "writing the archive", zip_get_error(za));
    if (rc != 0)
        zip_discard(za);
    pm_buf_reset(&job->pkpass);
    if (rc == 0)
        rc = read_back(src, &job->pkpass, err);
    zip_source_free(src);
    return rc;
}

/* ---- the stage -------------------------------------------------------- */

static int bundle_create(const pm_context *ctx, void **state, pm_error *err)
{
    (void)ctx;
    bundle_state *st = calloc(1, sizeof *st);
    if (!st)
        return pm_error_set(err, PM_ERR_NOMEM, "bundle: out of memory");
    st->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!st->sha256) {
        free(st);
        pm_error_set(err, PM_ERR_CRYPTO, "bundle: cannot fetch SHA-256");
        pm_error_add_openssl(err);
        return -1;
    }
    *state = st;
    return 0;
}

static void bundle_destroy(void *state)
{
    bundle_state *st = state;
    if (!st)
        return;
    EVP_MD_free(st->sha256);
    free(st);
}

static void bundle_worker_destroy(void *scratch)
{
    bundle_scratch *sc = scratch;
    if (!sc)
        return;
    for (size_t i = 0; i < sc->cache_len; i++) {
        pm_buf_free(&sc->cache[i].data);
        free(sc->cache[i].files);
    }
    free(sc->cache);
    deflateEnd(&sc->z);
    pm_buf_free(&sc->data);
    EVP_MD_CTX_free(sc->md);
    free(sc);
}

static int bundle_worker_create(void *state, void **scratch, pm_error *err)
{
    bundle_scratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return pm_error_set(err, PM_ERR_NOMEM, "bundle: out of memory");
    sc->st = state;
    pm_buf_init(&sc->data);
    /* Raw deflate (negative window bits): zip entries carry no zlib header. */
    if (deflateInit2(&sc->z, DEFLATE_LEVEL, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        free(sc);
        return pm_error_set(err, PM_ERR_NOMEM, "bundle: cannot set up zlib");
    }
    if (!(sc->md = EVP_MD_CTX_new())) {
        bundle_worker_destroy(sc);
        return pm_error_set(err, PM_ERR_NOMEM, "bundle: out of memory");
    }
    *scratch = sc;
    return 0;
}

static int bundle_process(void *state, void *scratch, pm_job *job)
{
    (void)state;
    bundle_scratch *sc = scratch;
    if (!sc)
        return pm_error_set(&job->err, PM_ERR_INTERNAL, "bundle: no worker scratch");
    if (!job->tmpl || job->pass_json.len == 0 || job->manifest_json.len == 0 ||
        job->signature.len == 0)
        return pm_error_set(&job->err, PM_ERR_INTERNAL, "bundle: missing template, pass.json, "
                            "manifest.json or signature");
    const tmpl_pack *tp = template_pack(sc, job->tmpl);
    pm_buf_reset(&sc->data);
    const pm_buf *parts[3] = {&job->pass_json, &job->manifest_json, &job->signature};
    bool ok = tp != NULL;
    for (size_t i = 0; ok && i < 3; i++)
        ok = pack(sc, parts[i]->data, parts[i]->len, &sc->data, &sc->pass[i]) == 0;
    if (!ok)
        return pm_error_set(&job->err, PM_ERR_NOMEM, "bundle: deflate failed (out of memory)");
    if (write_zip(sc, job, tp) != 0)
        return -1;
    unsigned len = 0;
    if (!EVP_DigestInit_ex(sc->md, sc->st->sha256, NULL) ||
        !EVP_DigestUpdate(sc->md, job->pkpass.data, job->pkpass.len) ||
        !EVP_DigestFinal_ex(sc->md, job->pkpass_sha256, &len) || len != 32) {
        pm_error_set(&job->err, PM_ERR_CRYPTO, "bundle: SHA-256 of the archive failed");
        pm_error_add_openssl(&job->err);
        return -1;
    }
    return 0;
}

const pm_stage pm_stage_bundle = {
    .name = "bundle",
    .create = bundle_create,
    .destroy = bundle_destroy,
    .worker_create = bundle_worker_create,
    .worker_destroy = bundle_worker_destroy,
    .process = bundle_process,
};
