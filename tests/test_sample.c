/*
 * test_sample.c - the sample generator, read back through the file source,
 * the decode stage and the validate stage; and the file source's handling
 * of JSON Lines and Avro container edge cases.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <avro.h>

#include "core/config.h"
#include "engine/context.h"
#include "stages/decode.h"
#include "record/sample.h"
#include "record/schema.h"
#include "sources/source.h"
#include "wallet/template.h"
#include "test_util.h"

static char *tmp;

static void setup(void)
{
    pm_error err;
    cr_assert_eq(pm_schema_init(&err), 0, "%s", err.message);
    tmp = pmt_tmpdir("sample");
    cr_assert_not_null(tmp);
}

static void teardown(void)
{
    pmt_rmrf(tmp);
    free(tmp);
}

TestSuite(sample, .init = setup, .fini = teardown);
TestSuite(source_file, .init = setup, .fini = teardown);

static char *in_tmp(const char *name)
{
    char *p = NULL;
    cr_assert_geq(asprintf(&p, "%s/%s", tmp, name), 0);
    return p;
}

/* Sample output in memory. */
static char *sample_mem(uint64_t count, uint64_t seed, const char *format, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    cr_assert_not_null(f);
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_sample_write(f, count, seed, format, &err), 0, "%s", err.message);
    fclose(f);
    return buf;
}

static char *sample_file(const char *name, uint64_t count, uint64_t seed, const char *format)
{
    char *path = in_tmp(name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    pm_error err;
    cr_assert_eq(pm_sample_write(f, count, seed, format, &err), 0, "%s", err.message);
    cr_assert_eq(fclose(f), 0);
    return path;
}

static bool serial_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'A' && s[i] <= 'Z') && !(s[i] >= 'a' && s[i] <= 'z') &&
            !(s[i] >= '0' && s[i] <= '9') && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

/* Everything needed to decode and validate records. */
typedef struct stages {
    pm_config *cfg;
    pm_context ctx;
    void *decode, *validate;
} stages;

static void stages_open(stages *st)
{
    pm_error err;
    pm_error_clear(&err);
    memset(st, 0, sizeof *st);
    st->cfg = pm_config_create();
    st->ctx.config = st->cfg;
    st->ctx.fixed_now = -1;
    cr_assert_eq(pm_template_set_load(pmt_src("config/templates"), &st->ctx.templates, &err), 0,
                 "%s", err.message);
    cr_assert_eq(pm_stage_decode.create(&st->ctx, &st->decode, &err), 0, "%s", err.message);
    cr_assert_eq(pm_stage_validate.create(&st->ctx, &st->validate, &err), 0, "%s", err.message);
}

static void stages_close(stages *st)
{
    pm_stage_validate.destroy(st->validate);
    pm_stage_decode.destroy(st->decode);
    pm_template_set_destroy(st->ctx.templates);
    pm_config_destroy(st->cfg);
}

/*
 * Read every record of path through the file source, decode and validate
 * it; returns the normalized records as a JSON array.  Any reject fails.
 */
static json_t *read_back(stages *st, const char *path, const char *format,
                         pm_input_format want_fmt)
{
    pm_source *src;
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_source_file_open(path, format, &src, &err), 0, "%s", err.message);
    json_t *out = json_array(), *serials = json_object();
    pm_job job;
    pm_job_init(&job);
    int r;
    int64_t n = 0;
    while ((r = src->ops->next(src, &job, &err)) == 1) {
        n++;
        cr_assert_eq(job.format, want_fmt);
        cr_assert_str_eq(job.origin.source, path);
        cr_assert_eq(job.origin.partition, -1);
        cr_assert_eq(job.origin.offset, n);
        job.now = 1795000000; /* 2026-11-18, before the tour */
        cr_assert_eq(pm_stage_decode.process(st->decode, NULL, &job), 0, "record %lld: %s %s: %s",
                     (long long)n, job.err.reason, job.err.field, job.err.message);
        cr_assert_eq(pm_stage_validate.process(st->validate, NULL, &job), 0,
                     "record %lld (%s): %s %s: %s", (long long)n, job.serial, job.err.reason,
                     job.err.field, job.err.message);
        cr_assert_str_eq(job.status, "active");
        cr_assert(serial_ok(job.serial), "%s", job.serial);
        cr_assert_null(json_object_get(serials, job.serial), "duplicate serial %s", job.serial);
        json_object_set_new(serials, job.serial, json_true());
        json_array_append(out, job.record);
        src->ops->done(src, &job.origin, job.source_ref, true);
        pm_job_reset(&job);
    }
    cr_assert_eq(r, 0, "source error: %s", err.message);
    pm_job_free(&job);
    src->ops->close(src);
    json_decref(serials);
    return out;
}

Test(sample, deterministic_for_a_seed)
{
    size_t a_len, b_len, c_len;
    char *a = sample_mem(250, 42, "jsonl", &a_len);
    char *b = sample_mem(250, 42, "jsonl", &b_len);
    char *c = sample_mem(250, 43, "jsonl", &c_len);
    cr_assert_eq(a_len, b_len);
    cr_assert_eq(memcmp(a, b, a_len), 0);
    cr_assert(a_len != c_len || memcmp(a, c, a_len) != 0);
    /* a shorter run is a prefix of a longer one */
    size_t p_len;
    char *p = sample_mem(100, 42, "jsonl", &p_len);
    cr_assert_lt(p_len, a_len);
    cr_assert_eq(memcmp(a, p, p_len), 0);
    free(a);
    free(b);
    free(c);
    free(p);
    a = sample_mem(250, 42, "avro", &a_len);
    b = sample_mem(250, 42, "avro", &b_len);
    c = sample_mem(250, 43, "avro", &c_len);
    cr_assert_eq(a_len, b_len);
    cr_assert_eq(memcmp(a, b, a_len), 0, "Avro output differs between runs");
    cr_assert(a_len != c_len || memcmp(a, c, a_len) != 0);
    cr_assert_eq(memcmp(a, "Obj\x01", 4), 0);
    free(a);
    free(b);
    free(c);
}

Test(sample, jsonl_one_compact_object_per_line)
{
    size_t len;
    char *text = sample_mem(120, 7, "jsonl", &len);
    size_t lines = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "last line has no newline");
        *nl = '\0';
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        cr_assert_not_null(j, "line %zu: %s", lines + 1, e.text);
        char *again = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
        cr_assert_str_eq(again, line, "not compact");
        cr_assert_str_eq(json_string_value(json_object_get(j, "template_id")), "stadium");
        cr_assert_str_eq(json_string_value(json_object_get(j, "action")), "ISSUE");
        free(again);
        json_decref(j);
        lines++;
        line = nl + 1;
    }
    cr_assert_eq(lines, 120);
    free(text);
}

Test(sample, jsonl_and_avro_read_back_valid_and_identical)
{
    enum { N = 1500 };
    stages st;
    stages_open(&st);
    char *jl = sample_file("s.jsonl", N, 2027, "jsonl");
    char *av = sample_file("s.avro", N, 2027, "avro");
    json_t *from_jsonl = read_back(&st, jl, "auto", PM_INPUT_JSON);
    json_t *from_avro = read_back(&st, av, "auto", PM_INPUT_AVRO);
    json_t *forced = read_back(&st, av, "avro", PM_INPUT_AVRO);
    cr_assert_eq(json_array_size(from_jsonl), N);
    cr_assert_eq(json_array_size(from_avro), N);
    cr_assert(json_equal(from_jsonl, from_avro), "JSONL and Avro records differ");
    cr_assert(json_equal(from_avro, forced));
    /* realism: serial shape, several orders, ticket types, explicit barcodes, beacons */
    json_t *first = json_array_get(from_jsonl, 0);
    const char *serial = pm_record_str(first, "serial_number");
    cr_assert_eq(strncmp(serial, "STA-2027-000001-", 16), 0, "%s", serial);
    cr_assert_eq(strlen(serial), 20);
    int types[5] = {0}, explicit_codes = 0, beacons = 0;
    const char *names[] = {"Adult", "Child", "Concession", "VIP", "Hospitality"};
    for (size_t i = 0; i < N; i++) {
        json_t *r = json_array_get(from_jsonl, i);
        const char *t = pm_record_str(r, "attendee.ticket_type");
        for (int k = 0; k < 5; k++)
            types[k] += strcmp(t, names[k]) == 0;
        explicit_codes += strcmp(pm_record_str(r, "barcode.message"), "autogenerate") != 0;
        beacons += json_array_size(json_object_get(r, "beacons")) > 0;
        cr_assert_str_eq(pm_record_str(r, "event.time_zone"), "Europe/London");
        cr_assert_str_eq(pm_record_str(r, "attendee.face_value.currency"), "GBP");
        cr_assert_str_eq(pm_record_str(r, "barcode.format"), "QRCODE");
        cr_assert_not_null(pm_record_str(r, "metadata.order_id"));
        cr_assert_eq(json_array_size(json_object_get(r, "locations")), 1);
    }
    for (int k = 0; k < 5; k++)
        cr_assert_gt(types[k], 0, "no %s tickets", names[k]);
    cr_assert(explicit_codes > N / 20 && explicit_codes < N / 5, "%d", explicit_codes);
    cr_assert_gt(beacons, 0);
    /* no seat sold twice */
    json_t *seats = json_object();
    for (size_t i = 0; i < N; i++) {
        json_t *r = json_array_get(from_jsonl, i);
        char key[128];
        snprintf(key, sizeof key, "%s/%s/%s/%s", pm_record_str(r, "event.event_id"),
                 pm_record_str(r, "attendee.section"), pm_record_str(r, "attendee.row"),
                 pm_record_str(r, "attendee.seat"));
        cr_assert_null(json_object_get(seats, key), "seat %s sold twice", key);
        json_object_set_new(seats, key, json_true());
    }
    json_decref(seats);
    json_decref(from_jsonl);
    json_decref(from_avro);
    json_decref(forced);
    free(jl);
    free(av);
    stages_close(&st);
}

Test(sample, avro_container_readable_by_avro_c)
{
    char *av = sample_file("c.avro", 400, 5, "avro");
    char *jl = sample_file("c.jsonl", 400, 5, "jsonl");
    avro_file_reader_t r;
    cr_assert_eq(avro_file_reader(av, &r), 0, "%s", avro_strerror());
    avro_value_iface_t *iface = avro_generic_class_from_schema(pm_schema_pass_request());
    avro_value_t v;
    cr_assert_eq(avro_generic_value_new(iface, &v), 0);
    FILE *lines = fopen(jl, "r");
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (avro_file_reader_read_value(r, &v) == 0) {
        json_t *got, *want, *norm;
        pm_error err;
        cr_assert_eq(pm_schema_avro_to_json(&v, &got, &err), 0, "%s", err.message);
        cr_assert_gt(getline(&line, &cap, lines), 0);
        want = json_loads(line, 0, NULL);
        cr_assert_eq(pm_schema_normalize(want, &norm, &err), 0);
        cr_assert(json_equal(got, norm), "record %d", n + 1);
        json_decref(got);
        json_decref(want);
        json_decref(norm);
        n++;
    }
    cr_assert_eq(n, 400);
    free(line);
    fclose(lines);
    avro_file_reader_close(r);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    free(av);
    free(jl);
}

Test(sample, count_zero_and_bad_format)
{
    size_t len;
    char *j = sample_mem(0, 1, "jsonl", &len);
    cr_assert_eq(len, 0);
    free(j);
    stages st;
    stages_open(&st);
    char *av = sample_file("empty.avro", 0, 1, "avro");
    json_t *recs = read_back(&st, av, "auto", PM_INPUT_AVRO);
    cr_assert_eq(json_array_size(recs), 0);
    json_decref(recs);
    free(av);
    stages_close(&st);
    pm_error err;
    cr_assert_eq(pm_sample_write(stdout, 1, 1, "xml", &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
}

/* ---- file source edge cases ---- */

static pm_source *open_ok(const char *path, const char *format)
{
    pm_source *src;
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_source_file_open(path, format, &src, &err), 0, "%s", err.message);
    return src;
}

Test(source_file, jsonl_lines_blank_crlf_and_last_line)
{
    char *path = in_tmp("lines.jsonl");
    const char *text = "\n{\"a\":1}\r\n   \t\n{\"b\":2}\n\n{\"c\":3}";
    cr_assert_eq(pmt_write_file(path, text, strlen(text)), 0);
    pm_source *src = open_ok(path, "auto");
    pm_job job;
    pm_job_init(&job);
    pm_error err;
    const char *want[] = {"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"};
    int64_t lines[] = {2, 4, 6};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(src->ops->next(src, &job, &err), 1, "%s", err.message);
        cr_assert_eq(job.format, PM_INPUT_JSON);
        cr_assert_eq(job.raw.len, strlen(want[i]));
        cr_assert_eq(memcmp(job.raw.data, want[i], job.raw.len), 0);
        cr_assert_eq(job.origin.offset, lines[i]);
        pm_job_reset(&job);
    }
    cr_assert_eq(src->ops->next(src, &job, &err), 0);
    cr_assert_eq(src->ops->next(src, &job, &err), 0);
    pm_job_free(&job);
    src->ops->close(src);
    free(path);
}

Test(source_file, five_mib_line_passes_through_and_is_rejected_by_decode)
{
    char *path = in_tmp("big.jsonl");
    size_t big = (size_t)5 << 20;
    char *text = malloc(big + 64);
    text[0] = '"';
    memset(text + 1, 'x', big - 2);
    text[big - 1] = '"';
    strcpy(text + big, "\n{\"after\":true}\n");
    cr_assert_eq(pmt_write_file(path, text, strlen(text)), 0);
    pm_source *src = open_ok(path, "jsonl");
    stages st;
    stages_open(&st);
    pm_job job;
    pm_job_init(&job);
    pm_error err;
    cr_assert_eq(src->ops->next(src, &job, &err), 1);
    cr_assert_eq(job.raw.len, big);
    cr_assert_eq(memcmp(job.raw.data, text, big), 0);
    cr_assert_eq(pm_stage_decode.process(st.decode, NULL, &job), -1);
    cr_assert_str_eq(job.err.reason, "record.too_large");
    pm_job_reset(&job);
    cr_assert_eq(src->ops->next(src, &job, &err), 1);
    cr_assert_eq(job.origin.offset, 2);
    cr_assert_eq(job.raw.len, strlen("{\"after\":true}"));
    pm_job_reset(&job);
    cr_assert_eq(src->ops->next(src, &job, &err), 0);
    pm_job_free(&job);
    src->ops->close(src);
    stages_close(&st);
    free(text);
    free(path);
}

/* Read to the end; returns the number of records and the final status. */
static int drain(pm_source *src, int *records, pm_error *err)
{
    pm_job job;
    pm_job_init(&job);
    int r;
    *records = 0;
    while ((r = src->ops->next(src, &job, err)) == 1) {
        (*records)++;
        pm_job_reset(&job);
    }
    pm_job_free(&job);
    return r;
}

static void put_long(unsigned char *buf, size_t *n, uint64_t v);
static void write_header(const char *path, const char *codec);
static size_t record_bytes(json_t *rec, char *out, size_t cap);

/* Where a sample container file's blocks are: offset of each block's
 * header, and its record count. */
typedef struct ocf_map {
    size_t header_end;
    size_t at[64];
    int64_t count[64];
    size_t n;
} ocf_map;

static uint64_t get_varint(const char *p, size_t *pos)
{
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        unsigned char b = (unsigned char)p[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    return (v >> 1) ^ -(v & 1);
}

static void map_blocks(const char *f, size_t len, ocf_map *m)
{
    const char *sync_at = f + len - 16;
    memset(m, 0, sizeof *m);
    for (size_t i = 4; i + 16 <= len; i++)
        if (memcmp(f + i, sync_at, 16) == 0) {
            m->header_end = i + 16;
            break;
        }
    cr_assert_gt(m->header_end, 0);
    size_t pos = m->header_end;
    while (pos < len) {
        cr_assert_lt(m->n, 64);
        m->at[m->n] = pos;
        m->count[m->n] = (int64_t)get_varint(f, &pos);
        int64_t size = (int64_t)get_varint(f, &pos);
        pos += (size_t)size + 16;
        m->n++;
    }
    cr_assert_eq(pos, len);
}

/* Read to the end, counting records that came whole and records the source
 * rejected (avro.block); each reject's reason must mention want. */
static int drain_rejects(pm_source *src, int *whole, int *rejected, const char *want,
                         pm_error *err)
{
    pm_job job;
    pm_job_init(&job);
    int r;
    *whole = *rejected = 0;
    while ((r = src->ops->next(src, &job, err)) == 1) {
        cr_assert_eq(job.origin.offset, *whole + *rejected + 1, "records numbered in order");
        if (job.err.code == PM_ERR_REJECT) {
            cr_assert_str_eq(job.err.reason, "avro.block");
            cr_assert_str_eq(job.err.field, "");
            cr_assert(!want || strstr(job.err.message, want), "%s", job.err.message);
            (*rejected)++;
        } else {
            cr_assert_eq(job.err.code, PM_OK);
            cr_assert_gt(job.raw.len, 0);
            (*whole)++;
        }
        pm_job_reset(&job);
    }
    pm_job_free(&job);
    return r;
}

Test(source_file, a_corrupt_block_rejects_its_records_and_reading_goes_on)
{
    size_t len;
    char *good = sample_mem(300, 11, "avro", &len);
    ocf_map m;
    map_blocks(good, len, &m);
    cr_assert_geq(m.n, 3, "the sample spans several blocks");
    int64_t last = m.count[m.n - 1], first = m.count[0];
    char *path = in_tmp("bad.avro");
    pm_source *src;
    pm_error err;
    int whole, rejected;

    /* cut inside the header: nothing can be read, a format error at open */
    size_t head_cuts[] = {6, m.header_end - 3};
    for (size_t k = 0; k < 2; k++) {
        cr_assert_eq(pmt_write_file(path, good, head_cuts[k]), 0);
        cr_assert_eq(pm_source_file_open(path, "auto", &src, &err), -1);
        cr_assert_eq(err.code, PM_ERR_FORMAT, "%s", err.message);
        cr_assert(strstr(err.message, path), "%s", err.message);
    }
    /* cut inside a block: the records before it come whole, the block's
     * declared records are rejected, and the run ends cleanly */
    struct { size_t cut; int whole, rejected; const char *why; } cuts[] = {
        {m.header_end + 1, 0, 1, "unreadable"},        /* inside the count varint */
        {m.header_end + 2000, 0, (int)first, "truncated"},
        {len - 17, 300 - (int)last, (int)last, "truncated"},
        {len - 1, 300 - (int)last, (int)last, "truncated"},
    };
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        cr_assert_eq(pmt_write_file(path, good, cuts[k].cut), 0);
        src = open_ok(path, "auto");
        cr_assert_eq(drain_rejects(src, &whole, &rejected, cuts[k].why, &err), 0,
                     "cut %zu: %s", cuts[k].cut, err.message);
        cr_assert_eq(whole, cuts[k].whole, "cut %zu", cuts[k].cut);
        cr_assert_eq(rejected, cuts[k].rejected, "cut %zu", cuts[k].cut);
        src->ops->close(src);
    }

    char *bad = malloc(len);
    /* the first block's sync marker damaged: its records rejected, the rest read */
    memcpy(bad, good, len);
    bad[m.at[1] - 3] ^= 0x55;
    cr_assert_eq(pmt_write_file(path, bad, len), 0);
    src = open_ok(path, "auto");
    cr_assert_eq(drain_rejects(src, &whole, &rejected, "sync marker", &err), 0, "%s", err.message);
    cr_assert_eq(rejected, first);
    cr_assert_eq(whole, 300 - first);
    src->ops->close(src);

    /* block 2's size far beyond the file: its records rejected without
     * allocating it, reading resumes at the next sync marker */
    memcpy(bad, good, len);
    size_t pos = m.at[1];
    get_varint(bad, &pos); /* skip the record count */
    size_t size_at = pos;
    size_t size_len = (size_t)(get_varint(good, &pos), pos - size_at);
    char *big = malloc(len + 16);
    memcpy(big, bad, size_at);
    memcpy(big + size_at, "\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 9);
    memcpy(big + size_at + 9, bad + size_at + size_len, len - size_at - size_len);
    size_t big_len = len - size_len + 9;
    cr_assert_eq(pmt_write_file(path, big, big_len), 0);
    src = open_ok(path, "auto");
    cr_assert_eq(drain_rejects(src, &whole, &rejected, "next sync marker", &err), 0, "%s",
                 err.message);
    cr_assert_eq(rejected, m.count[1]);
    cr_assert_eq(whole, 300 - m.count[1]);
    src->ops->close(src);
    free(big);

    /* a datum whose structure is broken inside a well-framed block (the
     * first serial_number gets a negative length): where it ends is
     * unknown, so the block's records are rejected; the next blocks read */
    memcpy(bad, good, len);
    size_t datum = m.header_end;
    get_varint(bad, &datum);
    get_varint(bad, &datum);
    cr_assert_eq(bad[datum], 40, "first serial is 20 bytes"); /* zig-zag 20 */
    bad[datum] = 0x01;
    cr_assert_eq(pmt_write_file(path, bad, len), 0);
    src = open_ok(path, "auto");
    cr_assert_eq(drain_rejects(src, &whole, &rejected, "record 1 is not a datum", &err), 0, "%s",
                 err.message);
    cr_assert_eq(rejected, first);
    cr_assert_eq(whole, 300 - first);
    src->ops->close(src);
    free(bad);
    free(good);
    free(path);
}

Test(source_file, damaged_containers_never_stop_the_run)
{
    /* random damage after the header: every record still gets an outcome
     * (whole or rejected) and the source never fails */
    size_t len;
    char *good = sample_mem(300, 12, "avro", &len);
    ocf_map m;
    map_blocks(good, len, &m);
    char *bad = malloc(len), *path = in_tmp("fuzz.avro");
    uint64_t x = 88172645463325252ULL; /* xorshift64, fixed seed */
    for (int round = 0; round < 150; round++) {
        memcpy(bad, good, len);
        for (int k = 0; k < 1 + round % 4; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bad[m.header_end + x % (len - m.header_end)] ^= (char)(1 + (x >> 32) % 255);
        }
        size_t cut = round % 5 == 4 ? m.header_end + (x >> 20) % (len - m.header_end) : len;
        cr_assert_eq(pmt_write_file(path, bad, cut), 0);
        pm_source *src = open_ok(path, "auto");
        int whole, rejected;
        pm_error err;
        cr_assert_eq(drain_rejects(src, &whole, &rejected, NULL, &err), 0, "round %d: %s", round,
                     err.message);
        cr_assert_gt(whole + rejected, 0, "round %d", round);
        src->ops->close(src);
    }
    free(bad);
    free(good);
    free(path);
}

/* One record of the schema as Avro bytes (avro-c's writer). */
static size_t record_bytes(json_t *rec, char *out, size_t cap)
{
    avro_value_iface_t *iface = avro_generic_class_from_schema(pm_schema_pass_request());
    avro_value_t v;
    cr_assert_eq(avro_generic_value_new(iface, &v), 0);
    pm_error err;
    cr_assert_eq(pm_schema_json_to_avro(rec, &v, &err), 0, "%s", err.message);
    avro_writer_t w = avro_writer_memory(out, (int64_t)cap);
    cr_assert_eq(avro_value_write(w, &v), 0, "%s", avro_strerror());
    size_t n = (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    return n;
}

/* The first and last byte where two encodings differ. */
static void diff_span(const char *a, const char *b, size_t n, size_t *lo, size_t *hi)
{
    *lo = SIZE_MAX;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) {
            if (*lo == SIZE_MAX)
                *lo = i;
            *hi = i;
        }
    cr_assert_neq(*lo, SIZE_MAX);
}

static json_t *one_sample(uint64_t seed)
{
    pm_sample_gen *g;
    pm_error err;
    json_t *rec;
    cr_assert_eq(pm_sample_gen_create(seed, &g, &err), 0);
    cr_assert_eq(pm_sample_gen_next(g, &rec, &err), 0);
    pm_sample_gen_destroy(g);
    json_t *norm;
    cr_assert_eq(pm_schema_normalize(rec, &norm, &err), 0, "%s", err.message);
    json_decref(rec);
    json_object_set_new(norm, "locations",
                        json_pack("[{s:f, s:f, s:n, s:n}]", "latitude", 1.5, "longitude", 2.0,
                                  "altitude", "relevant_text"));
    json_object_set_new(norm, "beacons",
                        json_pack("[{s:s, s:i, s:n, s:n}]", "proximity_uuid",
                                  "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0", "major", 1, "minor",
                                  "relevant_text"));
    return norm;
}

Test(source_file, a_bad_value_rejects_only_its_record)
{
    /* Three bad values that do not hide where the datum ends, each in its
     * own record between good ones: a NaN double, an int beyond 32 bits, an
     * enum index out of range. */
    json_t *rec = one_sample(5);
    char a[8192], b[8192];
    size_t n = record_bytes(rec, a, sizeof a), lo, hi;
    json_t *alt = json_deep_copy(rec);
    json_object_set_new(json_array_get(json_object_get(alt, "locations"), 0), "latitude",
                        json_real(2.5));
    cr_assert_eq(record_bytes(alt, b, sizeof b), n);
    diff_span(a, b, n, &lo, &hi);
    size_t lat_at = hi - 7; /* little-endian: 1.5 and 2.5 differ in the top bytes */
    json_decref(alt);
    alt = json_deep_copy(rec);
    json_object_set_new(json_array_get(json_object_get(alt, "beacons"), 0), "major",
                        json_integer(2));
    cr_assert_eq(record_bytes(alt, b, sizeof b), n);
    diff_span(a, b, n, &lo, &hi);
    cr_assert_eq(lo, hi);
    size_t major_at = lo;
    json_decref(alt);
    const char *serial = json_string_value(json_object_get(rec, "serial_number"));
    size_t action_at = 1 + strlen(serial); /* after the serial's 1-byte length */
    cr_assert_lt(strlen(serial), 64);
    cr_assert_eq(a[action_at], 0, "action ISSUE");

    /* block: good, NaN, good, int 2^33, enum 9, good */
    pm_buf blk = PM_BUF_INIT;
    const char nan_le[8] = {0, 0, 0, 0, 0, 0, (char)0xf8, 0x7f};
    const char big_int[5] = {(char)0x80, (char)0x80, (char)0x80, (char)0x80, 0x40}; /* zz(2^33) */
    pm_buf_append(&blk, a, n);
    pm_buf_append(&blk, a, lat_at);
    pm_buf_append(&blk, nan_le, 8);
    pm_buf_append(&blk, a + lat_at + 8, n - lat_at - 8);
    pm_buf_append(&blk, a, n);
    pm_buf_append(&blk, a, major_at);
    pm_buf_append(&blk, big_int, 5);
    pm_buf_append(&blk, a + major_at + 1, n - major_at - 1);
    pm_buf_append(&blk, a, action_at);
    pm_buf_append(&blk, "\x12", 1); /* zig-zag 9 */
    pm_buf_append(&blk, a + action_at + 1, n - action_at - 1);
    pm_buf_append(&blk, a, n);

    char *path = in_tmp("values.avro");
    write_header(path, "null");
    size_t hlen;
    char *file = pmt_read_file(path, &hlen);
    pm_buf f = PM_BUF_INIT;
    pm_buf_append(&f, file, hlen);
    unsigned char hdr[32];
    size_t h = 0;
    put_long(hdr, &h, 6);
    put_long(hdr, &h, blk.len);
    pm_buf_append(&f, hdr, h);
    pm_buf_append(&f, blk.data, blk.len);
    pm_buf_append(&f, file + hlen - 16, 16);
    cr_assert_eq(pmt_write_file(path, f.data, f.len), 0);

    stages st;
    stages_open(&st);
    pm_source *src = open_ok(path, "auto");
    pm_job job;
    pm_job_init(&job);
    pm_error err;
    const char *want_field[] = {NULL, "locations[0].latitude", NULL, "beacons[0].major",
                                "action", NULL};
    const char *want_text[] = {NULL, "finite", NULL, "32-bit", "enum index", NULL};
    int r, k = 0;
    while ((r = src->ops->next(src, &job, &err)) == 1) {
        cr_assert_lt(k, 6);
        cr_assert_eq(job.err.code, PM_OK, "the source delimits record %d", k + 1);
        int d = pm_stage_decode.process(st.decode, NULL, &job);
        if (!want_field[k]) {
            cr_assert_eq(d, 0, "record %d: %s %s", k + 1, job.err.field, job.err.message);
        } else {
            cr_assert_eq(d, -1, "record %d decoded", k + 1);
            cr_assert_str_eq(job.err.reason, "avro.decode");
            cr_assert_str_eq(job.err.field, want_field[k]);
            cr_assert(strstr(job.err.message, want_text[k]), "%s", job.err.message);
        }
        k++;
        pm_job_reset(&job);
    }
    cr_assert_eq(r, 0, "%s", err.message);
    cr_assert_eq(k, 6);
    pm_job_free(&job);
    src->ops->close(src);
    stages_close(&st);
    pm_buf_free(&blk);
    pm_buf_free(&f);
    free(file);
    free(path);
    json_decref(rec);
}

Test(source_file, other_writer_schema_fails_at_open)
{
    char *path = in_tmp("other.avro");
    avro_schema_t other;
    const char *otxt = "{\"type\":\"record\",\"name\":\"Other\",\"fields\":"
                       "[{\"name\":\"serial_number\",\"type\":\"string\"}]}";
    cr_assert_eq(avro_schema_from_json_length(otxt, strlen(otxt), &other), 0);
    avro_file_writer_t w;
    cr_assert_eq(avro_file_writer_create(path, other, &w), 0, "%s", avro_strerror());
    cr_assert_eq(avro_file_writer_close(w), 0);
    pm_source *src;
    pm_error err;
    cr_assert_eq(pm_source_file_open(path, "auto", &src, &err), -1);
    cr_assert_eq(err.code, PM_ERR_FORMAT);
    cr_assert(strstr(err.message, "cannot be read as com.passmill.PassRequest"), "%s", err.message);
    avro_schema_decref(other);
    /* a JSONL file forced as avro */
    char *jl = in_tmp("x.jsonl");
    cr_assert_eq(pmt_write_file(jl, "{}\n", 3), 0);
    cr_assert_eq(pm_source_file_open(jl, "avro", &src, &err), -1);
    cr_assert_eq(err.code, PM_ERR_FORMAT);
    cr_assert_eq(pm_source_file_open(jl, "xml", &src, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    cr_assert_eq(pm_source_file_open("/nonexistent/in.jsonl", "auto", &src, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG, "a configured path that does not open (exit status 2)");
    free(jl);
    free(path);
}

/* Files written by avro-c's own writer, deflate and null codecs. */
static void avro_c_file(const char *path, const char *codec, int count)
{
    avro_file_writer_t w;
    cr_assert_eq(avro_file_writer_create_with_codec(path, pm_schema_pass_request(), &w, codec,
                                                    16384),
                 0, "%s", avro_strerror());
    avro_value_iface_t *iface = avro_generic_class_from_schema(pm_schema_pass_request());
    avro_value_t v;
    cr_assert_eq(avro_generic_value_new(iface, &v), 0);
    pm_sample_gen *g;
    pm_error err;
    cr_assert_eq(pm_sample_gen_create(99, &g, &err), 0);
    for (int i = 0; i < count; i++) {
        json_t *rec;
        cr_assert_eq(pm_sample_gen_next(g, &rec, &err), 0);
        cr_assert_eq(pm_schema_json_to_avro(rec, &v, &err), 0, "%s", err.message);
        cr_assert_eq(avro_file_writer_append_value(w, &v), 0, "%s", avro_strerror());
        json_decref(rec);
    }
    cr_assert_eq(avro_file_writer_close(w), 0);
    pm_sample_gen_destroy(g);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
}

Test(source_file, avro_c_written_files_deflate_and_null)
{
    stages st;
    stages_open(&st);
    char *jl = sample_file("ref.jsonl", 700, 99, "jsonl");
    json_t *want = read_back(&st, jl, "auto", PM_INPUT_JSON);
    const char *codecs[] = {"deflate", "null"};
    for (int c = 0; c < 2; c++) {
        char *path = in_tmp(codecs[c]);
        avro_c_file(path, codecs[c], 700);
        json_t *got = read_back(&st, path, "auto", PM_INPUT_AVRO);
        cr_assert_eq(json_array_size(got), 700, "%s", codecs[c]);
        cr_assert(json_equal(want, got), "codec %s", codecs[c]);
        json_decref(got);
        free(path);
    }
    json_decref(want);
    free(jl);
    stages_close(&st);
}

static void put_long(unsigned char *buf, size_t *n, uint64_t v)
{
    uint64_t z = v << 1; /* zig-zag of a non-negative value */
    while (z > 0x7f) {
        buf[(*n)++] = (unsigned char)(z | 0x80);
        z >>= 7;
    }
    buf[(*n)++] = (unsigned char)z;
}

static void put_bytes(unsigned char *buf, size_t *n, const char *s)
{
    put_long(buf, n, strlen(s));
    memcpy(buf + *n, s, strlen(s));
    *n += strlen(s);
}

/* A hand-made container header (no blocks) with a writer schema and a codec. */
static void write_header_with(const char *path, const char *schema, const char *codec)
{
    unsigned char *buf = malloc(strlen(schema) + 128);
    size_t n = 4;
    memcpy(buf, "Obj\x01", 4);
    put_long(buf, &n, 2);
    put_bytes(buf, &n, "avro.schema");
    put_bytes(buf, &n, schema);
    put_bytes(buf, &n, "avro.codec");
    put_bytes(buf, &n, codec);
    put_long(buf, &n, 0);
    memset(buf + n, 0xab, 16);
    n += 16;
    cr_assert_eq(pmt_write_file(path, buf, n), 0);
    free(buf);
}

static void write_header(const char *path, const char *codec)
{
    write_header_with(path, pm_schema_pass_request_json, codec);
}

Test(source_file, a_writer_schema_that_does_not_parse_is_refused_without_a_leak)
{
    /* avro-c leaked when such a schema failed to parse (ASan's leak report) */
    char *path = in_tmp("dup.avro");
    write_header_with(path,
                      "{\"type\":\"record\",\"name\":\"R\",\"fields\":["
                      "{\"name\":\"a\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\"]}},"
                      "{\"name\":\"b\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"B\"]}}]}",
                      "null");
    pm_source *src;
    pm_error err;
    cr_assert_eq(pm_source_file_open(path, "auto", &src, &err), -1);
    cr_assert_eq(err.code, PM_ERR_FORMAT);
    cr_assert(strstr(err.message, path), "%s", err.message);
    cr_assert(strstr(err.message, "type 'E' is defined twice"), "%s", err.message);
    free(path);
}

Test(source_file, a_writer_schema_with_one_more_optional_field_is_read)
{
    /* the compiled schema plus a trailing optional field */
    json_t *def = json_loads(pm_schema_pass_request_json, 0, NULL);
    cr_assert_not_null(def);
    json_array_append_new(json_object_get(def, "fields"),
                          json_pack("{s:s, s:[s,s], s:n}", "name", "promo_code", "type", "null",
                                    "string", "default"));
    char *ext = json_dumps(def, JSON_COMPACT);
    json_decref(def);
    char *path = in_tmp("evolved.avro");
    write_header_with(path, ext, "null");
    size_t hlen;
    char *head = pmt_read_file(path, &hlen);
    pm_buf blk = PM_BUF_INIT, f = PM_BUF_INIT;
    pm_sample_gen *g;
    pm_error err;
    cr_assert_eq(pm_sample_gen_create(99, &g, &err), 0);
    const int count = 40;
    for (int i = 0; i < count; i++) {
        json_t *rec;
        char bytes[8192];
        cr_assert_eq(pm_sample_gen_next(g, &rec, &err), 0);
        size_t n = record_bytes(rec, bytes, sizeof bytes);
        pm_buf_append(&blk, bytes, n);
        /* promo_code: null, or branch 1 with a string */
        pm_buf_append(&blk, i % 2 ? "\x02\x14SPRING2027" : "\x00", i % 2 ? 12 : 1);
        json_decref(rec);
    }
    pm_sample_gen_destroy(g);
    unsigned char hdr[32];
    size_t h = 0;
    put_long(hdr, &h, (uint64_t)count);
    put_long(hdr, &h, blk.len);
    pm_buf_append(&f, head, hlen);
    pm_buf_append(&f, hdr, h);
    pm_buf_append(&f, blk.data, blk.len);
    pm_buf_append(&f, head + hlen - 16, 16);
    cr_assert_eq(pmt_write_file(path, f.data, f.len), 0);

    stages st;
    stages_open(&st);
    char *jl = sample_file("ref.jsonl", (uint64_t)count, 99, "jsonl");
    json_t *want = read_back(&st, jl, "auto", PM_INPUT_JSON);
    json_t *got = read_back(&st, path, "auto", PM_INPUT_AVRO);
    cr_assert_eq(json_array_size(got), (size_t)count);
    cr_assert(json_equal(want, got), "the extra field is skipped, the records are the same");
    json_decref(want);
    json_decref(got);
    stages_close(&st);
    pm_buf_free(&blk);
    pm_buf_free(&f);
    free(head);
    free(ext);
    free(jl);
    free(path);
}

Test(source_file, unsupported_codec_fails_at_open)
{
    char *path = in_tmp("codec.avro");
    write_header(path, "snappy");
    pm_source *src;
    pm_error err;
    cr_assert_eq(pm_source_file_open(path, "auto", &src, &err), -1);
    cr_assert_eq(err.code, PM_ERR_FORMAT);
    cr_assert(strstr(err.message, "snappy"), "%s", err.message);
    /* the same header with codec null is an empty, valid file */
    write_header(path, "null");
    src = open_ok(path, "auto");
    int records;
    cr_assert_eq(drain(src, &records, &err), 0, "%s", err.message);
    cr_assert_eq(records, 0);
    src->ops->close(src);
    free(path);
}

Test(source_file, auto_detects_avro_on_a_pipe)
{
    char *av = sample_file("p.avro", 250, 4, "avro");
    char *fifo = in_tmp("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(pmt_sh("cat '%s' > '%s' &", av, fifo), 0);
    pm_source *src = open_ok(fifo, "auto"); /* blocks until cat opens the pipe */
    int records;
    pm_error err;
    cr_assert_eq(drain(src, &records, &err), 0, "%s", err.message);
    cr_assert_eq(records, 250);
    src->ops->close(src);
    free(fifo);
    free(av);
}

Test(source_file, stop_ends_the_stream)
{
    char *jl = sample_file("stop.jsonl", 50, 4, "jsonl");
    pm_source *src = open_ok(jl, "auto");
    pm_job job;
    pm_job_init(&job);
    pm_error err;
    cr_assert_eq(src->ops->next(src, &job, &err), 1);
    pm_job_reset(&job);
    src->ops->stop(src);
    cr_assert_eq(src->ops->next(src, &job, &err), 0);
    pm_job_free(&job);
    src->ops->close(src);
    free(jl);
}

/* Found by tests/fuzz/fuzz_ocf: avro-c leaks when a writer schema defines a
 * name twice; such a header is refused before avro-c parses it (the leak
 * itself is caught by the ASan replay of tests/fuzz/corpus/fuzz_ocf). */
Test(source_file, writer_schema_defining_a_name_twice_fails_at_open)
{
    static const char *const schemas[] = {
        "{\"type\":\"record\",\"name\":\"A\",\"namespace\":\"x\",\"fields\":["
        "{\"name\":\"p\",\"type\":{\"type\":\"enum\",\"name\":\"B\",\"symbols\":[\"a\"]}},"
        "{\"name\":\"q\",\"type\":[\"null\",{\"type\":\"enum\",\"name\":\"x.B\",\"symbols\":[\"a\"]}]}]}",
        "{\"type\":\"record\",\"name\":\"A\",\"fields\":[{\"name\":\"r\",\"type\":{\"type\":\"array\","
        "\"items\":{\"type\":\"record\",\"name\":\"A\",\"fields\":[]}}}]}",
    };
    static const char *const names[] = {"x.B", "A"};
    for (size_t i = 0; i < 2; i++) {
        pm_buf b = PM_BUF_INIT;
        size_t n = strlen(schemas[i]);
        cr_assert_eq(pm_buf_append(&b, "Obj\x01\x02\x16" "avro.schema", 17), 0);
        unsigned char len[2] = {(unsigned char)((n * 2) & 0x7f) | 0x80, (unsigned char)((n * 2) >> 7)};
        cr_assert_eq(pm_buf_append(&b, len, 2), 0);
        cr_assert_eq(pm_buf_append(&b, schemas[i], n), 0);
        cr_assert_eq(pm_buf_append(&b, "\0" "0123456789abcdef", 17), 0);
        char *path = in_tmp("dup.avro");
        cr_assert_eq(pmt_write_file(path, b.data, b.len), 0);
        pm_source *src = NULL;
        pm_error err;
        cr_assert_eq(pm_source_file_open(path, "auto", &src, &err), -1);
        cr_assert_eq(err.code, PM_ERR_FORMAT);
        char want[64];
        snprintf(want, sizeof want, "'%s' is defined twice", names[i]);
        cr_assert(strstr(err.message, want), "%s", err.message);
        free(path);
        pm_buf_free(&b);
    }
}
