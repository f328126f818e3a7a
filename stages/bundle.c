/*
 * bundle.c - stage 5: the .pkpass zip in memory (see bundle.h).
 *
 * Per worker and template, once: a "prefix" archive holding only the static
 * template files, built with libzip; its byte length up to the central
 * directory, that directory's records, and the SHA-256 state after the
 * local entries.  Per pass, without libzip: the prefix's local entries
 * (one memcpy), this pass's entries, the prefix's central records, this
 * pass's, the end record.  The hash then only covers the appended bytes.
 */
#include "stages/bundle.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <zip.h>
#include <zlib.h>

#include "wallet/template.h"

/*
 * Per-pass text (pass.json, manifest.json) at level 1: on these 0.5-3 KB
 * files it is a few tens of bytes larger than level 6 and noticeably
 * cheaper.  Static template files are deflated once, so they get level 9.
 */
#define PASS_LEVEL 1
#define STATIC_LEVEL 9

/* MS-DOS date/time of every static entry: 1980-01-01 00:00:00 (see bundle.h). */
#define STATIC_DOS_DATE ((zip_uint16_t)((1 << 5) | 1))
#define STATIC_DOS_TIME ((zip_uint16_t)0)

/* Unix mode of every entry (high half of the external attributes): regular file, 0644. */
#define ENTRY_MODE ((zip_uint32_t)0100644)

/* One deflated entry as libzip reads it: bytes at base + off (see pack). */
typedef struct packed {
    const pm_buf *base;   /* where the compressed bytes live (stable during zip_close) */
    size_t off, comp_len; /* compressed bytes: base->data[off .. off + comp_len) */
    size_t size;          /* uncompressed size */
    uint32_t crc;         /* CRC-32 of the uncompressed bytes */
    zip_uint64_t pos;     /* read position while libzip copies */
    zip_error_t error;
} packed;

/*
 * libzip's view of an archive: it reads `in` and writes a new archive into
 * `out` (only the prefix is built this way: in is empty then).
 */
typedef struct archive_io {
    const uint8_t *in;
    size_t in_len, in_pos;
    pm_buf *out;
    size_t out_pos;
    zip_error_t error;
} archive_io;

/* One template's static files as an archive, built once per worker. */
typedef struct prefix {
    const pm_template *tmpl;
    const pm_template_strip *strip; /* the record's strip variant, NULL: the template's */
    pm_buf zip;       /* a complete archive of the static files only */
    size_t local_len; /* bytes before its central directory */
    size_t cd_len;    /* its central directory: zip.data[local_len .. local_len + cd_len) */
    size_t entries;   /* files in it */
    EVP_MD_CTX *md;   /* SHA-256 state after zip.data[0 .. local_len) */
} prefix;

/* One of this pass's own entries, as the central directory describes it. */
typedef struct own_entry {
    const char *name;
    size_t offset, comp_len, size;
    uint32_t crc;
    uint16_t method, date, time;
} own_entry;

#define N_OWN 3 /* pass.json, manifest.json, signature */

typedef struct bundle_state {
    EVP_MD *sha256; /* fetched once, shared read-only */
} bundle_state;

typedef struct bundle_scratch {
    const bundle_state *st;
    EVP_MD_CTX *md;       /* reused for every archive hash */
    z_stream z;           /* PASS_LEVEL, reset per entry: no per-pass zlib allocation */
    pm_buf data;          /* deflated bytes: this pass's texts, or a prefix's while built */
    own_entry own[N_OWN]; /* this pass's entries, for the central directory */
    archive_io io;
    prefix *cache;        /* one per template seen by this worker */
    size_t cache_len;
} bundle_scratch;

/* ---- deflate ---------------------------------------------------------- */

/* Raw deflate (negative window bits): zip entries carry no zlib header. */
static int deflate_init(z_stream *z, int level)
{
    memset(z, 0, sizeof *z);
    return deflateInit2(z, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK ? 0 : -1;
}

/*
 * Raw-deflate len bytes with z onto the end of out; describe them in p
 * (by offset: out may move when it grows).
 */
static int pack(z_stream *z, const uint8_t *data, size_t len, pm_buf *out, packed *p)
{
    uLong bound = deflateBound(z, (uLong)len);
    if (deflateReset(z) != Z_OK || pm_buf_reserve(out, bound) != 0)
        return -1;
    z->next_in = (Bytef *)(uintptr_t)data; /* zlib's API is not const; it only reads */
    z->avail_in = (uInt)len;
    z->next_out = out->data + out->len;
    z->avail_out = (uInt)bound;
    if (deflate(z, Z_FINISH) != Z_STREAM_END)
        return -1;
    memset(p, 0, sizeof *p);
    p->base = out;
    p->off = out->len;
    p->comp_len = (size_t)z->total_out;
    p->size = len;
    p->crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)len);
    out->len += p->comp_len;
    return 0;
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

/* ---- the archive itself as a libzip source ---------------------------- */

/*
 * Why not zip_source_buffer_create: libzip 1.7.3 (Debian 12) frees a
 * borrowed buffer after cloning it (fixed in 1.10, libzip issue #284), and
 * its result would still have to be copied out of 64 KiB fragments.  This
 * source writes straight into the job's buffer.
 */
static zip_int64_t archive_source(void *userdata, void *data, zip_uint64_t len,
                                  zip_source_cmd_t cmd)
{
    archive_io *io = userdata;
    switch (cmd) {
    case ZIP_SOURCE_OPEN:
        io->in_pos = 0;
        return 0;
    case ZIP_SOURCE_READ: {
        size_t left = io->in_len - io->in_pos, n = len < left ? (size_t)len : left;
        if (n)
            memcpy(data, io->in + io->in_pos, n);
        io->in_pos += n;
        return (zip_int64_t)n;
    }
    case ZIP_SOURCE_SEEK: {
        zip_int64_t to = zip_source_seek_compute_offset(io->in_pos, io->in_len, data, len,
                                                        &io->error);
        if (to < 0)
            return -1;
        io->in_pos = (size_t)to;
        return 0;
    }
    case ZIP_SOURCE_TELL:
        return (zip_int64_t)io->in_pos;
    case ZIP_SOURCE_STAT: {
        zip_stat_t *st = data;
        if (len < sizeof *st) {
            zip_error_set(&io->error, ZIP_ER_INVAL, 0);
            return -1;
        }
        zip_stat_init(st);
        st->valid = ZIP_STAT_SIZE;
        st->size = io->in_len;
        return sizeof *st;
    }
    case ZIP_SOURCE_BEGIN_WRITE:
    case ZIP_SOURCE_BEGIN_WRITE_CLONING: {
        size_t keep = cmd == ZIP_SOURCE_BEGIN_WRITE ? 0 : (size_t)len;
        if (keep > io->in_len) {
            zip_error_set(&io->error, ZIP_ER_INVAL, 0);
            return -1;
        }
        pm_buf_reset(io->out);
        if (pm_buf_append(io->out, io->in, keep) != 0) {
            zip_error_set(&io->error, ZIP_ER_MEMORY, 0);
            return -1;
        }
        io->out_pos = keep;
        return 0;
    }
    case ZIP_SOURCE_WRITE: {
        size_t end = io->out_pos + (size_t)len;
        if (end > io->out->len && pm_buf_reserve(io->out, end - io->out->len) != 0) {
            zip_error_set(&io->error, ZIP_ER_MEMORY, 0);
            return -1;
        }
        memcpy(io->out->data + io->out_pos, data, (size_t)len);
        io->out_pos = end;
        if (end > io->out->len)
            io->out->len = end;
        return (zip_int64_t)len;
    }
    case ZIP_SOURCE_SEEK_WRITE: {
        zip_int64_t to = zip_source_seek_compute_offset(io->out_pos, io->out->len, data, len,
                                                        &io->error);
        if (to < 0)
            return -1;
        io->out_pos = (size_t)to;
        return 0;
    }
    case ZIP_SOURCE_TELL_WRITE:
        return (zip_int64_t)io->out_pos;
    case ZIP_SOURCE_ROLLBACK_WRITE:
    case ZIP_SOURCE_REMOVE:
        pm_buf_reset(io->out);
        io->out_pos = 0;
        return 0;
    case ZIP_SOURCE_COMMIT_WRITE:
    case ZIP_SOURCE_CLOSE:
    case ZIP_SOURCE_FREE: /* io lives in the worker's scratch */
        return 0;
    case ZIP_SOURCE_ERROR:
        return zip_error_to_data(&io->error, data, len);
    case ZIP_SOURCE_SUPPORTS:
        return zip_source_make_command_bitmap(
            ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE, ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR,
            ZIP_SOURCE_FREE, ZIP_SOURCE_SEEK, ZIP_SOURCE_TELL, ZIP_SOURCE_BEGIN_WRITE,
            ZIP_SOURCE_BEGIN_WRITE_CLONING, ZIP_SOURCE_COMMIT_WRITE, ZIP_SOURCE_ROLLBACK_WRITE,
            ZIP_SOURCE_SEEK_WRITE, ZIP_SOURCE_TELL_WRITE, ZIP_SOURCE_WRITE, ZIP_SOURCE_REMOVE, -1);
    default:
        zip_error_set(&io->error, ZIP_ER_OPNOTSUPP, 0);
        return -1;
    }
}

/* ---- building archives ------------------------------------------------ */

static int zip_fail(pm_error *err, const char *what, zip_error_t *ze)
{
    int sys = zip_error_code_zip(ze) == ZIP_ER_MEMORY;
    return pm_error_set(err, sys ? PM_ERR_NOMEM : PM_ERR_IO, "bundle: %s: %s", what,
                        zip_error_strerror(ze));
}

/*
 * Add one static entry: deflated bytes described by p, or data stored when
 * p is NULL; the fixed date of every static entry.
 */
static int add_entry(zip_t *za, const char *name, packed *p, const void *data, size_t len,
                     pm_error *err)
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
    zip_uint64_t i = (zip_uint64_t)idx;
    /* libzip's default is a 0666 regular file: unzip would make it world-writable. */
    if (zip_file_set_external_attributes(za, i, 0, ZIP_OPSYS_UNIX, ENTRY_MODE << 16) != 0 ||
        (!p && zip_set_file_compression(za, i, ZIP_CM_STORE, 0) != 0) ||
        zip_file_set_dostime(za, i, STATIC_DOS_TIME, STATIC_DOS_DATE, 0) != 0)
        return zip_fail(err, name, zip_get_error(za));
    return 0;
}

/* Open the archive in io->in for adding entries, to be written to io->out. */
static zip_t *archive_open(archive_io *io, pm_error *err)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_function_create(archive_source, io, &ze);
    zip_t *za = src ? zip_open_from_source(src, io->in_len ? 0 : ZIP_TRUNCATE, &ze) : NULL;
    if (!za) {
        zip_fail(err, "opening the archive", &ze);
        zip_source_free(src); /* NULL-safe; on success the archive owns it */
    }
    zip_error_fini(&ze);
    return za;
}

/* Write the archive (on success) or drop it; za is gone either way. */
static int archive_close(zip_t *za, int rc, pm_error *err)
{
    if (rc == 0 && zip_close(za) != 0)
        rc = zip_fail(err, "writing the archive", zip_get_error(za));
    if (rc != 0)
        zip_discard(za);
    return rc;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * Where the central directory is and how many entries it has, from the end
 * record (the archive has no comment).
 */
static int read_layout(prefix *p)
{
    const pm_buf *zip = &p->zip;
    if (zip->len < 22)
        return -1;
    const uint8_t *eocd = zip->data + zip->len - 22;
    size_t cd_size = le32(eocd + 12), cd_off = le32(eocd + 16);
    if (le32(eocd) != 0x06054b50u || cd_off + cd_size + 22 != zip->len)
        return -1;
    p->local_len = cd_off;
    p->cd_len = cd_size;
    p->entries = (size_t)eocd[10] | (size_t)eocd[11] << 8;
    return 0;
}

static void prefix_free(prefix *p)
{
    pm_buf_free(&p->zip);
    EVP_MD_CTX_free(p->md);
}

/*
 * The static files, in sorted order, into p->zip: the template's, with the
 * strip variant's in place of its strip files.
 */
static int prefix_build(bundle_scratch *sc, const pm_template *t, prefix *p, pm_error *err)
{
    size_t cap = t->files_len + PM_STRIP_FILES;
    packed *files = calloc(cap, sizeof *files);
    const pm_template_file **list = calloc(cap, sizeof *list);
    z_stream z;
    if (!files || !list || deflate_init(&z, STATIC_LEVEL) != 0) {
        free(files);
        free(list);
        return pm_error_set(err, PM_ERR_NOMEM, "bundle: out of memory");
    }
    size_t n = pm_template_pass_files(t, p->strip, list);
    pm_buf_reset(&sc->data);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!list[i]->compressed)
            rc = pack(&z, list[i]->data, list[i]->len, &sc->data, &files[i]);
    deflateEnd(&z);
    if (rc != 0) {
        free(files);
        free(list);
        return pm_error_set(err, PM_ERR_NOMEM, "bundle: deflate failed (out of memory)");
    }
    sc->io = (archive_io){.out = &p->zip};
    zip_t *za = archive_open(&sc->io, err);
    rc = za ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const pm_template_file *f = list[i];
        rc = add_entry(za, f->name, f->compressed ? NULL : &files[i], f->data, f->len, err);
    }
    if (za)
        rc = archive_close(za, rc, err);
    free(files);
    free(list);
    /* No files: libzip writes nothing, and passes start from an empty archive. */
    if (rc == 0 && p->zip.len > 0 && read_layout(p) != 0)
        rc = pm_error_set(err, PM_ERR_INTERNAL, "bundle: template %s: unexpected archive layout",
                          t->id);
    return rc;
}

/* The worker's prefix for tmpl and strip variant, made on first use. */
static const prefix *template_prefix(bundle_scratch *sc, const pm_template *tmpl,
                                     const pm_template_strip *strip, pm_error *err)
{
    for (size_t i = 0; i < sc->cache_len; i++)
        if (sc->cache[i].tmpl == tmpl && sc->cache[i].strip == strip)
            return &sc->cache[i];
    prefix *grown = realloc(sc->cache, (sc->cache_len + 1) * sizeof *grown);
    if (!grown) {
        pm_error_set(err, PM_ERR_NOMEM, "bundle: out of memory");
        return NULL;
    }
    sc->cache = grown;
    prefix *p = &sc->cache[sc->cache_len];
    *p = (prefix){.tmpl = tmpl, .strip = strip};
    if (prefix_build(sc, tmpl, p, err) != 0) {
        prefix_free(p);
        return NULL;
    }
    if (!(p->md = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(p->md, sc->st->sha256, NULL) ||
        !EVP_DigestUpdate(p->md, p->zip.data, p->local_len)) {
        pm_error_set(err, PM_ERR_CRYPTO, "bundle: SHA-256 of the template's files failed");
        pm_error_add_openssl(err);
        prefix_free(p);
        return NULL;
    }
    sc->cache_len++;
    return p;
}

/* ---- this pass's entries, written directly ------------------------- */

static uint8_t *put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    p = put16(p, v & 0xffffu);
    return put16(p, v >> 16);
}

/*
 * MS-DOS date and time of now's UTC wall clock, clamped to 1980..2107
 * (see bundle.h): computed directly, so no time zone or DST gap matters.
 */
static void dos_time(int64_t now, uint16_t *date, uint16_t *time_)
{
    time_t t = (time_t)now;
    struct tm g;
    if (!gmtime_r(&t, &g) || g.tm_year < 80)
        g = (struct tm){.tm_year = 80, .tm_mday = 1};
    else if (g.tm_year > 207)
        g = (struct tm){.tm_year = 207, .tm_mon = 11, .tm_mday = 31, .tm_hour = 23,
                        .tm_min = 59, .tm_sec = 58};
    *date = (uint16_t)((g.tm_year - 80) << 9 | (g.tm_mon + 1) << 5 | g.tm_mday);
    *time_ = (uint16_t)(g.tm_hour << 11 | g.tm_min << 5 | g.tm_sec / 2);
}

#define LOCAL_HEADER 30u
#define CENTRAL_HEADER 46u
#define END_RECORD 22u
#define MADE_BY 0x033fu /* Unix, spec 6.3: what libzip writes for the static entries */

/*
 * Append one entry's local header, name and data (deflated when deflate,
 * else stored) to out, and describe it in e for the central directory.
 * The header is written last: its CRC and sizes are known only then.
 */
static int write_entry(bundle_scratch *sc, pm_buf *out, own_entry *e, const pm_buf *data,
                       bool deflate_it, uint16_t date, uint16_t time_)
{
    size_t name_len = strlen(e->name);
    uLong bound = deflate_it ? deflateBound(&sc->z, (uLong)data->len) : (uLong)data->len;
    if (pm_buf_reserve(out, LOCAL_HEADER + name_len + bound) != 0)
        return -1;
    e->offset = out->len;
    e->crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data->data, (uInt)data->len);
    e->size = data->len;
    e->method = deflate_it ? ZIP_CM_DEFLATE : ZIP_CM_STORE;
    e->date = date;
    e->time = time_;
    uint8_t *body = out->data + out->len + LOCAL_HEADER + name_len;
    if (deflate_it) {
        if (deflateReset(&sc->z) != Z_OK)
            return -1;
        sc->z.next_in = (Bytef *)(uintptr_t)data->data; /* zlib's API is not const; it only reads */
        sc->z.avail_in = (uInt)data->len;
        sc->z.next_out = body;
        sc->z.avail_out = (uInt)bound;
        if (deflate(&sc->z, Z_FINISH) != Z_STREAM_END)
            return -1;
        e->comp_len = (size_t)sc->z.total_out;
    } else {
        memcpy(body, data->data, data->len);
        e->comp_len = data->len;
    }
    uint8_t *h = out->data + out->len;
    h = put32(h, 0x04034b50u);
    h = put16(h, deflate_it ? 20 : 10); /* version needed: 2.0 for deflate */
    h = put16(h, 0);                    /* flags: ASCII name, sizes in the header */
    h = put16(h, e->method);
    h = put16(h, time_);
    h = put16(h, date);
    h = put32(h, e->crc);
    h = put32(h, (uint32_t)e->comp_len);
    h = put32(h, (uint32_t)e->size);
    h = put16(h, (uint32_t)name_len);
    h = put16(h, 0); /* no extra field */
    memcpy(h, e->name, name_len);
    out->len += LOCAL_HEADER + name_len + e->comp_len;
    return 0;
}

static void central_entry(uint8_t *h, const own_entry *e)
{
    size_t name_len = strlen(e->name);
    h = put32(h, 0x02014b50u);
    h = put16(h, MADE_BY);
    h = put16(h, e->method == ZIP_CM_DEFLATE ? 20 : 10);
    h = put16(h, 0);
    h = put16(h, e->method);
    h = put16(h, e->time);
    h = put16(h, e->date);
    h = put32(h, e->crc);
    h = put32(h, (uint32_t)e->comp_len);
    h = put32(h, (uint32_t)e->size);
    h = put16(h, (uint32_t)name_len);
    h = put16(h, 0);                  /* extra */
    h = put16(h, 0);                  /* comment */
    h = put16(h, 0);                  /* disk */
    h = put16(h, 0);                  /* internal attributes */
    h = put32(h, ENTRY_MODE << 16);   /* Unix mode in the high half */
    h = put32(h, (uint32_t)e->offset);
    memcpy(h, e->name, name_len);
}

/*
 * Prefix's local entries, this pass's entries, then the central directory:
 * the prefix's own records (unchanged: its entries did not move) followed
 * by this pass's, and the end record.  No libzip here: re-opening the
 * prefix and closing the archive per pass cost more than the rest of the
 * stage (bench_bundle).
 */
static int write_zip(bundle_scratch *sc, pm_job *job, const prefix *p)
{
    pm_buf *out = &job->pkpass;
    uint16_t date, time_;
    dos_time(job->now, &date, &time_);
    const pm_buf *data[N_OWN] = {&job->pass_json, &job->manifest_json, &job->signature};
    /* DER signature stored: deflate would save ~25% of it for about half this stage's time. */
    const bool deflated[N_OWN] = {true, true, false};
    static const char *const names[N_OWN] = {"pass.json", "manifest.json", "signature"};
    pm_buf_reset(out);
    if (pm_buf_append(out, p->zip.data, p->local_len) != 0)
        goto nomem;
    for (size_t i = 0; i < N_OWN; i++) {
        sc->own[i].name = names[i];
        if (write_entry(sc, out, &sc->own[i], data[i], deflated[i], date, time_) != 0)
            goto nomem;
    }
    size_t cd_off = out->len, cd_len = p->cd_len;
    for (size_t i = 0; i < N_OWN; i++)
        cd_len += CENTRAL_HEADER + strlen(sc->own[i].name);
    if (cd_off + cd_len > UINT32_MAX - END_RECORD)
        return pm_error_set(&job->err, PM_ERR_IO, "bundle: archive over 4 GiB (no ZIP64)");
    if (pm_buf_reserve(out, cd_len + END_RECORD) != 0)
        goto nomem;
    uint8_t *h = out->data + out->len;
    if (p->cd_len) /* a template without static files has no prefix bytes at all */
        memcpy(h, p->zip.data + p->local_len, p->cd_len);
    h += p->cd_len;
    for (size_t i = 0; i < N_OWN; i++) {
        central_entry(h, &sc->own[i]);
        h += CENTRAL_HEADER + strlen(sc->own[i].name);
    }
    uint32_t n = (uint32_t)(p->entries + N_OWN);
    h = put32(h, 0x06054b50u);
    h = put16(h, 0);
    h = put16(h, 0);
    h = put16(h, n);
    h = put16(h, n);
    h = put32(h, (uint32_t)cd_len);
    h = put32(h, (uint32_t)cd_off);
    put16(h, 0); /* no comment */
    out->len += cd_len + END_RECORD;
    return 0;
nomem:
    return pm_error_set(&job->err, PM_ERR_NOMEM, "bundle: out of memory");
}

/* SHA-256 of job->pkpass: from the prefix's hash state over its local entries. */
static int hash_archive(bundle_scratch *sc, pm_job *job, const prefix *p)
{
    const pm_buf *z = &job->pkpass;
    unsigned len = 0;
    if (!EVP_MD_CTX_copy_ex(sc->md, p->md) ||
        !EVP_DigestUpdate(sc->md, z->data + p->local_len, z->len - p->local_len) ||
        !EVP_DigestFinal_ex(sc->md, job->pkpass_sha256, &len) || len != 32) {
        pm_error_set(&job->err, PM_ERR_CRYPTO, "bundle: SHA-256 of the archive failed");
        pm_error_add_openssl(&job->err);
        return -1;
    }
    return 0;
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
    for (size_t i = 0; i < sc->cache_len; i++)
        prefix_free(&sc->cache[i]);
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
    if (deflate_init(&sc->z, PASS_LEVEL) != 0) {
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
    /* validate refused unknown names: NULL here means the template's own strip. */
    const pm_template_strip *strip = pm_template_find_strip(
        job->tmpl, json_string_value(json_object_get(job->record, "strip_image")));
    const prefix *p = template_prefix(sc, job->tmpl, strip, &job->err);
    if (!p)
        return -1;
    if (write_zip(sc, job, p) != 0)
        return -1;
    return hash_archive(sc, job, p);
}

const pm_stage pm_stage_bundle = {
    .name = "bundle",
    .create = bundle_create,
    .destroy = bundle_destroy,
    .worker_create = bundle_worker_create,
    .worker_destroy = bundle_worker_destroy,
    .process = bundle_process,
};
