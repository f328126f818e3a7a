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

Test(source_file, truncated_or_corrupt_container_is_a_format_error)
{
    size_t len;
    char *good = sample_mem(300, 11, "avro", &len);
    char *path = in_tmp("bad.avro");
    /* header length: magic + map + sync; find the first block after it */
    const char *sync_at = good + len - 16;
    size_t header_end = 0;
    for (size_t i = 4; i + 16 <= len; i++)
        if (memcmp(good + i, sync_at, 16) == 0) {
            header_end = i + 16;
            break;
        }
    cr_assert_gt(header_end, 0);
    size_t cuts[] = {6, header_end - 3, header_end + 1, header_end + 2000, len - 17, len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        cr_assert_eq(pmt_write_file(path, good, cuts[k]), 0);
        pm_source *src;
        pm_error err;
        pm_error_clear(&err);
        int records = 0;
        if (pm_source_file_open(path, "auto", &src, &err) == 0) {
            cr_assert_eq(drain(src, &records, &err), -1, "cut at %zu of %zu read cleanly",
                         cuts[k], len);
            src->ops->close(src);
        }
        cr_assert_eq(err.code, PM_ERR_FORMAT, "cut %zu: %s", cuts[k], err.message);
        cr_assert(strstr(err.message, path), "%s", err.message);
        cr_assert_lt(records, 300);
    }
    /* a sync marker that does not match */
    char *bad = malloc(len);
    memcpy(bad, good, len);
    bad[len - 5] ^= 0x55;
    cr_assert_eq(pmt_write_file(path, bad, len), 0);
    pm_source *src = open_ok(path, "auto");
    pm_error err;
    int records;
    cr_assert_eq(drain(src, &records, &err), -1);
    cr_assert_eq(err.code, PM_ERR_FORMAT);
    cr_assert(strstr(err.message, "sync marker"), "%s", err.message);
    src->ops->close(src);
    /* a block size far beyond the file: refused without allocating it */
    memcpy(bad, good, len);
    size_t pos = header_end;
    while ((unsigned char)bad[pos] & 0x80) /* skip the record count */
        pos++;
    pos++;
    memcpy(bad + pos, "\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 9);
    cr_assert_eq(pmt_write_file(path, bad, len), 0);
    src = open_ok(path, "auto");
    cr_assert_eq(drain(src, &records, &err), -1);
    cr_assert_eq(err.code, PM_ERR_FORMAT);
    cr_assert_eq(records, 0);
    src->ops->close(src);
    /* a datum that does not match the schema inside a well-framed block:
     * the first serial_number gets a negative length */
    memcpy(bad, good, len);
    size_t datum = header_end;
    for (int v = 0; v < 2; v++) { /* skip the record count and block size */
        while ((unsigned char)bad[datum] & 0x80)
            datum++;
        datum++;
    }
    cr_assert_eq(bad[datum], 40, "first serial is 20 bytes"); /* zig-zag 20 */
    bad[datum] = 0x01;
    cr_assert_eq(pmt_write_file(path, bad, len), 0);
    src = open_ok(path, "auto");
    cr_assert_eq(drain(src, &records, &err), -1, "corrupt datum read cleanly");
    cr_assert_eq(err.code, PM_ERR_FORMAT);
    cr_assert(strstr(err.message, "record 1 (block 1)"), "%s", err.message);
    cr_assert_eq(records, 0);
    src->ops->close(src);
    free(bad);
    free(good);
    free(path);
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
    cr_assert(strstr(err.message, "not the pass request schema"), "%s", err.message);
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

/* A hand-made container header (no blocks) naming a codec. */
static void write_header(const char *path, const char *codec)
{
    const char *schema = pm_schema_pass_request_json;
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
        snprintf(want, sizeof want, "defines the name '%s' twice", names[i]);
        cr_assert(strstr(err.message, want), "%s", err.message);
        free(path);
        pm_buf_free(&b);
    }
}
