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

/* zlib's usual default; libzip's own default is 9, slower for nothing on small files. */
#define DEFLATE_LEVEL 6

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

static int add_entry(zip_t *za, const char *name, const void *data, size_t len, bool store,
                     time_t mtime, pm_error *err)
{
    /* The data is borrowed: it outlives zip_close(), which is when libzip reads it. */
    zip_source_t *s = zip_source_buffer(za, data, len, 0);
    if (!s)
        return zip_fail(err, name, zip_get_error(za));
    zip_int64_t idx = zip_file_add(za, name, s, ZIP_FL_ENC_GUESS);
    if (idx < 0) {
        zip_source_free(s);
        return zip_fail(err, name, zip_get_error(za));
    }
    if (zip_set_file_compression(za, (zip_uint64_t)idx, store ? ZIP_CM_STORE : ZIP_CM_DEFLATE,
                                 store ? 0 : DEFLATE_LEVEL) != 0 ||
        zip_file_set_mtime(za, (zip_uint64_t)idx, mtime, 0) != 0)
        return zip_fail(err, name, zip_get_error(za));
    return 0;
}

static int add_entries(zip_t *za, const pm_template *tmpl, const pm_buf *pass_json,
                       const pm_buf *manifest_json, const pm_buf *signature, time_t mtime,
                       pm_error *err)
{
    if (add_entry(za, "pass.json", pass_json->data, pass_json->len, false, mtime, err) != 0 ||
        add_entry(za, "manifest.json", manifest_json->data, manifest_json->len, false, mtime,
                  err) != 0 ||
        add_entry(za, "signature", signature->data, signature->len, false, mtime, err) != 0)
        return -1;
    for (size_t i = 0; i < tmpl->files_len; i++) {
        const pm_template_file *f = &tmpl->files[i];
        if (add_entry(za, f->name, f->data, f->len, f->compressed != 0, mtime, err) != 0)
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

int pm_bundle_build(const pm_template *tmpl, const pm_buf *pass_json,
                    const pm_buf *manifest_json, const pm_buf *signature, int64_t now,
                    pm_buf *out, pm_error *err)
{
    if (!tmpl || pass_json->len == 0 || manifest_json->len == 0 || signature->len == 0)
        return pm_error_set(err, PM_ERR_INTERNAL, "bundle: missing template, pass.json, "
                            "manifest.json or signature");
    pm_buf_reset(out);
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
    int rc = add_entries(za, tmpl, pass_json, manifest_json, signature, utc_as_local(now), err);
    if (rc == 0 && zip_close(za) != 0)
        rc = zip_fail(err, "writing the archive", zip_get_error(za));
    if (rc != 0)
        zip_discard(za);
    if (rc == 0)
        rc = read_back(src, out, err);
    zip_source_free(src);
    return rc;
}

/* ---- the stage -------------------------------------------------------- */

typedef struct bundle_state {
    EVP_MD *sha256; /* fetched once, shared read-only */
} bundle_state;

typedef struct bundle_scratch {
    const bundle_state *st;
    EVP_MD_CTX *md; /* reused for every archive hash */
} bundle_scratch;

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

static int bundle_worker_create(void *state, void **scratch, pm_error *err)
{
    bundle_scratch *sc = calloc(1, sizeof *sc);
    if (!sc || !(sc->md = EVP_MD_CTX_new())) {
        free(sc);
        return pm_error_set(err, PM_ERR_NOMEM, "bundle: out of memory");
    }
    sc->st = state;
    *scratch = sc;
    return 0;
}

static void bundle_worker_destroy(void *scratch)
{
    bundle_scratch *sc = scratch;
    if (!sc)
        return;
    EVP_MD_CTX_free(sc->md);
    free(sc);
}

static int bundle_process(void *state, void *scratch, pm_job *job)
{
    (void)state;
    bundle_scratch *sc = scratch;
    if (!sc)
        return pm_error_set(&job->err, PM_ERR_INTERNAL, "bundle: no worker scratch");
    if (pm_bundle_build(job->tmpl, &job->pass_json, &job->manifest_json, &job->signature,
                        job->now, &job->pkpass, &job->err) != 0)
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
