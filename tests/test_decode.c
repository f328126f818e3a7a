/*
 * test_decode.c - the decode stage and the schema conversions.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "core/config.h"
#include "engine/context.h"
#include "stages/decode.h"
#include "record/sample.h"
#include "record/schema.h"
#include "test_util.h"

/* A minimal valid request: every required field, nothing optional. */
static const char *MINIMAL =
    "{\"serial_number\":\"S-1\",\"template_id\":\"stadium\","
    "\"event\":{\"name\":\"Show\",\"venue_title\":\"Hall\",\"time_zone\":\"Europe/London\","
    "\"start\":\"2027-06-12T19:30:00+01:00\"},"
    "\"attendee\":{},\"barcode\":{\"format\":\"QRCODE\",\"message\":\"m\"}}";

static const char *MINIMAL_NORMALIZED =
    "{\"serial_number\":\"S-1\",\"action\":\"ISSUE\",\"template_id\":\"stadium\","
    "\"pass_group_ids\":[],"
    "\"event\":{\"event_id\":null,\"name\":\"Show\",\"venue_title\":\"Hall\","
    "\"venue_address\":null,\"time_zone\":\"Europe/London\",\"doors_open\":null,"
    "\"start\":\"2027-06-12T19:30:00+01:00\",\"end\":null},"
    "\"attendee\":{\"holder_name\":null,\"seat\":null,\"row\":null,\"section\":null,"
    "\"gate\":null,\"ticket_type\":null,\"ticket_number\":null,\"confirmation_code\":null,"
    "\"face_value\":null},"
    "\"barcode\":{\"format\":\"QRCODE\",\"message\":\"m\",\"alt_text\":null,"
    "\"encoding\":\"iso-8859-1\"},"
    "\"locations\":[],\"beacons\":[],\"relevant_date\":null,\"expiration_date\":null,"
    "\"custom_fields\":[],\"metadata\":{}}";

static pm_config *cfg;
static pm_context ctx;
static void *state;
static char *tmp;

static void setup(void)
{
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_schema_init(&err), 0, "%s", err.message);
    tmp = pmt_tmpdir("decode");
    cr_assert_not_null(tmp);
    /* id 7 names a valid Avro schema that is not ours. */
    char other[512], ids[1200];
    snprintf(other, sizeof other, "%s/other.avsc", tmp);
    const char *otxt = "{\"type\":\"record\",\"name\":\"Other\",\"fields\":"
                       "[{\"name\":\"x\",\"type\":\"long\"}]}";
    cr_assert_eq(pmt_write_file(other, otxt, strlen(otxt)), 0);
    snprintf(ids, sizeof ids, "1:%s, 7:%s", pmt_src("schemas/pass_request.avsc"), other);
    cfg = pm_config_create();
    cr_assert_not_null(cfg);
    cr_assert_eq(pm_config_set(cfg, "kafka.schema_ids", ids, &err), 0, "%s", err.message);
    memset(&ctx, 0, sizeof ctx);
    ctx.config = cfg;
    ctx.fixed_now = -1;
    cr_assert_eq(pm_stage_decode.create(&ctx, &state, &err), 0, "%s", err.message);
}

static void teardown(void)
{
    pm_stage_decode.destroy(state);
    pm_config_destroy(cfg);
    pmt_rmrf(tmp);
    free(tmp);
}

TestSuite(decode, .init = setup, .fini = teardown);

/* Decode raw bytes; the job is returned for inspection (caller frees). */
static int run(pm_job *job, pm_input_format fmt, const void *raw, size_t len)
{
    pm_job_init(job);
    job->format = fmt;
    cr_assert_eq(pm_buf_append(&job->raw, raw, len), 0);
    return pm_stage_decode.process(state, NULL, job);
}

static int run_json(pm_job *job, const char *text)
{
    return run(job, PM_INPUT_JSON, text, strlen(text));
}

static void expect_reject(pm_job *job, const char *reason, const char *field)
{
    cr_assert_eq(job->err.code, PM_ERR_REJECT, "code %s: %s", pm_code_name(job->err.code),
                 job->err.message);
    cr_assert_str_eq(job->err.reason, reason, "message: %s", job->err.message);
    cr_assert_str_eq(job->err.field, field, "message: %s", job->err.message);
    cr_assert_null(job->record);
    cr_assert_null(job->serial);
    cr_assert_neq(job->err.message[0], '\0');
}

static void json_reject(const char *text, const char *reason, const char *field)
{
    pm_job job;
    cr_assert_eq(run_json(&job, text), -1, "accepted: %s", text);
    expect_reject(&job, reason, field);
    pm_job_free(&job);
}

/* MINIMAL with one JSON fragment spliced in (replacing `what`). */
static char *minimal_with(const char *what, const char *with)
{
    const char *at = strstr(MINIMAL, what);
    cr_assert_not_null(at, "fixture lacks %s", what);
    size_t pre = (size_t)(at - MINIMAL);
    char *out = malloc(strlen(MINIMAL) + strlen(with) + 1);
    memcpy(out, MINIMAL, pre);
    strcpy(out + pre, with);
    strcat(out, at + strlen(what));
    return out;
}

static void spliced_reject(const char *what, const char *with, const char *reason,
                           const char *field)
{
    char *text = minimal_with(what, with);
    json_reject(text, reason, field);
    free(text);
}

static char *dump(json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Encode a JSON record as an Avro binary datum with avro-c. */
static unsigned char *to_avro(json_t *rec, size_t *len)
{
    pm_error err;
    avro_value_iface_t *iface = avro_generic_class_from_schema(pm_schema_pass_request());
    avro_value_t v;
    cr_assert_eq(avro_generic_value_new(iface, &v), 0);
    cr_assert_eq(pm_schema_json_to_avro(rec, &v, &err), 0, "%s", err.message);
    cr_assert_eq(avro_value_sizeof(&v, len), 0);
    unsigned char *buf = malloc(*len + 5);
    avro_writer_t w = avro_writer_memory((const char *)buf, (int64_t)*len);
    cr_assert_eq(avro_value_write(w, &v), 0, "%s", avro_strerror());
    avro_writer_free(w);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    return buf;
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    cr_assert_not_null(j, "%s", e.text);
    return j;
}

Test(decode, minimal_json_is_normalized_with_defaults_in_schema_order)
{
    pm_job job;
    cr_assert_eq(run_json(&job, MINIMAL), 0, "%s", job.err.message);
    char *s = dump(job.record);
    cr_assert_str_eq(s, MINIMAL_NORMALIZED);
    cr_assert_str_eq(job.serial, "S-1");
    cr_assert_eq(job.serial, json_string_value(json_object_get(job.record, "serial_number")));
    free(s);
    pm_job_free(&job);
}

Test(decode, key_order_follows_schema_not_input)
{
    pm_job job;
    const char *text =
        "{\"metadata\":{\"b\":\"2\",\"a\":\"1\"},\"barcode\":{\"message\":\"m\",\"format\":\"AZTEC\"},"
        "\"attendee\":{\"seat\":\"4\"},\"template_id\":\"t\",\"action\":\"VOID\","
        "\"event\":{\"start\":\"s\",\"time_zone\":\"z\",\"venue_title\":\"v\",\"name\":\"n\"},"
        "\"serial_number\":\"X\"}";
    cr_assert_eq(run_json(&job, text), 0, "%s", job.err.message);
    const char *key;
    json_t *v;
    const char *want[] = {"serial_number", "action", "template_id", "pass_group_ids", "event",
                          "attendee", "barcode", "locations", "beacons", "relevant_date",
                          "expiration_date", "custom_fields", "metadata"};
    size_t i = 0;
    json_object_foreach(job.record, key, v) {
        cr_assert_lt(i, sizeof want / sizeof want[0]);
        cr_assert_str_eq(key, want[i]);
        i++;
    }
    cr_assert_eq(i, sizeof want / sizeof want[0]);
    cr_assert_str_eq(pm_record_str(job.record, "action"), "VOID");
    cr_assert_str_eq(pm_record_str(job.record, "barcode.format"), "AZTEC");
    cr_assert_str_eq(pm_record_str(job.record, "attendee.seat"), "4");
    /* map keys keep their input order */
    char *m = dump(json_object_get(job.record, "metadata"));
    cr_assert_str_eq(m, "{\"b\":\"2\",\"a\":\"1\"}");
    free(m);
    pm_job_free(&job);
}

Test(decode, doubles_accept_integers_longs_stay_integers)
{
    pm_job job;
    char *text = minimal_with("\"attendee\":{}",
                              "\"attendee\":{\"face_value\":{\"amount_micros\":95000000,"
                              "\"currency\":\"GBP\"}},\"locations\":[{\"latitude\":51,"
                              "\"longitude\":-0.5,\"altitude\":null}]");
    cr_assert_eq(run_json(&job, text), 0, "%s", job.err.message);
    json_t *lat = pm_record_get(job.record, "locations[0].latitude");
    cr_assert(json_is_real(lat));
    cr_assert_float_eq(json_real_value(lat), 51.0, 0);
    cr_assert(json_is_real(pm_record_get(job.record, "locations[0].longitude")));
    cr_assert(json_is_null(pm_record_get(job.record, "locations[0].altitude")));
    cr_assert(json_is_null(pm_record_get(job.record, "locations[0].relevant_text")));
    json_t *amt = pm_record_get(job.record, "attendee.face_value.amount_micros");
    cr_assert(json_is_integer(amt));
    cr_assert_eq(json_integer_value(amt), 95000000);
    cr_assert_str_eq(pm_record_str(job.record, "attendee.face_value.currency"), "GBP");
    free(text);
    pm_job_free(&job);
}

Test(decode, unknown_fields_rejected_with_path)
{
    spliced_reject("\"attendee\":{}", "\"attendee\":{\"sseat\":\"4\"}", "schema.unknown_field",
                   "attendee.sseat");
    spliced_reject("\"serial_number\"", "\"colour\":\"red\",\"serial_number\"",
                   "schema.unknown_field", "colour");
    spliced_reject("\"attendee\":{}",
                   "\"attendee\":{},\"locations\":[{\"latitude\":1,\"longitude\":2},"
                   "{\"latitude\":1,\"longitude\":2,\"alt\":3}]",
                   "schema.unknown_field", "locations[1].alt");
    spliced_reject("\"attendee\":{}",
                   "\"attendee\":{\"face_value\":{\"amount_micros\":1,\"currency\":\"GBP\","
                   "\"cents\":1}}",
                   "schema.unknown_field", "attendee.face_value.cents");
}

Test(decode, wrong_types_rejected_with_path)
{
    spliced_reject("\"name\":\"Show\"", "\"name\":5", "schema.type", "event.name");
    spliced_reject("\"attendee\":{}", "\"attendee\":{\"seat\":12}", "schema.type",
                   "attendee.seat");
    spliced_reject("\"attendee\":{}", "\"attendee\":[]", "schema.type", "attendee");
    spliced_reject("\"attendee\":{}",
                   "\"attendee\":{\"face_value\":{\"amount_micros\":\"12\",\"currency\":\"GBP\"}}",
                   "schema.type", "attendee.face_value.amount_micros");
    spliced_reject("\"attendee\":{}",
                   "\"attendee\":{\"face_value\":{\"amount_micros\":1.5,\"currency\":\"GBP\"}}",
                   "schema.type", "attendee.face_value.amount_micros");
    spliced_reject("\"attendee\":{}", "\"attendee\":{},\"locations\":{}", "schema.type",
                   "locations");
    spliced_reject("\"attendee\":{}",
                   "\"attendee\":{},\"locations\":[{\"latitude\":1,\"longitude\":2},"
                   "{\"latitude\":\"51.5\",\"longitude\":2}]",
                   "schema.type", "locations[1].latitude");
    spliced_reject("\"attendee\":{}",
                   "\"attendee\":{},\"beacons\":[{\"proximity_uuid\":\"x\",\"major\":4294967296}]",
                   "schema.type", "beacons[0].major");
    spliced_reject("\"attendee\":{}", "\"attendee\":{},\"pass_group_ids\":[\"a\",7]",
                   "schema.type", "pass_group_ids[1]");
    spliced_reject("\"attendee\":{}", "\"attendee\":{},\"metadata\":{\"order_id\":7}",
                   "schema.type", "metadata.order_id");
    spliced_reject("\"serial_number\":\"S-1\"", "\"serial_number\":null", "schema.type",
                   "serial_number");
    json_reject("[1,2]", "schema.type", "");
}

Test(decode, missing_required_fields_rejected_with_path)
{
    spliced_reject("\"template_id\":\"stadium\",", "", "schema.missing", "template_id");
    spliced_reject(",\"start\":\"2027-06-12T19:30:00+01:00\"", "", "schema.missing",
                   "event.start");
    spliced_reject("\"attendee\":{}",
                   "\"attendee\":{\"face_value\":{\"amount_micros\":1}}", "schema.missing",
                   "attendee.face_value.currency");
    spliced_reject(",\"attendee\":{}", "", "schema.missing", "attendee");
    spliced_reject("\"attendee\":{}",
                   "\"attendee\":{},\"custom_fields\":[{\"key\":\"k\",\"label\":\"l\",\"value\":\"v\"},"
                   "{\"key\":\"k2\",\"value\":\"v\"}]",
                   "schema.missing", "custom_fields[1].label");
}

Test(decode, bad_enum_symbols_rejected)
{
    spliced_reject("\"format\":\"QRCODE\"", "\"format\":\"QR\"", "schema.enum", "barcode.format");
    spliced_reject("\"format\":\"QRCODE\"", "\"format\":\"qrcode\"", "schema.enum",
                   "barcode.format");
    spliced_reject("\"template_id\"", "\"action\":\"DELETE\",\"template_id\"", "schema.enum",
                   "action");
    spliced_reject("\"format\":\"QRCODE\"", "\"format\":1", "schema.type", "barcode.format");
    pm_job job;
    char *text = minimal_with("\"format\":\"QRCODE\"", "\"format\":\"QR\"");
    cr_assert_eq(run_json(&job, text), -1);
    cr_assert(strstr(job.err.message, "QRCODE, AZTEC, PDF417, CODE128"), "%s", job.err.message);
    cr_assert(strstr(job.err.message, "'QR'"), "%s", job.err.message);
    free(text);
    pm_job_free(&job);
}

Test(decode, json_syntax_errors)
{
    json_reject("{\"serial_number\":", "json.syntax", "");
    json_reject("", "json.syntax", "");
    json_reject("not json", "json.syntax", "");
    json_reject("\"a string\"", "json.syntax", "");
    json_reject("{\"serial_number\":\"a\xff\xfe\"}", "json.syntax", "");  /* invalid UTF-8 */
    json_reject("{\"serial_number\":\"a\\u0000b\"}", "json.syntax", "");   /* NUL */
    json_reject("{\"serial_number\":\"a\",\"serial_number\":\"b\"}", "json.syntax", "");
    char *two = minimal_with("\"attendee\":{}", "\"attendee\":{}");
    size_t n = strlen(two);
    two = realloc(two, n + 4);
    strcpy(two + n, " {}");
    json_reject(two, "json.syntax", "");
    free(two);
}

Test(decode, too_large_record_rejected_before_parsing)
{
    size_t n = PM_RECORD_MAX + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    pm_job job;
    cr_assert_eq(run(&job, PM_INPUT_JSON, big, n), -1);
    expect_reject(&job, "record.too_large", "");
    pm_job_free(&job);
    cr_assert_eq(run(&job, PM_INPUT_AVRO, big, n), -1);
    expect_reject(&job, "record.too_large", "");
    pm_job_free(&job);
    /* exactly the limit is parsed (and is then just bad JSON) */
    cr_assert_eq(run(&job, PM_INPUT_JSON, big, n - 1), -1);
    expect_reject(&job, "json.syntax", "");
    pm_job_free(&job);
    free(big);
}

Test(decode, avro_and_confluent_round_trip)
{
    json_t *in = parse(MINIMAL);
    size_t len;
    unsigned char *bin = to_avro(in, &len);
    pm_job job;
    cr_assert_eq(run(&job, PM_INPUT_AVRO, bin, len), 0, "%s", job.err.message);
    char *s = dump(job.record);
    cr_assert_str_eq(s, MINIMAL_NORMALIZED);
    cr_assert_str_eq(job.serial, "S-1");
    free(s);
    pm_job_free(&job);

    unsigned char *framed = malloc(len + 5);
    memcpy(framed, "\x00\x00\x00\x00\x01", 5);
    memcpy(framed + 5, bin, len);
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, len + 5), 0, "%s", job.err.message);
    s = dump(job.record);
    cr_assert_str_eq(s, MINIMAL_NORMALIZED);
    free(s);
    pm_job_free(&job);

    /* trailing bytes after the datum */
    bin = realloc(bin, len + 1);
    bin[len] = 0;
    cr_assert_eq(run(&job, PM_INPUT_AVRO, bin, len + 1), -1);
    expect_reject(&job, "avro.decode", "");
    pm_job_free(&job);
    free(framed);
    free(bin);
    json_decref(in);
}

/* Issue 14: an Avro value read as JSON said only "invalid JSON near end of file". */
Test(decode, confluent_avro_read_as_json_is_named)
{
    json_t *in = parse(MINIMAL);
    size_t len;
    unsigned char *bin = to_avro(in, &len);
    unsigned char *framed = malloc(len + 5);
    memcpy(framed, "\x00\x00\x00\x01\x02", 5);
    memcpy(framed + 5, bin, len);
    pm_job job;
    cr_assert_eq(run(&job, PM_INPUT_JSON, framed, len + 5), -1);
    expect_reject(&job, "json.syntax", "");
    cr_assert(strstr(job.err.message, "Confluent-framed Avro") &&
              strstr(job.err.message, "schema id (258)") &&
              strstr(job.err.message, "kafka.value_format = avro"), "%s", job.err.message);
    pm_job_free(&job);
    /* Other bad JSON keeps jansson's position. */
    cr_assert_eq(run_json(&job, "not json"), -1);
    cr_assert(strstr(job.err.message, "line 1 column"), "%s", job.err.message);
    pm_job_free(&job);
    free(framed);
    free(bin);
    json_decref(in);
}

Test(decode, confluent_frame_errors)
{
    json_t *in = parse(MINIMAL);
    size_t len;
    unsigned char *bin = to_avro(in, &len);
    unsigned char *framed = malloc(len + 5);
    memcpy(framed + 5, bin, len);
    pm_job job;

    memcpy(framed, "\x01\x00\x00\x00\x01", 5); /* bad magic */
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, len + 5), -1);
    expect_reject(&job, "avro.magic", "");
    pm_job_free(&job);

    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, "\x00\x00\x00", 3), -1); /* short */
    expect_reject(&job, "avro.magic", "");
    pm_job_free(&job);
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, "", 0), -1);
    expect_reject(&job, "avro.magic", "");
    pm_job_free(&job);

    memcpy(framed, "\x00\x00\x00\x00\x63", 5); /* id 99: not configured */
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, len + 5), -1);
    expect_reject(&job, "avro.schema_id", "");
    cr_assert(strstr(job.err.message, "99"), "%s", job.err.message);
    pm_job_free(&job);

    memcpy(framed, "\x00\x00\x00\x00\x07", 5); /* id 7: configured, another schema */
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, len + 5), -1);
    expect_reject(&job, "avro.schema_id", "");
    cr_assert(strstr(job.err.message, "not the compiled schema"), "%s", job.err.message);
    pm_job_free(&job);

    memcpy(framed, "\x00\x01\x00\x00\x01", 5); /* id 16777217 */
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, len + 5), -1);
    expect_reject(&job, "avro.schema_id", "");
    pm_job_free(&job);

    memcpy(framed, "\x00\x00\x00\x00\x01", 5); /* right id, truncated body */
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, 5 + len / 2), -1);
    cr_assert_str_eq(job.err.reason, "avro.decode");
    pm_job_free(&job);
    free(framed);
    free(bin);
    json_decref(in);
}

Test(decode, every_truncation_of_an_avro_datum_is_rejected)
{
    pm_sample_gen *g;
    pm_error err;
    cr_assert_eq(pm_sample_gen_create(9, &g, &err), 0);
    for (int r = 0; r < 8; r++) {
        json_t *rec;
        cr_assert_eq(pm_sample_gen_next(g, &rec, &err), 0);
        size_t len;
        unsigned char *bin = to_avro(rec, &len);
        for (size_t cut = 0; cut < len; cut++) {
            pm_job job;
            cr_assert_eq(run(&job, PM_INPUT_AVRO, bin, cut), -1, "prefix %zu of %zu", cut, len);
            cr_assert_eq(job.err.code, PM_ERR_REJECT);
            cr_assert_str_eq(job.err.reason, "avro.decode");
            cr_assert_null(job.record);
            pm_job_free(&job);
        }
        free(bin);
        json_decref(rec);
    }
    pm_sample_gen_destroy(g);
}

/* Deterministic garbage: flip bytes of valid datums and feed random bytes. */
Test(decode, garbage_avro_never_crashes)
{
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    pm_sample_gen *g;
    pm_error err;
    cr_assert_eq(pm_sample_gen_create(3, &g, &err), 0);
    json_t *rec;
    cr_assert_eq(pm_sample_gen_next(g, &rec, &err), 0);
    size_t len;
    unsigned char *bin = to_avro(rec, &len);
    unsigned char *buf = malloc(len + 4096);
    int accepted = 0, rejected = 0;
    for (int i = 0; i < 6000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n;
        if (i % 2 == 0) { /* mutate a valid datum */
            memcpy(buf, bin, len);
            n = len;
            for (int k = 0; k < 1 + (int)(x % 4); k++)
                buf[(x >> (8 + k * 8)) % len] = (unsigned char)(x >> (k * 5));
        } else { /* random bytes */
            n = (size_t)(x % 4096);
            uint64_t y = x;
            for (size_t k = 0; k < n; k++) {
                y = y * 6364136223846793005ULL + 1442695040888963407ULL;
                buf[k] = (unsigned char)(y >> 56);
            }
        }
        pm_job job;
        pm_input_format fmt = i % 3 == 0 ? PM_INPUT_CONFLUENT : PM_INPUT_AVRO;
        if (fmt == PM_INPUT_CONFLUENT && n >= 5)
            memcpy(buf, "\x00\x00\x00\x00\x01", 5);
        if (run(&job, fmt, buf, n) == 0) {
            cr_assert_not_null(job.record);
            cr_assert_not_null(job.serial);
            accepted++;
        } else {
            cr_assert_eq(job.err.code, PM_ERR_REJECT, "%s", job.err.message);
            cr_assert(strncmp(job.err.reason, "avro.", 5) == 0, "%s", job.err.reason);
            rejected++;
        }
        pm_job_free(&job);
    }
    cr_assert_gt(rejected, 3000);
    (void)accepted;
    free(buf);
    free(bin);
    json_decref(rec);
    pm_sample_gen_destroy(g);
}

Test(decode, hostile_lengths_and_indexes_rejected_with_path)
{
    pm_job job;
    /* serial_number length 2^61: far more than the bytes present */
    const unsigned char huge_string[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40};
    cr_assert_eq(run(&job, PM_INPUT_AVRO, huge_string, sizeof huge_string), -1);
    expect_reject(&job, "avro.decode", "serial_number");
    pm_job_free(&job);

    /* a negative string length */
    cr_assert_eq(run(&job, PM_INPUT_AVRO, "\x01", 1), -1);
    expect_reject(&job, "avro.decode", "serial_number");
    pm_job_free(&job);

    /* a varint longer than 10 bytes */
    cr_assert_eq(run(&job, PM_INPUT_AVRO, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12),
                 -1);
    expect_reject(&job, "avro.decode", "serial_number");
    pm_job_free(&job);

    /* serial "S", action index 10 (zigzag 20) */
    cr_assert_eq(run(&job, PM_INPUT_AVRO, "\x02S\x14", 3), -1);
    expect_reject(&job, "avro.decode", "action");
    pm_job_free(&job);

    /* pass_group_ids with a block of 2^40 elements */
    const unsigned char huge_count[] = {0x02, 'S', 0x00, 0x02, 'T',
                                        0x80, 0x80, 0x80, 0x80, 0x80, 0x40};
    cr_assert_eq(run(&job, PM_INPUT_AVRO, huge_count, sizeof huge_count), -1);
    expect_reject(&job, "avro.decode", "pass_group_ids");
    pm_job_free(&job);

    /* a negative block count whose byte size exceeds the input */
    const unsigned char neg_block[] = {0x02, 'S', 0x00, 0x02, 'T', 0x01, 0x7e};
    cr_assert_eq(run(&job, PM_INPUT_AVRO, neg_block, sizeof neg_block), -1);
    expect_reject(&job, "avro.decode", "pass_group_ids");
    pm_job_free(&job);

    /* event.event_id union branch 5 */
    const unsigned char bad_union[] = {0x02, 'S', 0x00, 0x02, 'T', 0x00, 0x0a};
    cr_assert_eq(run(&job, PM_INPUT_AVRO, bad_union, sizeof bad_union), -1);
    expect_reject(&job, "avro.decode", "event.event_id");
    pm_job_free(&job);
}

Test(decode, avro_doubles_must_be_finite_and_strings_pass_through)
{
    json_t *rec = parse(MINIMAL);
    json_object_set_new(rec, "locations",
                        json_pack("[{s:f, s:f}, {s:f, s:f}]", "latitude", 1.0, "longitude", 2.0,
                                  "latitude", 1234.5, "longitude", 2.0));
    json_object_set_new(rec, "serial_number", json_string("S\xc3\xa9"));
    size_t len;
    unsigned char *bin = to_avro(rec, &len);
    /* patch the second latitude (1234.5) into a NaN */
    double d = 1234.5, nan_value = NAN;
    unsigned char pat[8], nanb[8];
    memcpy(pat, &d, 8); /* x86-64: little-endian as Avro */
    memcpy(nanb, &nan_value, 8);
    unsigned char *at = memmem(bin, len, pat, 8);
    cr_assert_not_null(at);
    memcpy(at, nanb, 8);
    pm_job job;
    cr_assert_eq(run(&job, PM_INPUT_AVRO, bin, len), -1);
    expect_reject(&job, "avro.decode", "locations[1].latitude");
    pm_job_free(&job);

    /* invalid UTF-8 in an Avro string is kept for validate to report */
    memcpy(at, pat, 8);
    unsigned char *e9 = memmem(bin, len, "S\xc3\xa9", 3);
    cr_assert_not_null(e9);
    e9[1] = 0xff;
    cr_assert_eq(run(&job, PM_INPUT_AVRO, bin, len), 0, "%s", job.err.message);
    json_t *serial = json_object_get(job.record, "serial_number");
    cr_assert_eq(json_string_length(serial), 3);
    cr_assert_eq(memcmp(json_string_value(serial), "S\xff\xa9", 3), 0);
    pm_job_free(&job);
    free(bin);
    json_decref(rec);
}

Test(decode, json_avro_json_identity_on_sample_records)
{
    pm_sample_gen *g;
    pm_error err;
    cr_assert_eq(pm_sample_gen_create(2027, &g, &err), 0);
    avro_value_iface_t *iface = avro_generic_class_from_schema(pm_schema_pass_request());
    avro_value_t v;
    cr_assert_eq(avro_generic_value_new(iface, &v), 0);
    for (int i = 0; i < 300; i++) {
        json_t *rec, *norm, *back;
        cr_assert_eq(pm_sample_gen_next(g, &rec, &err), 0);
        cr_assert_eq(pm_schema_normalize(rec, &norm, &err), 0, "%s: %s", err.field, err.message);
        /* normalizing twice changes nothing */
        json_t *again;
        cr_assert_eq(pm_schema_normalize(norm, &again, &err), 0);
        cr_assert(json_equal(norm, again));
        json_decref(again);
        /* avro_value_t both ways */
        cr_assert_eq(pm_schema_json_to_avro(rec, &v, &err), 0, "%s", err.message);
        cr_assert_eq(pm_schema_avro_to_json(&v, &back, &err), 0, "%s", err.message);
        cr_assert(json_equal(norm, back), "record %d differs after avro_value_t", i);
        json_decref(back);
        /* binary through the decode stage */
        size_t len;
        unsigned char *bin = to_avro(rec, &len);
        pm_job job;
        cr_assert_eq(run(&job, PM_INPUT_AVRO, bin, len), 0, "%s", job.err.message);
        char *a = dump(norm), *b = dump(job.record);
        cr_assert_str_eq(a, b);
        free(a);
        free(b);
        pm_job_free(&job);
        /* JSON text through the decode stage */
        char *text = json_dumps(rec, JSON_COMPACT);
        cr_assert_eq(run_json(&job, text), 0, "%s", job.err.message);
        cr_assert(json_equal(norm, job.record));
        pm_job_free(&job);
        free(text);
        free(bin);
        json_decref(rec);
        json_decref(norm);
    }
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    pm_sample_gen_destroy(g);
}

Test(decode, json_to_avro_rejects_bad_records)
{
    avro_value_iface_t *iface = avro_generic_class_from_schema(pm_schema_pass_request());
    avro_value_t v;
    cr_assert_eq(avro_generic_value_new(iface, &v), 0);
    json_t *rec = parse(MINIMAL);
    json_object_set_new(json_object_get(rec, "barcode"), "format", json_string("EAN13"));
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_schema_json_to_avro(rec, &v, &err), -1);
    cr_assert_eq(err.code, PM_ERR_REJECT);
    cr_assert_str_eq(err.reason, "schema.enum");
    cr_assert_str_eq(err.field, "barcode.format");
    json_decref(rec);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
}

Test(decode, record_lookups)
{
    json_t *rec = parse("{\"a\":{\"b\":[{\"c\":\"x\"},{\"c\":\"y\",\"d\":null}]},\"s\":\"t\"}");
    cr_assert_str_eq(pm_record_str(rec, "a.b[1].c"), "y");
    cr_assert_str_eq(pm_record_str(rec, "a.b[0].c"), "x");
    cr_assert_str_eq(pm_record_str(rec, "s"), "t");
    cr_assert_null(pm_record_str(rec, "a.b[1].d"));
    cr_assert_null(pm_record_str(rec, "a.b[2].c"));
    cr_assert_null(pm_record_str(rec, "a.b"));
    cr_assert_null(pm_record_str(rec, "a..b"));
    cr_assert_null(pm_record_str(rec, "a.b[x].c"));
    cr_assert_null(pm_record_str(rec, "s.t"));
    cr_assert_null(pm_record_str(rec, ""));
    cr_assert(json_is_array(pm_record_get(rec, "a.b")));
    cr_assert_null(pm_record_get(NULL, "a"));
    json_decref(rec);
}

Test(decode, schema_paths)
{
    cr_assert(pm_schema_has_path("event.name"));
    cr_assert(pm_schema_has_path("serial_number"));
    cr_assert(pm_schema_has_path("action"));
    cr_assert(pm_schema_has_path("attendee.seat"));
    cr_assert(pm_schema_has_path("attendee.face_value.currency"));
    cr_assert(pm_schema_has_path("attendee.face_value.amount_micros"));
    cr_assert(pm_schema_has_path("barcode.format"));
    cr_assert(pm_schema_has_path("relevant_date"));
    cr_assert_not(pm_schema_has_path("event"));
    cr_assert_not(pm_schema_has_path("attendee.face_value"));
    cr_assert_not(pm_schema_has_path("locations"));
    cr_assert_not(pm_schema_has_path("locations.latitude"));
    cr_assert_not(pm_schema_has_path("metadata"));
    cr_assert_not(pm_schema_has_path("metadata.order_id"));
    cr_assert_not(pm_schema_has_path("event.name.x"));
    cr_assert_not(pm_schema_has_path("event.nam"));
    cr_assert_not(pm_schema_has_path("event."));
    cr_assert_not(pm_schema_has_path(""));
    cr_assert_not(pm_schema_has_path(NULL));
}

Test(decode_config, schema_ids_checked_at_create)
{
    pm_error err;
    pm_error_clear(&err);
    pm_config *c = pm_config_create();
    pm_context cx;
    memset(&cx, 0, sizeof cx);
    cx.config = c;
    void *st = NULL;
    /* malformed spec */
    cr_assert_eq(pm_config_set(c, "kafka.schema_ids", "abc", &err), 0);
    cr_assert_eq(pm_stage_decode.create(&cx, &st, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    cr_assert_eq(pm_config_set(c, "kafka.schema_ids", "x:/nope.avsc", &err), 0);
    cr_assert_eq(pm_stage_decode.create(&cx, &st, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    /* unreadable file: fine for file input (the id is just not accepted) ... */
    cr_assert_eq(pm_config_set(c, "kafka.schema_ids", "1:/nonexistent/x.avsc", &err), 0);
    cr_assert_eq(pm_stage_decode.create(&cx, &st, &err), 0, "%s", err.message);
    pm_stage_decode.destroy(st);
    /* ... a configuration error when Kafka Avro input needs it */
    cr_assert_eq(pm_config_set(c, "input.type", "kafka", &err), 0, "%s", err.message);
    cr_assert_eq(pm_config_set(c, "kafka.value_format", "avro", &err), 0, "%s", err.message);
    cr_assert_eq(pm_stage_decode.create(&cx, &st, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    cr_assert(strstr(err.message, "/nonexistent/x.avsc"), "%s", err.message);
    char ids[1100];
    snprintf(ids, sizeof ids, "1:%s", pmt_src("schemas/pass_request.avsc"));
    cr_assert_eq(pm_config_set(c, "kafka.schema_ids", ids, &err), 0);
    cr_assert_eq(pm_stage_decode.create(&cx, &st, &err), 0, "%s", err.message);
    pm_stage_decode.destroy(st);
    pm_config_destroy(c);
}
