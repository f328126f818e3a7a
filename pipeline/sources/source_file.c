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
 * corrupt length fields.  The header's writer schema is resolved against
 * the compiled schema (pm_schema_writer: fields added, removed, reordered,
 * promoted, renamed by alias); one that cannot be read as it is refused at
 * open.  Codecs null and deflate are supported.  Each datum is delimited
 * with the writer schema (structure only) and its bytes, unchanged, become
 * raw (PM_INPUT_AVRO, job->writer = the writer schema; origin.offset is the
 * 1-based record number), so a bad value in one record is that record's
 * reject at decode.
 *
 * A corrupt block does not end the run: the records it declared (the
 * count in its header; one when that count is unreadable or more than the
 * block could hold) come out as rejects "avro.block" set by the source
 * (job->err), and reading goes on after the next sync marker.  That covers
 * a block cut short by the end of the file, a sync marker that does not
 * match, deflate data that does not inflate, a datum whose structure is
 * broken (the block's remaining records), and bytes left after a block's
 * last record (one reject).  Only a bad header (magic, metadata, schema,
 * codec) is a PM_ERR_FORMAT source error: without it nothing can be read.
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
    atomic_int stopping;       /* set by stop(): a signal handler or the engine's threads */

    /* progress: bytes fread so far, the position of the last record handed
     * out (read by the progress thread), the file size (0 = unknown) */
    uint64_t read_total;
    atomic_uint_fast64_t position;
    uint64_t size;

    /* input buffer; grows only to take back a corrupt block's bytes */
    unsigned char *in;
    size_t in_pos, in_end, in_cap;
    bool in_eof;

    /* JSON Lines */
    int64_t line;

    /* Avro OCF */
    pm_schema_writer *writer;
    unsigned char sync[16];
    bool deflate;
    z_stream zs;
    bool zs_ready;
    pm_buf block, inflated;
    const unsigned char *blk;
    size_t blk_len, blk_pos;
    int64_t blk_left, blocks, records;

    /* a corrupt block: rejects still to hand out, and why */
    int64_t bad_left, bad_first, bad_count;
    char bad_why[512];
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
        size_t got = fread(s->in + s->in_end, 1, s->in_cap - s->in_end, s->f);
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

/* Put n bytes back in front of the input (to search them for a sync marker). */
static int in_unread(file_source *s, const unsigned char *p, size_t n, pm_error *err)
{
    if (n <= s->in_pos) {
        s->in_pos -= n;
        memcpy(s->in + s->in_pos, p, n);
        return 0;
    }
    size_t avail = in_avail(s), cap = avail + n < IN_CAP ? IN_CAP : avail + n;
    unsigned char *in = malloc(cap);
    if (!in)
        return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
    memcpy(in, p, n);
    memcpy(in + n, s->in + s->in_pos, avail);
    free(s->in);
    s->in = in;
    s->in_cap = cap;
    s->in_pos = 0;
    s->in_end = n + avail;
    return 0;
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
        if (atomic_load(&s->stopping))
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

/* The header's writer schema, resolved against the compiled schema. */
static int ocf_writer_schema(file_source *s, const pm_buf *text, pm_error *err)
{
    if (pm_schema_writer_create((const char *)text->data, text->len, NULL, &s->writer, err) != 0) {
        if (err->code == PM_ERR_FORMAT)
            pm_error_prefix(err, "%s: Avro container header", s->path);
        return -1;
    }
    return 0;
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
    if (ocf_writer_schema(s, &schema, err) != 0)
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

/* Inflate s->block into s->inflated: 0, 1 when the data does not inflate
 * (why says how), -1 on a system failure. */
static int ocf_inflate(file_source *s, char *why, size_t whylen, pm_error *err)
{
    if (inflateReset(&s->zs) != Z_OK)
        return pm_error_set(err, PM_ERR_INTERNAL, "%s: zlib reset failed", s->path);
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
        if (s->inflated.len > PM_OCF_MAX_INFLATED) {
            snprintf(why, whylen, "its deflate data inflates beyond 256 MiB");
            return 1;
        }
        if (zr == Z_OK)
            continue;
        if (zr == Z_MEM_ERROR)
            return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
        /* Z_BUF_ERROR with room to spare: the input ended mid-stream. */
        snprintf(why, whylen, "its deflate data does not inflate: %s",
                 zr == Z_BUF_ERROR ? "it ends early" : s->zs.msg ? s->zs.msg : "zlib error");
        return 1;
    }
}

/* Skip to just after the next sync marker: 1, or 0 when the input ends first. */
static int ocf_resync(file_source *s, pm_error *err)
{
    const size_t m = sizeof s->sync;
    for (;;) {
        if (in_want(s, m, err) != 0)
            return -1;
        const unsigned char *p = s->in + s->in_pos;
        size_t avail = in_avail(s);
        const unsigned char *hit = avail >= m ? memmem(p, avail, s->sync, m) : NULL;
        if (hit) {
            s->in_pos += (size_t)(hit - p) + m;
            return 1;
        }
        if (s->in_eof) {
            s->in_pos = s->in_end;
            return 0;
        }
        s->in_pos += avail - (m - 1); /* a marker may straddle the next read */
    }
}

/* How reading goes on after a corrupt block. */
typedef enum ocf_then { THEN_NEXT_BLOCK, THEN_RESYNC, THEN_END } ocf_then;

/*
 * Block bno is corrupt: its count records (when 1..cap, else one) become
 * rejects, handed out by ocf_next.  Returns 2, or -1 on a system failure.
 */
static int ocf_bad_block(file_source *s, long long bno, int64_t count, int64_t cap,
                         const char *what, ocf_then then, pm_error *err)
{
    const char *next = then == THEN_END ? "the file ends there"
                                        : "reading goes on with the next block";
    if (then == THEN_RESYNC) {
        int r = ocf_resync(s, err);
        if (r < 0)
            return -1;
        next = r ? "reading goes on after the next sync marker"
                 : "no sync marker follows, so the file ends there";
    }
    bool known = count > 0 && count <= cap;
    s->bad_count = s->bad_left = known ? count : 1;
    s->bad_first = s->records + 1;
    char range[64];
    if (s->bad_count == 1)
        snprintf(range, sizeof range, "record %lld", (long long)s->bad_first);
    else
        snprintf(range, sizeof range, "records %lld..%lld", (long long)s->bad_first,
                 (long long)(s->bad_first + s->bad_count - 1));
    snprintf(s->bad_why, sizeof s->bad_why, "Avro container block %lld (%s%s) is corrupt: %s; %s",
             bno, range, known ? "" : ", its record count unreadable", what, next);
    s->blk_pos = s->blk_len = 0;
    s->blk_left = 0;
    return 2;
}

/* How many records a block of size bytes could hold (size < 0: unknown). */
static int64_t ocf_block_cap(const file_source *s, int64_t size)
{
    size_t min = pm_schema_writer_min_size(s->writer);
    /* deflate expands at most 1032:1 */
    uint64_t bytes = size < 0 ? PM_OCF_MAX_INFLATED
                     : s->deflate ? (uint64_t)size * 1032 : (uint64_t)size;
    if (bytes > PM_OCF_MAX_INFLATED)
        bytes = PM_OCF_MAX_INFLATED;
    return (int64_t)(bytes / (min ? min : 1));
}

/*
 * Read the next block: 1 with a block, 0 at a clean end of file, 2 when it
 * is corrupt (its rejects are pending), -1 on a system failure.
 */
static int ocf_read_block(file_source *s, pm_error *err)
{
    char what[300];
    if (in_want(s, 1, err) != 0)
        return -1;
    if (in_avail(s) == 0)
        return 0;
    int64_t count = -1, size = -1;
    long long bno = (long long)++s->blocks;
    pm_error lerr;
    if (ocf_long(s, &count, "block record count", &lerr) != 0 ||
        ocf_long(s, &size, "block size", &lerr) != 0) {
        if (lerr.code != PM_ERR_FORMAT) {
            *err = lerr;
            return -1;
        }
        /* the varint reader says what was wrong, after the file name */
        const char *m = strstr(lerr.message, "container: ");
        return ocf_bad_block(s, bno, count, ocf_block_cap(s, -1), m ? m + 11 : lerr.message,
                             in_avail(s) ? THEN_RESYNC : THEN_END, err);
    }
    if (count < 0 || size < 0 || size > PM_OCF_MAX_BLOCK) {
        snprintf(what, sizeof what, "its header says %lld records in %lld bytes", (long long)count,
                 (long long)size);
        return ocf_bad_block(s, bno, count, ocf_block_cap(s, -1), what, THEN_RESYNC, err);
    }
    pm_buf_reset(&s->block);
    if (pm_buf_reserve(&s->block, (size_t)size) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
    size_t got;
    if (in_read(s, s->block.data, (size_t)size, &got, err) != 0)
        return -1;
    s->block.len = got;
    int64_t cap = ocf_block_cap(s, size);
    if (got < (size_t)size) {
        snprintf(what, sizeof what, "the file ends inside it (%zu of %lld bytes; truncated?)", got,
                 (long long)size);
        return ocf_bad_block(s, bno, count, cap, what, THEN_END, err);
    }
    unsigned char sync[16];
    if (in_read(s, sync, sizeof sync, &got, err) != 0)
        return -1;
    if (got < sizeof sync || memcmp(sync, s->sync, sizeof sync) != 0) {
        if (got < sizeof sync)
            return ocf_bad_block(s, bno, count, cap,
                                 "the file ends inside the sync marker after it (truncated?)",
                                 THEN_END, err);
        /* A size too large puts the real marker inside the block: go on
         * after it.  Otherwise take the marker itself as damaged and read
         * on from where it ends (a garbled next header resynchronises). */
        if (pm_buf_append(&s->block, sync, sizeof sync) != 0)
            return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
        const unsigned char *hit = memmem(s->block.data, s->block.len, s->sync, sizeof s->sync);
        if (hit) {
            size_t after = (size_t)(hit - s->block.data) + sizeof s->sync;
            if (in_unread(s, s->block.data + after, s->block.len - after, err) != 0)
                return -1;
        }
        return ocf_bad_block(s, bno, count, cap,
                             hit ? "its size is wrong: its sync marker comes earlier"
                                 : "the sync marker after it does not match the header's",
                             THEN_NEXT_BLOCK, err);
    }
    if (s->deflate) {
        int r = ocf_inflate(s, what, sizeof what, err);
        if (r < 0)
            return -1;
        if (r > 0)
            return ocf_bad_block(s, bno, count, cap, what, THEN_NEXT_BLOCK, err);
        s->blk = s->inflated.data;
        s->blk_len = s->inflated.len;
    } else {
        s->blk = s->block.data;
        s->blk_len = s->block.len;
    }
    s->blk_pos = 0;
    s->blk_left = count;
    return 1;
}

static void ocf_origin(file_source *s, pm_job *job)
{
    job->format = PM_INPUT_AVRO;
    job->writer = s->writer;
    snprintf(job->origin.source, sizeof job->origin.source, "%s", s->path);
    job->origin.partition = -1;
    job->origin.offset = s->records;
}

static int ocf_next(file_source *s, pm_job *job, pm_error *err)
{
    char what[1024];
    for (;;) {
        if (atomic_load(&s->stopping))
            return 0;
        if (s->bad_left > 0) {
            /* A record of a corrupt block: rejected here, by the source. */
            s->bad_left--;
            s->records++;
            pm_buf_reset(&job->raw);
            ocf_origin(s, job);
            pm_reject(&job->err, "avro.block", "", "%s", s->bad_why);
            return 1;
        }
        if (s->blk_left > 0) {
            size_t used;
            pm_error derr;
            pm_error_clear(&derr);
            if (pm_schema_writer_decode(s->writer, s->blk + s->blk_pos, s->blk_len - s->blk_pos,
                                        &used, NULL, &derr) != 0) {
                if (derr.code != PM_ERR_REJECT) {
                    *err = derr;
                    return -1;
                }
                /* Where this datum ends is unknown, so are the ones after it. */
                snprintf(what, sizeof what, "record %lld is not a datum of the writer schema "
                         "(%s%s%s)", (long long)s->records + 1, derr.field,
                         derr.field[0] ? ": " : "", derr.message);
                if (ocf_bad_block(s, (long long)s->blocks, s->blk_left, s->blk_left, what,
                                  THEN_NEXT_BLOCK, err) < 0)
                    return -1;
                continue;
            }
            pm_buf_reset(&job->raw);
            if (pm_buf_append(&job->raw, s->blk + s->blk_pos, used) != 0)
                return pm_error_set(err, PM_ERR_NOMEM, "%s: out of memory", s->path);
            s->blk_pos += used;
            s->blk_left--;
            s->records++;
            ocf_origin(s, job);
            return 1;
        }
        if (s->blocks > 0 && s->blk_pos != s->blk_len) {
            /* The block's records were read; what follows them is not one. */
            snprintf(what, sizeof what, "%zu bytes follow its last declared record",
                     s->blk_len - s->blk_pos);
            if (ocf_bad_block(s, (long long)s->blocks, 1, 1, what, THEN_NEXT_BLOCK, err) < 0)
                return -1;
            continue;
        }
        int r = ocf_read_block(s, err);
        if (r < 0 || r == 0)
            return r;
    }
}

/* ---- pm_source ops ---- */

static int file_next(pm_source *base, pm_job *job, pm_error *err)
{
    file_source *s = (file_source *)base;
    int rc = s->avro ? ocf_next(s, job, err) : jsonl_next(s, job, err);
    uint64_t pos = s->read_total - in_avail(s);
    if (rc == 0 && !atomic_load(&s->stopping)) {
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
    /* A lock-free atomic: safe from a signal handler and from another thread. */
    atomic_store(&((file_source *)base)->stopping, 1);
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
    pm_schema_writer_destroy(s->writer);
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
    atomic_init(&s->stopping, 0);
    s->in_cap = IN_CAP;
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
