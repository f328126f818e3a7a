/*
 * source_file.c - records from a JSON Lines file or an Avro Object
 * Container File (OCF), or from stdin ("-").
 *
 * Format "auto" looks at the first four bytes: "Obj\x01" is an OCF,
 * anything else JSON Lines.  Input is read through one buffer, so stdin
 * and pipes work (nothing seeks).
 *
 * JSON Lines: each line that is not blank (only spaces, tabs, CR) is one
 * PM_INPUT_JSON record; raw is the line without "\n" (and without a final
 * "\r"); origin.offset is the 1-based line number.  Lines of any length are
 * read; only the first PM_SOURCE_MAX_LINE bytes of a longer line are kept
 * in raw (decode rejects anything over 1 MiB anyway).
 *
 * Avro OCF: the container framing is parsed here rather than by avro-c's
 * file reader, which treats a truncated file as a normal end and trusts
 * corrupt length fields.  The header's writer schema must equal the
 * compiled schema (checked with avro-c at open); codecs null and deflate
 * are supported.  Every block's size, sync marker and record count are
 * checked, each datum is delimited with pm_schema_avro_decode() (structure
 * only) and its bytes, unchanged, become raw (PM_INPUT_AVRO; origin.offset
 * is the 1-based record number).  Any framing problem is a PM_ERR_FORMAT
 * source error naming the file, block and record.
 */
#include "sources/source.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <avro.h>
#include <zlib.h>

#include "record/schema.h"

#define PM_SOURCE_MAX_LINE ((size_t)16 << 20)   /* bytes kept of one JSONL line */
#define PM_OCF_MAX_BLOCK ((int64_t)64 << 20)    /* compressed block size */
#define PM_OCF_MAX_INFLATED ((size_t)256 << 20) /* decompressed block size */
#define PM_OCF_MAX_META ((int64_t)16 << 20)     /* one header metadata value */
#define PM_OCF_MAX_META_ENTRIES 4096
#define IN_CAP 65536

typedef struct file_source {
    pm_source base;
    FILE *f;
    bool owns_f;
    char path[256];
    bool avro;
    volatile sig_atomic_t stopping;

    /* progress: bytes fread so far, the position of the last record handed
     * out (read by the progress thread), the file size (0 = unknown) */
    uint64_t read_total;
    atomic_uint_fast64_t position;
    uint64_t size;

    /* input buffer */
    unsigned char *in;
    size_t in_pos, in_end;
    bool in_eof;

    /* JSON Lines */
    int64_t line;

    /* Avro OCF */
    unsigned char sync[16];
    bool deflate;
    z_stream zs;
    bool zs_ready;
    pm_buf block, inflated;
    const unsigned char *blk;
    size_t blk_len, blk_pos;
    int64_t blk_left, blocks, records;
} file_source;

/* ---- buffered input ---- */

/* Make at least n bytes available if the input has them. 0, or -1 on I/O error. */
static int in_want(file_source *s, size_t n, pm_error *err)
{
    while (s->in_end - s->in_pos < n && !s->in_eof) {
        if (s->in_pos > 0) {
            memmove(s->in, s->in + s->in_pos, s->in_end - s->in_pos);
            s->in_end -= s->in_pos;
            s->in_pos = 0;
        }
        size_t got = fread(s->in + s->in_end, 1, IN_CAP - s->in_end, s->f);
        s->read_total += got;
        if (got == 0) {
            if (ferror(s->f))
                return pm_error_set(err, PM_ERR_IO, "reading %s: %s", s->path, strerror(errno));
            s->in_eof = true;
        }
        s->in_end += got;
    }
    return 0;
}

static size_t in_avail(const file_source *s)
{
    return s->in_end - s->in_pos;
}

/* Read exactly n bytes into dst (dst may be NULL to skip); *got = bytes read. */
static int in_read(file_source *s, void *dst, size_t n, size_t *got, pm_error *err)
{
    *got = 0;
    while (*got < n) {
        if (in_want(s, 1, err) != 0)
            return -1;
        if (in_avail(s) == 0)
            return 0;
        size_t k = in_avail(s) < n - *got ? in_avail(s) : n - *got;
        if (dst)
            memcpy((unsigned char *)dst + *got, s->in + s->in_pos, k);
        s->in_pos += k;
        *got += k;
    }
    return 0;
}

/* ---- JSON Lines ---- */

static bool blank(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

static int jsonl_next(file_source *s, pm_job *job, pm_error *err)
{
    for (;;) {
        if (s->stopping)
            return 0;
        pm_buf_reset(&job->raw);
        bool any = false;
        for (;;) {
            if (in_want(s, 1, err) != 0)
                return -1;
            if (in_avail(s) == 0)
                break;
            any = true;
            const unsigned char *p = s->in + s->in_pos;
            const unsigned char *nl = memchr(p, '\n', in_avail(s));
            size_t seg = nl ? (size_t)(nl - p) : in_avail(s);
            size_t room = PM_SOURCE_MAX_LINE - job->raw.len;
            if (pm_buf_append(&job->raw, p, seg < room ? seg : room) != 0)
                return pm_error_set(err, PM_ERR_NOMEM, "reading %s: out of memory", s->path);
            s->in_pos += seg + (nl ? 1 : 0);
            if (nl)
                break;
        }
        if (!any)
            return 0;
        s->line++;
        if (job->raw.len && job->raw.data[job->raw.len - 1] == '\r')
            job->raw.len--;
        if (blank(job->raw.data, job->raw.len))
            continue;
        job->format = PM_INPUT_JSON;
        snprintf(job->origin.source, sizeof job->origin.source, "%s", s->path);
        job->origin.partition = -1;
        job->origin.offset = s->line;
        return 1;
    }
}

/* ---- Avro OCF ---- */

static int ocf_error(file_source *s, pm_error *err, const char *what)
{
    return pm_error_set(err, PM_ERR_FORMAT, "%s: corrupt Avro container: %s", s->path, what);
}

static int ocf_long(file_source *s, int64_t *out, const char *what, pm_error *err)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        unsigned char b;
        size_t got;
        if (in_read(s, &b, 1, &got, err) != 0)
            return -1;
        if (got == 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "file ends inside the %s (truncated?)", what);
            return ocf_error(s, err, msg);
        }
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
    }
    char msg[160];
    snprintf(msg, sizeof msg, "the %s is not a valid number", what);
    return ocf_error(s, err, msg);
}

/* Read an Avro "bytes" of at most max bytes into b. */
static int ocf_bytes(file_source *s, pm_buf *b, int64_t max, const char *what, pm_error *err)
{
    int64_t len;
    size_t got;
    if (ocf_long(s, &len, what, err) != 0)
        return -1;
    if (len < 0 || len > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s length %lld is out of range", what, (long long)len);
        return ocf_error(s, err, msg);
    }
    pm_buf_reset(b);
    if (pm_buf_reserve(b, (size_t)len) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
    if (in_read(s, b->data, (size_t)len, &got, err) != 0)
        return -1;
    if (got < (size_t)len) {
        char msg[160];
        snprintf(msg, sizeof msg, "file ends inside the %s (truncated?)", what);
        return ocf_error(s, err, msg);
    }
    b->len = (size_t)len;
    return 0;
}

/*
 * The Avro spec lets a schema define a name once.  avro-c 1.11.1 leaks the
 * schema it was building when a record, enum or fixed name is defined again
 * (found by tests/fuzz/fuzz_ocf), so a hostile header is refused here, with
 * jansson, before avro-c parses it.  Full names follow the spec: a dotted
 * name is full, else the type's "namespace", else the enclosing one.
 * Returns 0, or -1 with the first name defined twice in dup.
 */
static int names_unique(json_t *node, const char *ns, json_t *seen, char *dup, size_t duplen)
{
    if (json_is_array(node)) { /* a union */
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v)
            if (names_unique(v, ns, seen, dup, duplen) != 0)
                return -1;
        return 0;
    }
    if (!json_is_object(node))
        return 0; /* a primitive or a reference to a named type */
    json_t *type = json_object_get(node, "type");
    const char *t = json_string_value(type);
    if (!t)
        return names_unique(type, ns, seen, dup, duplen); /* {"type": {...}} */
    const char *name = json_string_value(json_object_get(node, "name"));
    bool named = !strcmp(t, "record") || !strcmp(t, "error") || !strcmp(t, "enum") ||
                 !strcmp(t, "fixed");
    char *full = NULL; /* on the heap: jansson allows 2048 levels of nesting */
    const char *inner = ns; /* the namespace of what this type encloses */
    if (named && name) {
        const char *own = json_string_value(json_object_get(node, "namespace"));
        int n = strchr(name, '.') || !(own ? *own : ns && *ns)
                    ? asprintf(&full, "%s", name)
                    : asprintf(&full, "%s.%s", own ? own : ns, name);
        if (n < 0)
            return 0; /* out of memory: leave the schema to avro-c */
        if (json_object_get(seen, full)) {
            snprintf(dup, duplen, "%s", full);
            free(full);
            return -1;
        }
        json_object_set_new(seen, full, json_true());
        char *dot = strrchr(full, '.');
        if (dot)
            *dot = '\0';
        inner = dot ? full : "";
    }
    int rc = 0;
    if (!strcmp(t, "record") || !strcmp(t, "error")) {
        size_t i;
        json_t *field;
        json_array_foreach(json_object_get(node, "fields"), i, field)
            if ((rc = names_unique(json_object_get(field, "type"), inner, seen, dup, duplen)) != 0)
                break;
        free(full);
        return rc;
    }
    free(full);
    if (!strcmp(t, "array")) {
        return names_unique(json_object_get(node, "items"), ns, seen, dup, duplen);
    } else if (!strcmp(t, "map")) {
        return names_unique(json_object_get(node, "values"), ns, seen, dup, duplen);
    }
    return 0;
}

static int ocf_check_schema(file_source *s, const pm_buf *text, pm_error *err)
{
    json_t *tree = json_loadb((const char *)text->data, text->len, 0, NULL);
    json_t *seen = json_object();
    char dup[1024] = "";
    int twice = tree && seen ? names_unique(tree, "", seen, dup, sizeof dup) : 0;
    json_decref(tree);
    json_decref(seen);
    if (twice != 0)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "%s: the Avro writer schema defines the name '%s' twice", s->path, dup);
    avro_schema_t ws;
    if (avro_schema_from_json_length((const char *)text->data, text->len, &ws) != 0)
        return pm_error_set(err, PM_ERR_FORMAT, "%s: the Avro writer schema does not parse: %s",
                            s->path, avro_strerror());
    int same = avro_schema_equal(ws, pm_schema_pass_request());
    const char *name = avro_schema_type_name(ws);
    int rc = same ? 0
                  : pm_error_set(err, PM_ERR_FORMAT,
                                 "%s: the Avro writer schema (%s) is not the pass request schema "
                                 "(schemas/pass_request.avsc); rewrite the file with that schema",
                                 s->path, name ? name : "unnamed");
    avro_schema_decref(ws);
    return rc;
}

static int ocf_open(file_source *s, pm_error *err)
{
    unsigned char magic[4];
    size_t got;
    if (in_read(s, magic, 4, &got, err) != 0)
        return -1;
    if (got < 4 || memcmp(magic, "Obj\x01", 4) != 0)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "%s: not an Avro Object Container File (no \"Obj\\x01\" magic)",
                            s->path);
    pm_buf key = PM_BUF_INIT, val = PM_BUF_INIT, schema = PM_BUF_INIT, codec = PM_BUF_INIT;
    int rc = -1, entries = 0;
    for (;;) {
        int64_t count, size;
        if (ocf_long(s, &count, "header block count", err) != 0)
            goto out;
        if (count == 0)
            break;
        if (count < 0) {
            if (count == INT64_MIN || ocf_long(s, &size, "header block size", err) != 0) {
                if (count == INT64_MIN)
                    ocf_error(s, err, "bad header block count");
                goto out;
            }
            count = -count;
        }
        for (int64_t i = 0; i < count; i++) {
            if (++entries > PM_OCF_MAX_META_ENTRIES) {
                ocf_error(s, err, "too many header entries");
                goto out;
            }
            if (ocf_bytes(s, &key, 4096, "header key", err) != 0 ||
                ocf_bytes(s, &val, PM_OCF_MAX_META, "header value", err) != 0)
                goto out;
            pm_buf *keep = NULL;
            if (key.len == 11 && memcmp(key.data, "avro.schema", 11) == 0)
                keep = &schema;
            else if (key.len == 10 && memcmp(key.data, "avro.codec", 10) == 0)
                keep = &codec;
            if (keep) {
                pm_buf_reset(keep);
                if (pm_buf_append(keep, val.data, val.len) != 0) {
                    pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
                    goto out;
                }
            }
        }
    }
    if (in_read(s, s->sync, sizeof s->sync, &got, err) != 0)
        goto out;
    if (got < sizeof s->sync) {
        ocf_error(s, err, "file ends inside the header sync marker (truncated?)");
        goto out;
    }
    if (!schema.len) {
        pm_error_set(err, PM_ERR_FORMAT, "%s: Avro container header has no avro.schema", s->path);
        goto out;
    }
    if (ocf_check_schema(s, &schema, err) != 0)
        goto out;
    if (codec.len == 7 && memcmp(codec.data, "deflate", 7) == 0) {
        s->deflate = true;
        memset(&s->zs, 0, sizeof s->zs);
        if (inflateInit2(&s->zs, -MAX_WBITS) != Z_OK) { /* raw deflate, RFC 1951 */
            pm_error_set(err, PM_ERR_NOMEM, "%s: cannot start zlib", s->path);
            goto out;
        }
        s->zs_ready = true;
    } else if (codec.len && !(codec.len == 4 && memcmp(codec.data, "null", 4) == 0)) {
        pm_error_set(err, PM_ERR_FORMAT,
                     "%s: Avro codec '%.*s' is not supported (supported: null, deflate)",
                     s->path, (int)(codec.len > 32 ? 32 : codec.len), (const char *)codec.data);
        goto out;
    }
    rc = 0;
out:
    pm_buf_free(&key);
    pm_buf_free(&val);
    pm_buf_free(&schema);
    pm_buf_free(&codec);
    return rc;
}

static int ocf_inflate(file_source *s, pm_error *err)
{
    char msg[200];
    if (inflateReset(&s->zs) != Z_OK)
        return ocf_error(s, err, "zlib reset failed");
    pm_buf_reset(&s->inflated);
    s->zs.next_in = s->block.data;
    s->zs.avail_in = (uInt)s->block.len;
    for (;;) {
        if (pm_buf_reserve(&s->inflated, 65536) != 0)
            return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
        size_t room = s->inflated.cap - s->inflated.len - 1;
        s->zs.next_out = s->inflated.data + s->inflated.len;
        s->zs.avail_out = (uInt)(room > UINT32_MAX ? UINT32_MAX : room);
        uInt before = s->zs.avail_out;
        int zr = inflate(&s->zs, Z_NO_FLUSH);
        s->inflated.len += before - s->zs.avail_out;
        if (zr == Z_STREAM_END)
            return 0;
        if (s->inflated.len > PM_OCF_MAX_INFLATED)
            return ocf_error(s, err, "a deflate block inflates beyond 256 MiB");
        if (zr == Z_OK)
            continue;
        /* Z_BUF_ERROR with room to spare: the input ended mid-stream. */
        snprintf(msg, sizeof msg, "block %lld does not inflate: %s", (long long)s->blocks + 1,
                 zr == Z_BUF_ERROR ? "deflate data ends early"
                 : s->zs.msg ? s->zs.msg : "zlib error");
        return ocf_error(s, err, msg);
    }
}

/* Read the next block; 1 with a block, 0 at a clean end of file. */
static int ocf_read_block(file_source *s, pm_error *err)
{
    char msg[200];
    if (in_want(s, 1, err) != 0)
        return -1;
    if (in_avail(s) == 0)
        return 0;
    int64_t count, size;
    long long bno = (long long)s->blocks + 1;
    if (ocf_long(s, &count, "block record count", err) != 0 ||
        ocf_long(s, &size, "block size", err) != 0)
        return -1;
    if (count < 0 || size < 0 || size > PM_OCF_MAX_BLOCK) {
        snprintf(msg, sizeof msg, "block %lld has record count %lld and size %lld", bno,
                 (long long)count, (long long)size);
        return ocf_error(s, err, msg);
    }
    pm_buf_reset(&s->block);
    if (pm_buf_reserve(&s->block, (size_t)size) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
    size_t got;
    if (in_read(s, s->block.data, (size_t)size, &got, err) != 0)
        return -1;
    s->block.len = got;
    if (got < (size_t)size) {
        snprintf(msg, sizeof msg, "file ends inside block %lld (%zu of %lld bytes; truncated?)",
                 bno, got, (long long)size);
        return ocf_error(s, err, msg);
    }
    unsigned char sync[16];
    if (in_read(s, sync, sizeof sync, &got, err) != 0)
        return -1;
    if (got < sizeof sync || memcmp(sync, s->sync, sizeof sync) != 0) {
        snprintf(msg, sizeof msg, "%s after block %lld", got < sizeof sync
                 ? "file ends inside the sync marker (truncated?)"
                 : "the sync marker does not match the header's", bno);
        return ocf_error(s, err, msg);
    }
    if (s->deflate) {
        if (ocf_inflate(s, err) != 0)
            return -1;
        s->blk = s->inflated.data;
        s->blk_len = s->inflated.len;
    } else {
        s->blk = s->block.data;
        s->blk_len = s->block.len;
    }
    s->blk_pos = 0;
    s->blk_left = count;
    s->blocks++;
    return 1;
}

static int ocf_next(file_source *s, pm_job *job, pm_error *err)
{
    char msg[1024];
    for (;;) {
        if (s->stopping)
            return 0;
        if (s->blk_left > 0) {
            size_t used;
            pm_error derr;
            pm_error_clear(&derr);
            if (pm_schema_avro_decode(s->blk + s->blk_pos, s->blk_len - s->blk_pos, &used, NULL,
                                      &derr) != 0) {
                if (derr.code != PM_ERR_REJECT) {
                    *err = derr;
                    return -1;
                }
                snprintf(msg, sizeof msg, "record %lld (block %lld) is not a datum of the schema: %s%s%s",
                         (long long)s->records + 1, (long long)s->blocks, derr.field,
                         derr.field[0] ? ": " : "", derr.message);
                return ocf_error(s, err, msg);
            }
            pm_buf_reset(&job->raw);
            if (pm_buf_append(&job->raw, s->blk + s->blk_pos, used) != 0)
                return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
            s->blk_pos += used;
            s->blk_left--;
            s->records++;
            job->format = PM_INPUT_AVRO;
            snprintf(job->origin.source, sizeof job->origin.source, "%s", s->path);
            job->origin.partition = -1;
            job->origin.offset = s->records;
            return 1;
        }
        if (s->blocks > 0 && s->blk_pos != s->blk_len) {
            snprintf(msg, sizeof msg, "block %lld has %zu bytes after its last record",
                     (long long)s->blocks, s->blk_len - s->blk_pos);
            return ocf_error(s, err, msg);
        }
        int r = ocf_read_block(s, err);
        if (r <= 0)
            return r;
    }
}

/* ---- pm_source ops ---- */

static int file_next(pm_source *base, pm_job *job, pm_error *err)
{
    file_source *s = (file_source *)base;
    int rc = s->avro ? ocf_next(s, job, err) : jsonl_next(s, job, err);
    uint64_t pos = s->read_total - in_avail(s);
    if (rc == 0 && !s->stopping) {
        pos = s->size > pos ? s->size : pos; /* at the end */
    } else if (s->avro && s->blk_len) {
        /* A whole block is read at once: count the part of it still to be
         * handed out as not read yet, so a big block does not jump ahead. */
        uint64_t ahead = (uint64_t)((double)s->block.len * (double)(s->blk_len - s->blk_pos) /
                                    (double)s->blk_len);
        pos = ahead < pos ? pos - ahead : 0;
    }
    atomic_store_explicit(&s->position, pos, memory_order_relaxed);
    return rc;
}

static void file_position(pm_source *base, uint64_t *done, uint64_t *total)
{
    file_source *s = (file_source *)base;
    *done = atomic_load_explicit(&s->position, memory_order_relaxed);
    *total = s->size;
}

/* Files have nothing to commit: a finished record needs no action. */
static void file_done(pm_source *base, const pm_origin *origin, void *source_ref, bool durable)
{
    (void)base;
    (void)origin;
    (void)source_ref;
    (void)durable;
}

/* A file never needs pausing: the engine simply stops calling next(). */
static void file_backpressure(pm_source *base, bool paused)
{
    (void)base;
    (void)paused;
}

static void file_stop(pm_source *base)
{
    ((file_source *)base)->stopping = 1; /* async-signal-safe */
}

static void file_close(pm_source *base)
{
    file_source *s = (file_source *)base;
    if (!s)
        return;
    if (s->f && s->owns_f)
        fclose(s->f);
    if (s->zs_ready)
        inflateEnd(&s->zs);
    pm_buf_free(&s->block);
    pm_buf_free(&s->inflated);
    free(s->in);
    free(s);
}

static const pm_source_ops file_ops = {
    .name = "file",
    .next = file_next,
    .done = file_done,
    .backpressure = file_backpressure,
    .position = file_position,
    .stop = file_stop,
    .close = file_close,
};

int pm_source_file_open(const char *path, const char *format, pm_source **out, pm_error *err)
{
    if (!format)
        format = "auto";
    if (strcmp(format, "auto") != 0 && strcmp(format, "jsonl") != 0 &&
        strcmp(format, "avro") != 0)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "input.format must be auto, jsonl or avro, not '%s'", format);
    if (!path || !*path)
        return pm_error_set(err, PM_ERR_CONFIG, "input.path is empty");
    if (pm_schema_init(err) != 0)
        return -1;
    file_source *s = calloc(1, sizeof *s);
    if (!s || !(s->in = malloc(IN_CAP))) {
        free(s);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    s->base.ops = &file_ops;
    snprintf(s->path, sizeof s->path, "%s", path);
    if (strcmp(path, "-") == 0) {
        s->f = stdin;
    } else {
        s->f = fopen(path, "rb");
        if (!s->f) {
            int e = errno;
            file_close(&s->base);
            return pm_error_set(err, PM_ERR_CONFIG, "input.path: cannot open %s: %s", path,
                                strerror(e));
        }
        s->owns_f = true;
    }
    /* A regular file's size gives progress a total (a pipe has none). */
    struct stat st;
    if (fstat(fileno(s->f), &st) == 0 && S_ISREG(st.st_mode))
        s->size = (uint64_t)st.st_size;
    if (strcmp(format, "auto") == 0) {
        if (in_want(s, 4, err) != 0) {
            file_close(&s->base);
            return -1;
        }
        s->avro = in_avail(s) >= 4 && memcmp(s->in + s->in_pos, "Obj\x01", 4) == 0;
    } else {
        s->avro = strcmp(format, "avro") == 0;
    }
    if (s->avro && ocf_open(s, err) != 0) {
        file_close(&s->base);
        return -1;
    }
    *out = &s->base;
    return 0;
}
