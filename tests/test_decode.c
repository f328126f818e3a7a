/*
 * test_decode.c - the decode stage and the schema conversions.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    "\"locations\":[],\"beacons\":[],\"sharing_prohibited\":null,\"relevant_date\":null,"
    "\"expiration_date\":null,\"status_message\":null,\"custom_fields\":[],\"metadata\":{},"
    "\"strip_image\":null}";

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
    char other[512], evolved[512], older[512], ids[2000];
    snprintf(other, sizeof other, "%s/other.avsc", tmp);
    const char *otxt = "{\"type\":\"record\",\"name\":\"Other\",\"fields\":"
                       "[{\"name\":\"x\",\"type\":\"long\"}]}";
    cr_assert_eq(pmt_write_file(other, otxt, strlen(otxt)), 0);
    /* id 3: the compiled schema with one more optional field at the end */
    json_t *def = json_loads(pm_schema_pass_request_json, 0, NULL);
    cr_assert_not_null(def);
    json_array_append_new(json_object_get(def, "fields"),
                          json_pack("{s:s, s:[s,s], s:n}", "name", "promo_code", "type", "null",
                                    "string", "default"));
    char *etxt = json_dumps(def, JSON_COMPACT);
    json_decref(def);
    snprintf(evolved, sizeof evolved, "%s/evolved.avsc", tmp);
    cr_assert_eq(pmt_write_file(evolved, etxt, strlen(etxt)), 0);
    free(etxt);
    /* id 4: the schema before strip_image (its last field) was added */
    def = json_loads(pm_schema_pass_request_json, 0, NULL);
    json_t *fields = json_object_get(def, "fields");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(fields, json_array_size(fields) - 1),
                                                       "name")), "strip_image");
    json_array_remove(fields, json_array_size(fields) - 1);
    etxt = json_dumps(def, JSON_COMPACT);
    json_decref(def);
    snprintf(older, sizeof older, "%s/older.avsc", tmp);
    cr_assert_eq(pmt_write_file(older, etxt, strlen(etxt)), 0);
    free(etxt);
    snprintf(ids, sizeof ids, "1:%s, 7:%s, 3:%s, 4:%s", pmt_src("schemas/pass_request.avsc"), other,
             evolved, older);
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
    /* a fake schema registry a failed test left running */
    pmt_sh("if [ -f '%s/reg.pid' ]; then kill $(cat '%s/reg.pid') 2>/dev/null; fi; true", tmp, tmp);
    pm_stage_decode.destroy(state);
    pm_config_destroy(cfg);
    pmt_rmrf(tmp);
    free(tmp);
}

TestSuite(decode, .init = setup, .fini = teardown);
TestSuite(resolve, .init = setup, .fini = teardown);

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
                          "attendee", "barcode", "locations", "beacons", "sharing_prohibited",
                          "relevant_date", "expiration_date", "status_message", "custom_fields",
                          "metadata", "strip_image"};
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
    /* the field is the key being read when the parser stopped, if any */
    json_reject("{\"serial_number\":", "json.syntax", "serial_number");
    json_reject("", "json.syntax", "");
    json_reject("not json", "json.syntax", "");
    json_reject("\"a string\"", "json.syntax", "");
    json_reject("{\"serial_number\":\"a\xff\xfe\"}", "json.syntax", "serial_number"); /* bad UTF-8 */
    json_reject("{\"serial_number\":\"a\\u0000b\"}", "json.syntax", "serial_number");  /* NUL */
    json_reject("{\"serial_number\":\"a\",\"serial_number\":\"b\"}", "json.syntax",
                "serial_number");
    json_reject("{\"event\":{\"name\":\"x\",\"start\": tru}}", "json.syntax", "event.start");
    json_reject("{\"locations\":[{\"latitude\":1},{\"latitude\":-}]}", "json.syntax",
                "locations[1].latitude");
    json_reject("{\"a{[\\\"\":{\"b\":[1,2,@", "json.syntax", "a{[\\\".b[2]"); /* braces in a key */
    json_reject("{\"event\":{\"name\":\"x\",", "json.syntax", "event"); /* a key expected */
    json_reject("{\"event\":{} x", "json.syntax", "");
    pm_job job;
    cr_assert_eq(run_json(&job, "{\"serial_number\": \"\xc3\xa9\xc3\xa9\", \"action\": @}"), -1);
    cr_assert(strstr(job.err.message, "column 35"), "column in characters: %s", job.err.message);
    cr_assert(strstr(job.err.message, "reading action"), "%s", job.err.message);
    cr_assert_str_eq(job.err.field, "action");
    pm_job_free(&job);
    /* after a value, no key is being read */
    cr_assert_eq(run_json(&job, "{\"serial_number\": \"x\" @}"), -1);
    cr_assert_str_eq(job.err.field, "");
    pm_job_free(&job);
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
    cr_assert(strstr(job.err.message, "invalid JSON at column "), "%s", job.err.message);
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
    cr_assert(strstr(job.err.message, "cannot be read as com.passmill.PassRequest"), "%s",
              job.err.message);
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

/* ---- schema resolution (Avro specification, "Schema Resolution") ---- */

typedef struct enc {
    unsigned char b[1024];
    size_t n;
} enc;

static void e_long(enc *e, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z > 0x7f) {
        e->b[e->n++] = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    e->b[e->n++] = (unsigned char)z;
}

static void e_str(enc *e, const char *s)
{
    e_long(e, (int64_t)strlen(s));
    memcpy(e->b + e->n, s, strlen(s));
    e->n += strlen(s);
}

static void e_float(enc *e, float f)
{
    memcpy(e->b + e->n, &f, 4); /* little-endian host, as Avro */
    e->n += 4;
}

static void e_double(enc *e, double d)
{
    memcpy(e->b + e->n, &d, 8);
    e->n += 8;
}

static const char *READER =
    "{\"type\":\"record\",\"name\":\"R\",\"namespace\":\"t\",\"fields\":["
    "{\"name\":\"a\",\"type\":\"int\"},"
    "{\"name\":\"b\",\"type\":\"string\",\"default\":\"dflt\"},"
    "{\"name\":\"c\",\"type\":\"long\"},"
    "{\"name\":\"d\",\"type\":\"double\"},"
    "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"X\",\"Y\",\"Z\"],"
    "\"default\":\"Z\"}},"
    "{\"name\":\"f\",\"type\":[\"null\",\"string\"],\"default\":null},"
    "{\"name\":\"g\",\"type\":\"string\",\"aliases\":[\"old_g\"]}]}";

static pm_schema_writer *writer_for(const char *wfields)
{
    char text[2048];
    snprintf(text, sizeof text, "{\"type\":\"record\",\"name\":\"R\",\"namespace\":\"t\","
             "\"fields\":[%s]}", wfields);
    pm_schema_writer *w;
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_schema_writer_create(text, strlen(text), READER, &w, &err), 0, "%s: %s",
                 wfields, err.message);
    return w;
}

static void resolves_to(pm_schema_writer *w, const enc *e, const char *want)
{
    json_t *out = NULL;
    size_t used;
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_schema_writer_decode(w, e->b, e->n, &used, &out, &err), 0, "%s %s: %s",
                 err.reason, err.field, err.message);
    cr_assert_eq(used, e->n);
    json_t *exp = parse(want);
    char *got = dump(out);
    cr_assert(json_equal(out, exp), "got %s, want %s", got, want);
    /* and in the reader's field order */
    char *want_txt = dump(exp);
    cr_assert_str_eq(got, want_txt);
    free(want_txt);
    free(got);
    json_decref(exp);
    json_decref(out);
    /* measuring walks the writer's bytes alone */
    cr_assert_eq(pm_schema_writer_decode(w, e->b, e->n, &used, NULL, &err), 0);
    cr_assert_eq(used, e->n);
}

#define E_FIELD "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"X\",\"Y\",\"Z\"]}}"

Test(resolve, the_same_schema_needs_no_resolution)
{
    pm_schema_writer *w;
    pm_error err;
    cr_assert_eq(pm_schema_writer_create(READER, strlen(READER), READER, &w, &err), 0, "%s",
                 err.message);
    cr_assert(pm_schema_writer_is_reader(w));
    pm_schema_writer_destroy(w);
    cr_assert_eq(pm_schema_writer_create(pm_schema_pass_request_json,
                                         strlen(pm_schema_pass_request_json), NULL, &w, &err), 0);
    cr_assert(pm_schema_writer_is_reader(w));
    pm_schema_writer_destroy(w);
}

Test(resolve, added_field_takes_its_default_and_removed_field_is_skipped)
{
    /* writer lacks b and f (reader defaults), has an extra array field */
    pm_schema_writer *w = writer_for(
        "{\"name\":\"a\",\"type\":\"int\"},"
        "{\"name\":\"gone\",\"type\":{\"type\":\"array\",\"items\":\"string\"}},"
        "{\"name\":\"c\",\"type\":\"long\"},{\"name\":\"d\",\"type\":\"double\"}," E_FIELD ","
        "{\"name\":\"g\",\"type\":\"string\"},"
        "{\"name\":\"gone2\",\"type\":[\"null\",{\"type\":\"map\",\"values\":\"long\"}]}");
    cr_assert_not(pm_schema_writer_is_reader(w));
    enc e = {.n = 0};
    e_long(&e, 7);
    e_long(&e, 2); e_str(&e, "x"); e_str(&e, "y"); e_long(&e, 0); /* gone: ["x","y"] */
    e_long(&e, 1LL << 40);
    e_double(&e, 0.25);
    e_long(&e, 1);
    e_str(&e, "gee");
    e_long(&e, 1); e_long(&e, 1); e_str(&e, "k"); e_long(&e, 5); e_long(&e, 0); /* gone2 */
    resolves_to(w, &e, "{\"a\":7,\"b\":\"dflt\",\"c\":1099511627776,\"d\":0.25,\"e\":\"Y\","
                       "\"f\":null,\"g\":\"gee\"}");
    pm_schema_writer_destroy(w);
}

Test(resolve, reordered_fields_come_out_in_reader_order)
{
    pm_schema_writer *w = writer_for(
        "{\"name\":\"g\",\"type\":\"string\"}," E_FIELD ",{\"name\":\"f\",\"type\":[\"null\",\"string\"]},"
        "{\"name\":\"d\",\"type\":\"double\"},{\"name\":\"c\",\"type\":\"long\"},"
        "{\"name\":\"b\",\"type\":\"string\"},{\"name\":\"a\",\"type\":\"int\"}");
    enc e = {.n = 0};
    e_str(&e, "G");
    e_long(&e, 2);
    e_long(&e, 1); e_str(&e, "eff");
    e_double(&e, -1.5);
    e_long(&e, -3);
    e_str(&e, "B");
    e_long(&e, 42);
    resolves_to(w, &e, "{\"a\":42,\"b\":\"B\",\"c\":-3,\"d\":-1.5,\"e\":\"Z\",\"f\":\"eff\","
                       "\"g\":\"G\"}");
    pm_schema_writer_destroy(w);
}

Test(resolve, numbers_promote_and_unions_resolve_branch_by_branch)
{
    /* c: int -> long; d: float -> double; f: plain string -> ["null","string"] */
    pm_schema_writer *w = writer_for(
        "{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"bytes\"},"
        "{\"name\":\"c\",\"type\":\"int\"},{\"name\":\"d\",\"type\":\"float\"}," E_FIELD ","
        "{\"name\":\"f\",\"type\":\"string\"},{\"name\":\"g\",\"type\":\"string\"}");
    enc e = {.n = 0};
    e_long(&e, 1);
    e_str(&e, "raw"); /* bytes read as string */
    e_long(&e, -2147483648LL);
    e_float(&e, 0.5f);
    e_long(&e, 0);
    e_str(&e, "plain");
    e_str(&e, "g");
    resolves_to(w, &e, "{\"a\":1,\"b\":\"raw\",\"c\":-2147483648,\"d\":0.5,\"e\":\"X\","
                       "\"f\":\"plain\",\"g\":\"g\"}");
    pm_schema_writer_destroy(w);
    /* d: long -> double; f: a writer union with a branch the reader lacks */
    w = writer_for("{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"c\",\"type\":\"long\"},"
                   "{\"name\":\"d\",\"type\":\"long\"}," E_FIELD ","
                   "{\"name\":\"f\",\"type\":[\"null\",\"string\",\"boolean\"]},"
                   "{\"name\":\"g\",\"type\":\"string\"}");
    e.n = 0;
    e_long(&e, 1); e_long(&e, 2); e_long(&e, 3); e_long(&e, 0);
    e_long(&e, 1); e_str(&e, "s");
    e_str(&e, "g");
    resolves_to(w, &e, "{\"a\":1,\"b\":\"dflt\",\"c\":2,\"d\":3.0,\"e\":\"X\",\"f\":\"s\","
                       "\"g\":\"g\"}");
    /* the boolean branch: well-formed, but no reader value */
    e.n = 0;
    e_long(&e, 1); e_long(&e, 2); e_long(&e, 3); e_long(&e, 0);
    e_long(&e, 2); e.b[e.n++] = 1;
    e_str(&e, "g");
    json_t *out = NULL;
    pm_error err;
    size_t used;
    cr_assert_eq(pm_schema_writer_decode(w, e.b, e.n, &used, &out, &err), -1);
    cr_assert_str_eq(err.reason, "avro.resolve");
    cr_assert_str_eq(err.field, "f");
    cr_assert(strstr(err.message, "boolean"), "%s", err.message);
    cr_assert_null(out);
    cr_assert_eq(pm_schema_writer_decode(w, e.b, e.n, &used, NULL, &err), 0, "measurable");
    pm_schema_writer_destroy(w);
}

Test(resolve, renamed_field_by_alias_and_enum_symbol_by_default)
{
    pm_schema_writer *w = writer_for(
        "{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"c\",\"type\":\"long\"},"
        "{\"name\":\"d\",\"type\":\"double\"},"
        "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"W\",\"X\"]}},"
        "{\"name\":\"old_g\",\"type\":\"string\"}");
    enc e = {.n = 0};
    e_long(&e, 5); e_long(&e, 6); e_double(&e, 7.0);
    e_long(&e, 0); /* W: not a reader symbol, so the reader's default Z */
    e_str(&e, "was old_g");
    resolves_to(w, &e, "{\"a\":5,\"b\":\"dflt\",\"c\":6,\"d\":7.0,\"e\":\"Z\",\"f\":null,"
                       "\"g\":\"was old_g\"}");
    e.n = 0;
    e_long(&e, 5); e_long(&e, 6); e_double(&e, 7.0);
    e_long(&e, 1);
    e_str(&e, "g2");
    resolves_to(w, &e, "{\"a\":5,\"b\":\"dflt\",\"c\":6,\"d\":7.0,\"e\":\"X\",\"f\":null,"
                       "\"g\":\"g2\"}");
    pm_schema_writer_destroy(w);
}

static void incompatible(const char *wtext, const char *want1, const char *want2)
{
    pm_schema_writer *w = NULL;
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_schema_writer_create(wtext, strlen(wtext), READER, &w, &err), -1,
                 "accepted %s", wtext);
    cr_assert_null(w);
    cr_assert_eq(err.code, PM_ERR_FORMAT);
    cr_assert(strstr(err.message, want1), "%s", err.message);
    cr_assert(!want2 || strstr(err.message, want2), "%s", err.message);
}

Test(resolve, an_incompatible_writer_is_a_clear_error)
{
    /* a: string cannot be read as int */
    incompatible("{\"type\":\"record\",\"name\":\"t.R\",\"fields\":[{\"name\":\"a\",\"type\":\"string\"},"
                 "{\"name\":\"c\",\"type\":\"long\"},{\"name\":\"d\",\"type\":\"double\"}," E_FIELD ","
                 "{\"name\":\"g\",\"type\":\"string\"}]}",
                 "field a", "the writer's string cannot be read as the reader's int");
    /* long cannot be narrowed to int */
    incompatible("{\"type\":\"record\",\"name\":\"t.R\",\"fields\":[{\"name\":\"a\",\"type\":\"long\"},"
                 "{\"name\":\"c\",\"type\":\"long\"},{\"name\":\"d\",\"type\":\"double\"}," E_FIELD ","
                 "{\"name\":\"g\",\"type\":\"string\"}]}",
                 "field a", "long cannot be read as the reader's int");
    /* c has no default and the writer lacks it */
    incompatible("{\"type\":\"record\",\"name\":\"t.R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
                 "{\"name\":\"d\",\"type\":\"double\"}," E_FIELD ",{\"name\":\"g\",\"type\":\"string\"}]}",
                 "field c", "no default");
    /* another record */
    incompatible("{\"type\":\"record\",\"name\":\"Other\",\"fields\":[]}", "Other", "names differ");
    /* not a schema at all, or an invalid one */
    incompatible("{\"type\":\"record\"", "not JSON", NULL);
    incompatible("{\"type\":\"record\",\"name\":\"t.R\",\"fields\":[{\"name\":\"a\",\"type\":\"nosuch\"}]}",
                 "unknown", "nosuch");
    incompatible("{\"type\":\"record\",\"name\":\"t.R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
                 "{\"name\":\"a\",\"type\":\"int\"}]}", "defined twice", NULL);
}

/* Avro written before strip_image existed still decodes: the field gets its default. */
Test(decode, confluent_writer_schema_without_strip_image_is_resolved)
{
    json_t *in = parse(MINIMAL);
    size_t len;
    unsigned char *bin = to_avro(in, &len);
    cr_assert_eq(bin[len - 1], 0, "strip_image null is the datum's last byte");
    unsigned char *framed = malloc(len + 5);
    memcpy(framed, "\x00\x00\x00\x00\x04", 5);
    memcpy(framed + 5, bin, len - 1);
    pm_job job;
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, len + 4), 0, "%s %s: %s",
                 job.err.reason, job.err.field, job.err.message);
    char *got = dump(job.record);
    cr_assert_str_eq(got, MINIMAL_NORMALIZED);
    free(got);
    pm_job_free(&job);
    free(framed);
    free(bin);
    json_decref(in);
}

Test(decode, confluent_writer_schema_with_one_more_field_is_resolved)
{
    json_t *in = parse(MINIMAL);
    size_t len;
    unsigned char *bin = to_avro(in, &len);
    unsigned char *framed = malloc(len + 5 + 12);
    memcpy(framed + 5, bin, len);
    memcpy(framed + 5 + len, "\x02\x14SPRING2027", 12); /* promo_code */
    pm_job job;
    memcpy(framed, "\x00\x00\x00\x00\x03", 5); /* id 3: the evolved schema */
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, len + 5 + 12), 0, "%s %s: %s",
                 job.err.reason, job.err.field, job.err.message);
    char *got = dump(job.record);
    cr_assert_str_eq(got, MINIMAL_NORMALIZED);
    free(got);
    pm_job_free(&job);
    /* the same bytes under id 1 (the compiled schema): the field is trailing garbage */
    memcpy(framed, "\x00\x00\x00\x00\x01", 5);
    cr_assert_eq(run(&job, PM_INPUT_CONFLUENT, framed, len + 5 + 12), -1);
    expect_reject(&job, "avro.decode", "");
    pm_job_free(&job);
    free(framed);
    free(bin);
    json_decref(in);
}

/* Whether s is whole UTF-8, as a reject line's JSON string needs. */
static bool valid_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

#define MIXED "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" /* 1-, 2-, 3-, 4-byte characters */

Test(decode, quoted_values_and_long_paths_are_cut_between_characters)
{
    for (size_t pad = 0; pad < 10; pad++) {
        char val[200];
        memset(val, 'Q', pad);
        val[pad] = '\0';
        while (strlen(val) + 10 < 190)
            strcat(val, MIXED);
        /* an enum value quoted in the message (cut to 40 bytes) */
        char with[300];
        snprintf(with, sizeof with, "\"format\":\"%s\"", val);
        char *text = minimal_with("\"format\":\"QRCODE\"", with);
        pm_job job;
        cr_assert_eq(run_json(&job, text), -1);
        expect_reject(&job, "schema.enum", "barcode.format");
        cr_assert(valid_utf8(job.err.message), "pad %zu: %s", pad, job.err.message);
        cr_assert(strstr(job.err.message, "'..."), "pad %zu: %s", pad, job.err.message);
        pm_job_free(&job);
        free(text);
        /* a map key longer than a field path holds */
        snprintf(with, sizeof with, "\"attendee\":{},\"metadata\":{\"%s\":5}", val);
        text = minimal_with("\"attendee\":{}", with);
        cr_assert_eq(run_json(&job, text), -1);
        cr_assert_str_eq(job.err.reason, "schema.type");
        cr_assert(valid_utf8(job.err.field), "pad %zu: %s", pad, job.err.field);
        cr_assert_gt(strlen(job.err.field), sizeof job.err.field - 5, "cut, not dropped");
        char full[300];
        snprintf(full, sizeof full, "metadata.%s", val);
        cr_assert_eq(strncmp(job.err.field, full, strlen(job.err.field)), 0);
        cr_assert(valid_utf8(job.err.message), "pad %zu", pad);
        pm_job_free(&job);
        free(text);
    }
}

/* Frame a datum with a Confluent header for id. */
static unsigned char *frame(uint32_t id, const unsigned char *datum, size_t len, size_t *out_len)
{
    unsigned char *f = malloc(len + 5);
    f[0] = 0;
    f[1] = (unsigned char)(id >> 24);
    f[2] = (unsigned char)(id >> 16);
    f[3] = (unsigned char)(id >> 8);
    f[4] = (unsigned char)id;
    memcpy(f + 5, datum, len);
    *out_len = len + 5;
    return f;
}

static int decode_with(void *st, pm_job *job, const unsigned char *raw, size_t len)
{
    pm_job_init(job);
    job->format = PM_INPUT_CONFLUENT;
    cr_assert_eq(pm_buf_append(&job->raw, raw, len), 0);
    return pm_stage_decode.process(st, NULL, job);
}

/*
 * Start the fake registry (tests/fake_schema_registry.py) knowing id 3 (the
 * evolved schema) and id 4 (another record), and a decode stage using it
 * for ids not in kafka.schema_ids (which holds id 1).
 */
static void *registry_stage(pm_config **cfg_out)
{
    cr_assert_eq(pmt_sh("mkdir -p '%s/reg/ids' && cp '%s/evolved.avsc' '%s/reg/ids/3.avsc' && "
                        "printf '%%s' '{\"type\":\"record\",\"name\":\"Other\",\"fields\":[]}' "
                        "> '%s/reg/ids/4.avsc'", tmp, tmp, tmp, tmp), 0);
    cr_assert_eq(pmt_sh("python3 '%s' '%s/reg' >/dev/null 2>&1 & echo $! > '%s/reg.pid'",
                        pmt_src("tests/fake_schema_registry.py"), tmp, tmp), 0);
    char portfile[1024], *port = NULL;
    snprintf(portfile, sizeof portfile, "%s/reg/port", tmp);
    for (int i = 0; i < 200 && !(port = pmt_read_file(portfile, NULL)); i++)
        usleep(50000);
    cr_assert_not_null(port, "the fake registry did not start");
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%s/", port);
    free(port);

    pm_error err;
    pm_config *c = pm_config_create();
    char ids[1100];
    snprintf(ids, sizeof ids, "1:%s", pmt_src("schemas/pass_request.avsc"));
    cr_assert_eq(pm_config_set(c, "kafka.schema_ids", ids, &err), 0);
    cr_assert_eq(pm_config_set(c, "kafka.schema_registry_url", url, &err), 0, "%s", err.message);
    pm_context cx;
    memset(&cx, 0, sizeof cx);
    cx.config = c;
    void *st;
    cr_assert_eq(pm_stage_decode.create(&cx, &st, &err), 0, "%s", err.message);
    *cfg_out = c;
    return st;
}

Test(decode, schema_registry_ids_are_fetched_once_and_resolved)
{
    pm_config *c;
    void *st = registry_stage(&c);

    json_t *in = parse(MINIMAL);
    size_t len, flen;
    unsigned char *bin = to_avro(in, &len);
    unsigned char *datum = malloc(len + 12);
    memcpy(datum, bin, len);
    memcpy(datum + len, "\x02\x14SPRING2027", 12); /* promo_code */
    pm_job job;
    for (int k = 0; k < 3; k++) { /* fetched once, then cached */
        unsigned char *f = frame(3, datum, len + 12, &flen);
        cr_assert_eq(decode_with(st, &job, f, flen), 0, "%s: %s", job.err.reason, job.err.message);
        char *got = dump(job.record);
        cr_assert_str_eq(got, MINIMAL_NORMALIZED);
        free(got);
        pm_job_free(&job);
        free(f);
    }
    unsigned char *f = frame(4, bin, len, &flen);
    cr_assert_eq(decode_with(st, &job, f, flen), -1);
    expect_reject(&job, "avro.schema_id", "");
    cr_assert(strstr(job.err.message, "cannot be read as"), "%s", job.err.message);
    pm_job_free(&job);
    free(f);
    f = frame(5, bin, len, &flen);
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(decode_with(st, &job, f, flen), -1);
        expect_reject(&job, "avro.schema_id", "");
        cr_assert(strstr(job.err.message, "no schema id 5"), "%s", job.err.message);
        pm_job_free(&job);
    }
    free(f);
    f = frame(1, bin, len, &flen); /* from kafka.schema_ids: the registry is not asked */
    cr_assert_eq(decode_with(st, &job, f, flen), 0, "%s", job.err.message);
    pm_job_free(&job);
    free(f);
    size_t loglen;
    char logpath[1024];
    snprintf(logpath, sizeof logpath, "%s/reg/requests.log", tmp);
    char *log = pmt_read_file(logpath, &loglen);
    cr_assert_not_null(log);
    cr_assert_str_eq(log, "/schemas/ids/3\n/schemas/ids/4\n/schemas/ids/5\n");
    free(log);

    /* the registry gone: a system failure (retried later), not a reject */
    cr_assert_eq(pmt_sh("kill $(cat '%s/reg.pid') && rm '%s/reg.pid' && sleep 0.2", tmp, tmp), 0);
    f = frame(6, bin, len, &flen);
    cr_assert_eq(decode_with(st, &job, f, flen), -1);
    cr_assert_eq(job.err.code, PM_ERR_IO, "%s", job.err.message);
    cr_assert(strstr(job.err.message, "schema registry"), "%s", job.err.message);
    cr_assert_null(strstr(job.err.message, "127.0.0.1"), "the URL may hold credentials");
    pm_job_free(&job);
    free(f);

    pm_stage_decode.destroy(st);
    pm_config_destroy(c);
    free(datum);
    free(bin);
    json_decref(in);
}

Test(resolve, recursive_records_resolve_through_the_memo)
{
    const char *reader = "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"v\",\"type\":\"int\"},"
                         "{\"name\":\"next\",\"type\":[\"null\",\"L\"],\"default\":null}]}";
    const char *writer = "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"v\",\"type\":\"int\"},"
                         "{\"name\":\"x\",\"type\":\"string\"},{\"name\":\"next\",\"type\":[\"null\",\"L\"]}]}";
    pm_schema_writer *w;
    pm_error err;
    cr_assert_eq(pm_schema_writer_create(writer, strlen(writer), reader, &w, &err), 0, "%s",
                 err.message);
    enc e = {.n = 0};
    e_long(&e, 1); e_str(&e, "a"); e_long(&e, 1);
    e_long(&e, 2); e_str(&e, "b"); e_long(&e, 0);
    resolves_to(w, &e, "{\"v\":1,\"next\":{\"v\":2,\"next\":null}}");
    pm_schema_writer_destroy(w);
    /* the same shape with v a string: incompatible however deep it recurses */
    const char *bad = "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"v\",\"type\":\"string\"},"
                      "{\"name\":\"next\",\"type\":[\"null\",\"L\"]}]}";
    cr_assert_eq(pm_schema_writer_create(bad, strlen(bad), reader, &w, &err), -1);
    cr_assert(strstr(err.message, "field v"), "%s", err.message);
}

typedef struct reg_thread {
    void *st;
    const unsigned char *framed;
    size_t len;
    int ok;
} reg_thread;

static void *reg_worker(void *arg)
{
    reg_thread *t = arg;
    for (int k = 0; k < 20; k++) {
        pm_job job;
        pm_job_init(&job);
        job.format = PM_INPUT_CONFLUENT;
        pm_buf_append(&job.raw, t->framed, t->len);
        if (pm_stage_decode.process(t->st, NULL, &job) == 0)
            t->ok++;
        pm_job_free(&job);
    }
    return NULL;
}

Test(decode, schema_registry_cache_is_shared_by_workers)
{
    /* four workers want id 3 at once: one fetch, every record decoded */
    pm_config *c;
    void *st = registry_stage(&c);
    json_t *in = parse(MINIMAL);
    size_t len, flen;
    unsigned char *bin = to_avro(in, &len);
    unsigned char *datum = malloc(len + 1);
    memcpy(datum, bin, len);
    datum[len] = 0; /* promo_code null */
    unsigned char *f = frame(3, datum, len + 1, &flen);
    reg_thread t[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (reg_thread){st, f, flen, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, reg_worker, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(t[i].ok, 20, "worker %d", i);
    }
    char logpath[1024];
    snprintf(logpath, sizeof logpath, "%s/reg/requests.log", tmp);
    char *log = pmt_read_file(logpath, NULL);
    cr_assert_not_null(log);
    cr_assert_str_eq(log, "/schemas/ids/3\n");
    free(log);
    cr_assert_eq(pmt_sh("kill $(cat '%s/reg.pid') && rm '%s/reg.pid'", tmp, tmp), 0);
    pm_stage_decode.destroy(st);
    pm_config_destroy(c);
    free(f);
    free(datum);
    free(bin);
    json_decref(in);
}

Test(resolve, garbage_through_a_resolved_writer_never_crashes)
{
    pm_schema_writer *w = writer_for(
        "{\"name\":\"g\",\"type\":\"string\"},{\"name\":\"extra\",\"type\":{\"type\":\"map\","
        "\"values\":{\"type\":\"array\",\"items\":[\"null\",\"bytes\",{\"type\":\"fixed\","
        "\"name\":\"F\",\"size\":3}]}}},"
        "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"W\",\"X\"]}},"
        "{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"c\",\"type\":\"int\"},"
        "{\"name\":\"d\",\"type\":\"float\"},{\"name\":\"f\",\"type\":[\"null\",\"string\",\"int\"]}");
    uint64_t x = 2463534242ULL;
    unsigned char buf[64];
    for (int round = 0; round < 5000; round++) {
        size_t n = (size_t)round % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (unsigned char)(x >> 24);
        }
        json_t *out = NULL;
        size_t used;
        pm_error err;
        pm_error_clear(&err);
        if (pm_schema_writer_decode(w, buf, n, &used, &out, &err) == 0) {
            cr_assert_leq(used, n);
            cr_assert(json_is_object(out));
            json_decref(out);
        } else {
            cr_assert_eq(err.code, PM_ERR_REJECT, "%s", err.message);
            cr_assert(!strcmp(err.reason, "avro.decode") || !strcmp(err.reason, "avro.resolve"),
                      "%s", err.reason);
            cr_assert_null(out);
        }
        pm_schema_writer_decode(w, buf, n, &used, NULL, &err);
    }
    pm_schema_writer_destroy(w);
}

/* sharing_prohibited: optional boolean, null by default; records of the schema before it still decode. */
Test(decode, sharing_prohibited_is_an_optional_boolean)
{
    pm_job job;
    char text[1024];
    size_t n = strlen(MINIMAL);
    snprintf(text, sizeof text, "%.*s,\"sharing_prohibited\":true}", (int)(n - 1), MINIMAL);
    cr_assert_eq(run_json(&job, text), 0, "%s", job.err.message);
    cr_assert(json_is_true(json_object_get(job.record, "sharing_prohibited")));
    pm_job_free(&job);
    snprintf(text, sizeof text, "%.*s,\"sharing_prohibited\":\"oneUserOneDevice\"}", (int)(n - 1),
             MINIMAL);
    cr_assert_eq(run_json(&job, text), -1);
    cr_assert_str_eq(job.err.field, "sharing_prohibited", "%s", job.err.message);
    pm_job_free(&job);
    /* without it (every record valid before): null */
    cr_assert_eq(run_json(&job, MINIMAL), 0, "%s", job.err.message);
    cr_assert(json_is_null(json_object_get(job.record, "sharing_prohibited")));
    pm_job_free(&job);
}

Test(decode, avro_written_before_sharing_prohibited_is_resolved)
{
    /* The schema as it was: the compiled one without the field. */
    json_t *def = json_loads(pm_schema_pass_request_json, 0, NULL);
    json_t *fields = json_object_get(def, "fields"), *f;
    size_t i, at = (size_t)-1;
    json_array_foreach(fields, i, f)
        if (strcmp(json_string_value(json_object_get(f, "name")), "sharing_prohibited") == 0)
            at = i;
    cr_assert_neq(at, (size_t)-1);
    json_array_remove(fields, at);
    char *old = json_dumps(def, JSON_COMPACT);
    json_decref(def);
    /* MINIMAL under the old schema: every field from beacons on is an empty
     * array, map or null, one 0x00 byte each; the old datum is one 0x00 shorter. */
    json_t *in = parse(MINIMAL);
    size_t len;
    unsigned char *bin = to_avro(in, &len);
    cr_assert_eq(bin[len - 1], 0);
    pm_schema_writer *w;
    pm_error err;
    cr_assert_eq(pm_schema_writer_create(old, strlen(old), NULL, &w, &err), 0, "%s", err.message);
    size_t used = 0;
    json_t *out = NULL;
    cr_assert_eq(pm_schema_writer_decode(w, bin, len - 1, &used, &out, &err), 0, "%s",
                 err.message);
    cr_assert_eq(used, len - 1);
    char *got = dump(out);
    cr_assert_str_eq(got, MINIMAL_NORMALIZED);
    free(got);
    json_decref(out);
    pm_schema_writer_destroy(w);
    /* the same bytes read as the current schema lack a field: not a valid datum */
    cr_assert_neq(pm_schema_writer_decode(NULL, bin, len - 1, &used, &out, &err), 0);
    free(bin);
    free(old);
    json_decref(in);
}
