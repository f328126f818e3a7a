/*
 * test_validate.c - the validate stage: every reject code with its exact
 * field path, boundary values on both sides, status mapping, template lookup.
 *
 * Each test starts from VALID, one complete record exactly as decode
 * normalizes it (every field present, unions null or plain, enums as
 * symbols), mutates one thing and checks the outcome.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "engine/job.h"
#include "stages/stage.h"
#include "wallet/template.h"
#include "test_util.h"
#include "stages/validate.h"
#include "record/schema.h"

static const char VALID[] =
    "{"
    "\"serial_number\": \"TKT-2027-000001\","
    "\"action\": \"ISSUE\","
    "\"template_id\": \"stadium\","
    "\"pass_group_ids\": [\"event-42\", \"vip.section-a\"],"
    "\"event\": {"
    "  \"event_id\": \"evt_42\","
    "  \"name\": \"Summer Finals\","
    "  \"venue_title\": \"City Stadium\","
    "  \"venue_address\": \"1 Stadium Way\\nLondon\","
    "  \"time_zone\": \"Europe/London\","
    "  \"doors_open\": \"2027-06-12T18:00:00+01:00\","
    "  \"start\": \"2027-06-12T19:30:00+01:00\","
    "  \"end\": \"2027-06-12T22:00:00+01:00\""
    "},"
    "\"attendee\": {"
    "  \"holder_name\": \"Ada Lovelace\","
    "  \"seat\": \"12\","
    "  \"row\": \"F\","
    "  \"section\": \"North Stand\","
    "  \"gate\": \"C\","
    "  \"ticket_type\": \"Adult\","
    "  \"ticket_number\": \"000123\","
    "  \"confirmation_code\": \"ORD-778899\","
    "  \"face_value\": {\"amount_micros\": 45000000, \"currency\": \"GBP\"}"
    "},"
    "\"barcode\": {"
    "  \"format\": \"QRCODE\","
    "  \"message\": \"TKT-2027-000001\","
    "  \"alt_text\": \"TKT-2027-000001\","
    "  \"encoding\": \"iso-8859-1\""
    "},"
    "\"locations\": [{\"latitude\": 51.556, \"longitude\": -0.2796, \"altitude\": 35.5,"
    "                 \"relevant_text\": \"Welcome to City Stadium\"}],"
    "\"beacons\": [{\"proximity_uuid\": \"E2C56DB5-DFFB-48D2-B060-D0F5A71096E0\","
    "               \"major\": 1, \"minor\": 7, \"relevant_text\": \"Gate C\"}],"
    "\"sharing_prohibited\": true,"
    "\"relevant_date\": \"2027-06-12T17:00:00+01:00\","
    "\"expiration_date\": \"2027-06-13T06:00:00+01:00\","
    "\"status_message\": null,"
    "\"custom_fields\": ["
    "  {\"key\": \"parking\", \"label\": \"Parking\", \"value\": \"Lot B\"},"
    "  {\"key\": \"bag_policy\", \"label\": \"Bag policy\", \"value\": \"Small bags only\"}"
    "],"
    "\"metadata\": {\"order_id\": \"778899\", \"channel\": \"web\"},"
    "\"strip_image\": null"
    "}";

static pm_context ctx;
static void *state;

static void setup(void)
{
    pm_error err;
    memset(&ctx, 0, sizeof ctx);
    ctx.fixed_now = -1;
    cr_assert_eq(pm_template_set_load(PM_SOURCE_DIR "/config/templates", &ctx.templates, &err), 0,
                 "templates: %s", err.message);
    cr_assert_eq(pm_stage_validate.create(&ctx, &state, &err), 0, "create: %s", err.message);
}

static void teardown(void)
{
    pm_stage_validate.destroy(state);
    pm_template_set_destroy(ctx.templates);
}

TestSuite(validate, .init = setup, .fini = teardown);

/* ------------------------------------------------------------------ */
/* helpers                                                            */
/* ------------------------------------------------------------------ */

static json_t *valid(void)
{
    json_error_t je;
    json_t *r = json_loads(VALID, 0, &je);
    cr_assert_not_null(r, "VALID: %s at %d", je.text, je.position);
    return r;
}

/* Parent node and last component ("name" or "name[i]") of a dotted path. */
static json_t *walk(json_t *root, const char *path, char *last, size_t lastlen)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *node = root;
    char *tok = buf, *dot;
    while ((dot = strchr(tok, '.')) != NULL) {
        *dot = '\0';
        char *br = strchr(tok, '[');
        if (br) {
            *br = '\0';
            node = json_array_get(json_object_get(node, tok), strtoul(br + 1, NULL, 10));
        } else {
            node = json_object_get(node, tok);
        }
        cr_assert_not_null(node, "no %s in the record (path %s)", tok, path);
        tok = dot + 1;
    }
    snprintf(last, lastlen, "%s", tok);
    return node;
}

/* Set path to val (steals val): object member or existing array element. */
static void put(json_t *rec, const char *path, json_t *val)
{
    char last[256];
    json_t *parent = walk(rec, path, last, sizeof last);
    cr_assert_not_null(val, "put %s: NULL value", path);
    char *br = strchr(last, '[');
    if (br) {
        *br = '\0';
        json_t *arr = json_object_get(parent, last);
        cr_assert_eq(json_array_set_new(arr, strtoul(br + 1, NULL, 10), val), 0, "put %s", path);
    } else {
        cr_assert_eq(json_object_set_new(parent, last, val), 0, "put %s", path);
    }
}

static json_t *get(json_t *rec, const char *path)
{
    char last[256];
    json_t *parent = walk(rec, path, last, sizeof last);
    char *br = strchr(last, '[');
    if (br) {
        *br = '\0';
        return json_array_get(json_object_get(parent, last), strtoul(br + 1, NULL, 10));
    }
    return json_object_get(parent, last);
}

static void put_str(json_t *rec, const char *path, const char *s)
{
    put(rec, path, json_string(s));
}

/* Raw bytes, unchecked: what Avro input can carry. */
static void put_bytes(json_t *rec, const char *path, const char *s, size_t n)
{
    put(rec, path, json_stringn_nocheck(s, n));
}

/* unit repeated n times as a JSON string (no UTF-8 check). */
static json_t *rep(const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * n] = '\0';
    json_t *j = json_stringn_nocheck(s, ul * n);
    free(s);
    return j;
}

/* Make array `path` hold n copies of its first element. */
static void fill_array(json_t *rec, const char *path, size_t n)
{
    json_t *arr = get(rec, path);
    json_t *first = json_deep_copy(json_array_get(arr, 0));
    json_array_clear(arr);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_deep_copy(first));
    json_decref(first);
}

typedef struct outcome {
    int rc;
    pm_error err;
    const pm_template *tmpl;
    const char *status;
} outcome;

/* Run the stage on rec (consumed). */
static outcome run(json_t *rec)
{
    pm_job job;
    pm_job_init(&job);
    job.record = rec;
    outcome o;
    o.rc = pm_stage_validate.process(state, NULL, &job);
    o.err = job.err;
    o.tmpl = job.tmpl;
    o.status = job.status;
    pm_job_free(&job);
    return o;
}

#define ACCEPTS(rec) expect_ok((rec), __LINE__)
#define REJECTS(rec, code, field) expect_reject((rec), (code), (field), __LINE__)

static outcome expect_ok(json_t *rec, int line)
{
    outcome o = run(rec);
    cr_assert_eq(o.rc, 0, "line %d: expected success, got %s at %s: %s", line, o.err.reason,
                 o.err.field, o.err.message);
    cr_assert_not_null(o.tmpl, "line %d", line);
    cr_assert_not_null(o.status, "line %d", line);
    return o;
}

static outcome expect_reject(json_t *rec, const char *code, const char *field, int line)
{
    outcome o = run(rec);
    cr_assert_eq(o.rc, -1, "line %d: expected reject %s at %s, got success", line, code, field);
    cr_assert_eq(o.err.code, PM_ERR_REJECT, "line %d: %s", line, o.err.message);
    cr_assert_str_eq(o.err.reason, code, "line %d: reason %s (%s)", line, o.err.reason, o.err.message);
    cr_assert_str_eq(o.err.field, field, "line %d: field %s (%s)", line, o.err.field, o.err.message);
    cr_assert_neq(o.err.message[0], '\0', "line %d", line);
    cr_assert_null(o.tmpl, "line %d: tmpl set on reject", line);
    cr_assert_null(o.status, "line %d: status set on reject", line);
    return o;
}

/* Mutate a fresh valid record with one string value and expect code/field. */
static void str_rejects(const char *path, const char *value, const char *code, const char *field,
                        int line)
{
    json_t *r = valid();
    put_str(r, path, value);
    expect_reject(r, code, field, line);
}

static void str_accepts(const char *path, const char *value, int line)
{
    json_t *r = valid();
    put_str(r, path, value);
    expect_ok(r, line);
}

#define STR_REJECTS(path, value, code, field) str_rejects((path), (value), (code), (field), __LINE__)
#define STR_ACCEPTS(path, value) str_accepts((path), (value), __LINE__)

/* ------------------------------------------------------------------ */
/* the valid record, status, template                                 */
/* ------------------------------------------------------------------ */

Test(validate, valid_record_is_active_with_template)
{
    outcome o = ACCEPTS(valid());
    cr_assert_str_eq(o.status, "active");
    cr_assert_eq(o.tmpl, pm_template_set_find(ctx.templates, "stadium"));
    cr_assert_str_eq(o.tmpl->id, "stadium");
}

Test(validate, valid_record_is_what_decode_produces)
{
    /* VALID is exactly decode's normalized form of itself: the mutations
       below start from a tree the real pipeline would hand over. */
    pm_config *cfg = pm_config_create();
    cr_assert_not_null(cfg);
    pm_context dctx;
    memset(&dctx, 0, sizeof dctx);
    dctx.config = cfg;
    dctx.fixed_now = -1;
    void *dstate;
    pm_error err;
    cr_assert_eq(pm_stage_decode.create(&dctx, &dstate, &err), 0, "decode create: %s", err.message);
    pm_job job;
    pm_job_init(&job);
    cr_assert_eq(pm_buf_append(&job.raw, VALID, strlen(VALID)), 0);
    cr_assert_eq(pm_stage_decode.process(dstate, NULL, &job), 0, "decode: %s at %s", job.err.message,
                 job.err.field);
    json_t *want = valid();
    cr_assert(json_equal(job.record, want), "decode normalizes VALID differently");
    json_decref(want);
    cr_assert_eq(pm_stage_validate.process(state, NULL, &job), 0, "%s", job.err.message);
    cr_assert_str_eq(job.status, "active");
    pm_job_free(&job);
    pm_stage_decode.destroy(dstate);
    pm_config_destroy(cfg);
}

Test(validate, minimal_record_nulls_and_empty_arrays)
{
    json_t *r = valid();
    const char *nullable[] = {"event.event_id", "event.venue_address", "event.doors_open", "event.end",
                              "attendee.holder_name", "attendee.seat", "attendee.row",
                              "attendee.section", "attendee.gate", "attendee.ticket_type",
                              "attendee.ticket_number", "attendee.confirmation_code",
                              "attendee.face_value", "barcode.alt_text", "relevant_date",
                              "expiration_date", "locations[0].altitude",
                              "locations[0].relevant_text", "beacons[0].major", "beacons[0].minor",
                              "beacons[0].relevant_text"};
    for (size_t i = 0; i < sizeof nullable / sizeof nullable[0]; i++)
        put(r, nullable[i], json_null());
    ACCEPTS(r);
    r = valid();
    put(r, "pass_group_ids", json_array());
    put(r, "locations", json_array());
    put(r, "beacons", json_array());
    put(r, "custom_fields", json_array());
    put(r, "metadata", json_object());
    ACCEPTS(r);
}

Test(validate, action_maps_to_status)
{
    static const char *map[][2] = {{"ISSUE", "active"}, {"UPDATE", "active"}, {"VOID", "voided"},
                                   {"EXPIRE", "expired"}, {"REDEEM", "redeemed"}};
    for (size_t i = 0; i < 5; i++) {
        json_t *r = valid();
        put_str(r, "action", map[i][0]);
        outcome o = ACCEPTS(r);
        cr_assert_str_eq(o.status, map[i][1], "%s", map[i][0]);
    }
    STR_REJECTS("action", "DELETE", "action.unknown", "action");
    STR_REJECTS("action", "issue", "action.unknown", "action");
}

Test(validate, template_unknown_and_format)
{
    STR_REJECTS("template_id", "nosuch", "template.unknown", "template_id");
    STR_REJECTS("template_id", "Stadium", "template.unknown", "template_id");
    STR_REJECTS("template_id", "../stadium", "template.format", "template_id");
    STR_REJECTS("template_id", "", "template.format", "template_id");
    json_t *r = valid();
    put(r, "template_id", rep("t", 65));
    REJECTS(r, "template.format", "template_id");
    /* 64 characters is a valid id, just not a loaded template. */
    r = valid();
    put(r, "template_id", rep("t", 64));
    outcome o = REJECTS(r, "template.unknown", "template_id");
    cr_assert(strstr(o.err.message, "loaded") != NULL, "%s", o.err.message);
}

Test(validate, create_needs_templates)
{
    pm_context bare;
    memset(&bare, 0, sizeof bare);
    void *st = (void *)1;
    pm_error err;
    cr_assert_eq(pm_stage_validate.create(&bare, &st, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    cr_assert_null(st);
}

/* ------------------------------------------------------------------ */
/* identifiers                                                        */
/* ------------------------------------------------------------------ */

Test(validate, serial_number)
{
    json_t *r = valid();
    put(r, "serial_number", rep("S", 64));
    ACCEPTS(r);
    r = valid();
    put(r, "serial_number", rep("S", 65));
    REJECTS(r, "serial.format", "serial_number");
    STR_ACCEPTS("serial_number", "a");
    STR_ACCEPTS("serial_number", "Az09._-");
    STR_REJECTS("serial_number", "", "serial.format", "serial_number");
    STR_REJECTS("serial_number", "a b", "serial.format", "serial_number");
    STR_REJECTS("serial_number", "a/b", "serial.format", "serial_number");
    STR_REJECTS("serial_number", "caf\xc3\xa9", "serial.format", "serial_number");
}

Test(validate, pass_group_ids)
{
    json_t *r = valid(), *arr = json_array();
    char id[16];
    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof id, "g%d", i);
        json_array_append_new(arr, json_string(id));
    }
    put(r, "pass_group_ids", json_deep_copy(arr));
    ACCEPTS(r);
    json_array_append_new(arr, json_string("g16"));
    r = valid();
    put(r, "pass_group_ids", arr);
    REJECTS(r, "pass_group.count", "pass_group_ids");

    r = valid();
    json_array_append_new(get(r, "pass_group_ids"), json_string("bad id"));
    REJECTS(r, "pass_group.format", "pass_group_ids[2]");
    r = valid();
    json_array_append_new(get(r, "pass_group_ids"), rep("g", 65));
    REJECTS(r, "pass_group.format", "pass_group_ids[2]");
    r = valid();
    json_array_append_new(get(r, "pass_group_ids"), rep("g", 64));
    ACCEPTS(r);
    r = valid();
    json_array_append_new(get(r, "pass_group_ids"), json_string("vip.section-a"));
    outcome o = REJECTS(r, "pass_group.duplicate", "pass_group_ids[2]");
    cr_assert(strstr(o.err.message, "pass_group_ids[1]") != NULL, "%s", o.err.message);
}

/* ------------------------------------------------------------------ */
/* UTF-8 and control characters                                       */
/* ------------------------------------------------------------------ */

Test(validate, utf8_invalid_everywhere)
{
    static const struct { const char *bytes; size_t len; } bad[] = {
        {"ab\xc3\x28", 4},         /* bad continuation */
        {"\xc0\xaf", 2},           /* overlong '/' */
        {"\xe0\x80\xaf", 3},       /* overlong, 3 bytes */
        {"\xed\xa0\x80", 3},       /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4},   /* U+110000 */
        {"\xe2\x82", 2},           /* truncated */
        {"\xff", 1},
        {"\x80", 1},               /* lone continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *r = valid();
        put_bytes(r, "event.name", bad[i].bytes, bad[i].len);
        REJECTS(r, "utf8.invalid", "event.name");
    }
    static const char *paths[] = {"serial_number", "template_id", "pass_group_ids[1]",
                                  "event.venue_address", "event.time_zone", "event.start",
                                  "attendee.seat", "attendee.face_value.currency", "barcode.message",
                                  "barcode.alt_text", "locations[0].relevant_text",
                                  "beacons[0].proximity_uuid", "expiration_date",
                                  "custom_fields[1].key", "custom_fields[1].label",
                                  "custom_fields[1].value", "metadata.channel"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        json_t *r = valid();
        put_bytes(r, paths[i], "x\xed\xbf\xbfy", 5);
        REJECTS(r, "utf8.invalid", paths[i]);
    }
    /* Metadata keys are strings too; the field is the map. */
    json_t *r = valid();
    json_object_setn_new_nocheck(get(r, "metadata"), "k\xfe", 2, json_string("v"));
    REJECTS(r, "utf8.invalid", "metadata");
}

Test(validate, utf8_valid_multibyte_accepted)
{
    /* 2, 3 and 4-byte sequences up to U+10FFFF. */
    STR_ACCEPTS("event.name", "Caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\x9f \xf4\x8f\xbf\xbf");
    STR_ACCEPTS("metadata.channel", "\xe6\x97\xa5\xe6\x9c\xac");
}

Test(validate, control_characters)
{
    json_t *r = valid();
    put_bytes(r, "event.name", "Sum\0mer", 7);
    outcome o = REJECTS(r, "text.control", "event.name");
    cr_assert(strstr(o.err.message, "U+0000") != NULL, "%s", o.err.message);
    STR_REJECTS("event.name", "Summer\tFinals", "text.control", "event.name");
    STR_REJECTS("event.name", "Summer\nFinals", "text.control", "event.name");
    STR_REJECTS("attendee.seat", "1\x7f", "text.control", "attendee.seat");
    STR_REJECTS("attendee.holder_name", "Ada\xc2\x85", "text.control", "attendee.holder_name"); /* C1 NEL */
    STR_REJECTS("custom_fields[0].label", "a\x1b[31m", "text.control", "custom_fields[0].label");
    STR_REJECTS("event.start", "2027-06-12T19:30:00\x01+01:00", "text.control", "event.start");
    /* Free text: tab and newline are fine, other controls are not. */
    STR_ACCEPTS("event.venue_address", "1 Stadium Way\n\tLondon");
    STR_ACCEPTS("locations[0].relevant_text", "Welcome\nto the stadium");
    STR_ACCEPTS("beacons[0].relevant_text", "Gate\tC");
    STR_ACCEPTS("custom_fields[0].value", "Lot B\nLevel 2");
    STR_ACCEPTS("metadata.channel", "web\tmobile");
    STR_ACCEPTS("barcode.message", "line1\nline2");
    STR_REJECTS("event.venue_address", "1 Stadium Way\r\nLondon", "text.control", "event.venue_address");
    STR_REJECTS("custom_fields[1].value", "a\x07", "text.control", "custom_fields[1].value");
    r = valid();
    put_bytes(r, "metadata.channel", "w\0b", 3);
    REJECTS(r, "text.control", "metadata.channel");
    r = valid();
    json_object_setn_new_nocheck(get(r, "metadata"), "k\0ey", 4, json_string("v"));
    REJECTS(r, "text.control", "metadata");
    r = valid();
    json_object_set_new(get(r, "metadata"), "k\tey", json_string("v"));
    REJECTS(r, "text.control", "metadata");
}

Test(validate, message_quotes_and_escapes_found_value)
{
    json_t *r = valid();
    put_bytes(r, "serial_number", "ab\x01\"\\", 5);
    outcome o = REJECTS(r, "text.control", "serial_number");
    cr_assert_str_eq(o.err.message,
                     "serial_number: expected no control characters, found U+0001 at byte 2 of "
                     "\"ab\\x01\\\"\\\\\"");
    /* Long values are cut at 40 bytes, on a character boundary. */
    r = valid();
    put(r, "attendee.seat", rep("\xc3\xa9", 33));
    o = REJECTS(r, "field.too_long", "attendee.seat");
    char want[256];
    char cut[128] = "";
    for (int i = 0; i < 20; i++)
        strcat(cut, "\xc3\xa9");
    snprintf(want, sizeof want, "attendee.seat: expected at most 32 characters, found 33: \"%s\"...", cut);
    cr_assert_str_eq(o.err.message, want);
    /* Invalid bytes are shown as \xNN. */
    r = valid();
    put_bytes(r, "event.name", "ok\xff", 3);
    o = REJECTS(r, "utf8.invalid", "event.name");
    cr_assert_str_eq(o.err.message,
                     "event.name: expected valid UTF-8, found byte 0xFF at byte 2 of \"ok\\xFF\"");
}

/* ------------------------------------------------------------------ */
/* sizes                                                              */
/* ------------------------------------------------------------------ */

static void limit_chars(const char *path, size_t max, int line)
{
    json_t *r = valid();
    put(r, path, rep("\xc3\xa9", max)); /* characters, not bytes */
    expect_ok(r, line);
    r = valid();
    put(r, path, rep("a", max + 1));
    expect_reject(r, "field.too_long", path, line);
}

#define LIMIT_CHARS(path, max) limit_chars((path), (max), __LINE__)

Test(validate, field_sizes)
{
    LIMIT_CHARS("event.event_id", 128);
    LIMIT_CHARS("event.name", 200);
    LIMIT_CHARS("event.venue_title", 200);
    LIMIT_CHARS("event.venue_address", 500);
    LIMIT_CHARS("attendee.holder_name", 200);
    LIMIT_CHARS("attendee.seat", 32);
    LIMIT_CHARS("attendee.row", 32);
    LIMIT_CHARS("attendee.section", 64);
    LIMIT_CHARS("attendee.gate", 64);
    LIMIT_CHARS("attendee.ticket_type", 64);
    LIMIT_CHARS("attendee.ticket_number", 64);
    LIMIT_CHARS("attendee.confirmation_code", 64);
    LIMIT_CHARS("barcode.alt_text", 128);
    LIMIT_CHARS("locations[0].relevant_text", 256);
    LIMIT_CHARS("beacons[0].relevant_text", 256);
    LIMIT_CHARS("custom_fields[1].label", 64);
    LIMIT_CHARS("custom_fields[1].value", 256);
}

Test(validate, required_text_not_empty)
{
    STR_REJECTS("event.name", "", "field.empty", "event.name");
    STR_REJECTS("event.name", "   ", "field.empty", "event.name");
    STR_REJECTS("event.venue_title", "", "field.empty", "event.venue_title");
    STR_REJECTS("custom_fields[1].label", "", "field.empty", "custom_fields[1].label");
    STR_ACCEPTS("event.name", "X");
    /* Optional texts may be empty. */
    STR_ACCEPTS("attendee.seat", "");
    STR_ACCEPTS("custom_fields[1].value", "");
}

/* ------------------------------------------------------------------ */
/* timestamps                                                         */
/* ------------------------------------------------------------------ */

Test(validate, timestamps_format)
{
    STR_ACCEPTS("event.start", "2027-06-12T19:30:00Z");
    STR_ACCEPTS("event.start", "2027-06-12t19:30:00z");
    STR_ACCEPTS("event.start", "2027-06-12T19:30:00.123456+01:00");
    STR_ACCEPTS("relevant_date", "2027-06-12T17:00:00+14:00");
    STR_ACCEPTS("relevant_date", "2027-06-12T17:00:00-14:00");
    STR_ACCEPTS("relevant_date", "2027-06-12T23:59:59-00:00");
    static const char *bad[] = {
        "2027-06-12 19:30:00Z",       /* space separator */
        "2027-06-12T19:30:00",        /* no offset */
        "2027-06-12T19:30Z",          /* no seconds */
        "2027-06-12T19:30:00.Z",      /* empty fraction */
        "2027-06-12T19:30:00+0100",   /* offset without colon */
        "2027-06-12T19:30:00+01:00 ", /* trailing space */
        "27-06-12T19:30:00Z",
        "2027-6-12T19:30:00Z",
        "2027-06-12",
        "",
        "2027-06-12T24:00:00Z",       /* hour 24 */
        "2027-06-12T23:60:00Z",       /* minute 60 */
        "2027-06-12T23:59:60Z",       /* leap second: rejected */
        "2027-06-12T19:30:00+14:01",  /* offset beyond +-14:00 */
        "2027-06-12T19:30:00-15:00",
        "2027-06-12T19:30:00+01:60",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        STR_REJECTS("relevant_date", bad[i], "time.format", "relevant_date");
    STR_REJECTS("event.start", "tomorrow", "time.format", "event.start");
    STR_REJECTS("event.doors_open", "18:00", "time.format", "event.doors_open");
    STR_REJECTS("event.end", "2027-06-12T22:00:00", "time.format", "event.end");
    STR_REJECTS("expiration_date", "2027-06-13T06:00:00+1:00", "time.format", "expiration_date");
}

Test(validate, timestamps_calendar)
{
    /* 2028 is a leap year, 2027 and 2100 are not, 2000 is. */
    json_t *r = valid();
    put_str(r, "event.doors_open", "2028-02-29T18:00:00Z");
    put_str(r, "event.start", "2028-02-29T19:00:00Z");
    put_str(r, "event.end", "2028-02-29T22:00:00Z");
    put_str(r, "expiration_date", "2028-03-01T06:00:00Z"); /* not before the start */
    ACCEPTS(r);
    STR_ACCEPTS("relevant_date", "2000-02-29T00:00:00Z");
    STR_REJECTS("event.start", "2027-02-29T19:00:00Z", "time.invalid_date", "event.start");
    STR_REJECTS("expiration_date", "2100-02-29T00:00:00Z", "time.invalid_date", "expiration_date");
    STR_REJECTS("relevant_date", "2027-13-01T00:00:00Z", "time.invalid_date", "relevant_date");
    STR_REJECTS("relevant_date", "2027-00-10T00:00:00Z", "time.invalid_date", "relevant_date");
    STR_REJECTS("relevant_date", "2027-04-31T00:00:00Z", "time.invalid_date", "relevant_date");
    STR_REJECTS("relevant_date", "2027-06-00T00:00:00Z", "time.invalid_date", "relevant_date");
    STR_REJECTS("relevant_date", "0000-01-01T00:00:00Z", "time.invalid_date", "relevant_date");
    STR_ACCEPTS("relevant_date", "2027-12-31T23:59:59Z");
}

Test(validate, event_time_order)
{
    /* end == start is fine; one second before is not. */
    STR_ACCEPTS("event.end", "2027-06-12T19:30:00+01:00");
    STR_REJECTS("event.end", "2027-06-12T19:29:59+01:00", "event.end_before_start", "event.end");
    /* Offsets are honoured: 18:29:59Z is 19:29:59+01:00. */
    STR_REJECTS("event.end", "2027-06-12T18:29:59Z", "event.end_before_start", "event.end");
    STR_ACCEPTS("event.end", "2027-06-12T18:30:00Z");
    /* doors == start fine, later not. */
    STR_ACCEPTS("event.doors_open", "2027-06-12T19:30:00+01:00");
    STR_REJECTS("event.doors_open", "2027-06-12T18:30:01Z", "event.doors_after_start", "event.doors_open");
    STR_ACCEPTS("event.doors_open", "2027-06-12T20:30:00+02:00");
    /* Fields required by the schema. */
    json_t *r = valid();
    put(r, "event.start", json_null());
    REJECTS(r, "schema.type", "event.start");
}

Test(validate, expiration_not_before_start_for_issue_and_update)
{
    /* equal to the start is fine, one second before is not (offsets honoured) */
    STR_ACCEPTS("expiration_date", "2027-06-12T19:30:00+01:00");
    STR_REJECTS("expiration_date", "2027-06-12T19:29:59+01:00", "expiration.before_start",
                "expiration_date");
    STR_REJECTS("expiration_date", "2027-06-12T18:29:59Z", "expiration.before_start",
                "expiration_date");
    const char *actions[] = {"ISSUE", "UPDATE", "VOID", "EXPIRE", "REDEEM"};
    for (size_t i = 0; i < 5; i++) {
        json_t *r = valid();
        put_str(r, "action", actions[i]);
        put_str(r, "expiration_date", "2027-01-01T00:00:00Z");
        if (i < 2) {
            outcome o = REJECTS(r, "expiration.before_start", "expiration_date");
            cr_assert(strstr(o.err.message, "2027-06-12T19:30:00+01:00"), "%s", o.err.message);
        } else {
            /* voiding, expiring or redeeming a pass may date its end in the past */
            ACCEPTS(r);
        }
    }
    json_t *r = valid();
    put(r, "expiration_date", json_null());
    ACCEPTS(r);
}

/* ------------------------------------------------------------------ */
/* time zones                                                         */
/* ------------------------------------------------------------------ */

Test(validate, time_zone)
{
    STR_ACCEPTS("event.time_zone", "America/Argentina/Buenos_Aires");
    STR_ACCEPTS("event.time_zone", "UTC");            /* link */
    STR_ACCEPTS("event.time_zone", "Etc/GMT+5");
    STR_ACCEPTS("event.time_zone", "Asia/Kolkata");
    STR_REJECTS("event.time_zone", "Europe/Lundon", "time_zone.unknown", "event.time_zone");
    STR_REJECTS("event.time_zone", "europe/london", "time_zone.unknown", "event.time_zone");
    STR_REJECTS("event.time_zone", "", "time_zone.unknown", "event.time_zone");
    STR_REJECTS("event.time_zone", "+01:00", "time_zone.unknown", "event.time_zone");
    STR_REJECTS("event.time_zone", "../../../etc/passwd", "time_zone.unknown", "event.time_zone");
    STR_REJECTS("event.time_zone", "/usr/share/zoneinfo/UTC", "time_zone.unknown", "event.time_zone");
    STR_REJECTS("event.time_zone", "tzdata.zi", "time_zone.unknown", "event.time_zone");
    STR_REJECTS("event.time_zone", "Europe", "time_zone.unknown", "event.time_zone");
    json_t *r = valid();
    put_bytes(r, "event.time_zone", "UTC\0x", 5);
    REJECTS(r, "text.control", "event.time_zone");
}

/* ------------------------------------------------------------------ */
/* money                                                              */
/* ------------------------------------------------------------------ */

Test(validate, money_cap_is_in_the_schema_documentation)
{
    /* the cap validate applies is the one the schema's doc states */
    json_t *def = json_loads(pm_schema_pass_request_json, 0, NULL);
    cr_assert_not_null(def);
    char *text = json_dumps(def, JSON_COMPACT);
    const char *at = strstr(text, "\"amount_micros\"");
    cr_assert_not_null(at);
    const char *doc = strstr(at, "\"doc\"");
    cr_assert_not_null(doc);
    char cap[32];
    snprintf(cap, sizeof cap, "%lld", (long long)PM_MONEY_MAX_MICROS);
    const char *end = strchr(doc + 7, '"');
    cr_assert(strstr(doc, cap) && strstr(doc, cap) < end, "doc: %.*s", (int)(end - doc), doc);
    const char *code = strstr(doc, "money.too_large");
    cr_assert(code && code < end, "the doc names the reject code");
    free(text);
    json_decref(def);
}

Test(validate, money)
{
    json_t *r = valid();
    put(r, "attendee.face_value.amount_micros", json_integer(0));
    ACCEPTS(r);
    r = valid();
    put(r, "attendee.face_value.amount_micros", json_integer(1000000000000000LL));
    ACCEPTS(r);
    r = valid();
    put(r, "attendee.face_value.amount_micros", json_integer(1000000000000001LL));
    REJECTS(r, "money.too_large", "attendee.face_value.amount_micros");
    r = valid();
    put(r, "attendee.face_value.amount_micros", json_integer(-1));
    REJECTS(r, "money.negative", "attendee.face_value.amount_micros");
    r = valid();
    put(r, "attendee.face_value.amount_micros", json_real(1.5));
    REJECTS(r, "schema.type", "attendee.face_value.amount_micros");

    STR_ACCEPTS("attendee.face_value.currency", "USD");
    STR_ACCEPTS("attendee.face_value.currency", "EUR");
    STR_ACCEPTS("attendee.face_value.currency", "JPY");
    STR_REJECTS("attendee.face_value.currency", "GPB", "money.currency", "attendee.face_value.currency");
    STR_REJECTS("attendee.face_value.currency", "EURO", "money.currency", "attendee.face_value.currency");
    STR_REJECTS("attendee.face_value.currency", "", "money.currency", "attendee.face_value.currency");
    STR_REJECTS("attendee.face_value.currency", "GB", "money.currency", "attendee.face_value.currency");
    r = valid();
    put_str(r, "attendee.face_value.currency", "gbp");
    outcome o = REJECTS(r, "money.currency", "attendee.face_value.currency");
    cr_assert(strstr(o.err.message, "uppercase") && strstr(o.err.message, "\"GBP\""), "%s", o.err.message);
}

Test(validate, currency_table)
{
    cr_assert(pm_currency_is_active("GBP", 3));
    cr_assert(pm_currency_is_active("AED", 3)); /* first */
    cr_assert(pm_currency_is_active("ZWL", 3)); /* last */
    cr_assert(pm_currency_is_active("CHF", 3));
    cr_assert_not(pm_currency_is_active("GPB", 3));
    cr_assert_not(pm_currency_is_active("gbp", 3));
    cr_assert_not(pm_currency_is_active("DEM", 3)); /* withdrawn long ago */
    cr_assert_not(pm_currency_is_active("GBPX", 3 + 1));
    cr_assert_not(pm_currency_is_active("GB", 2));
}

/* ------------------------------------------------------------------ */
/* barcode                                                            */
/* ------------------------------------------------------------------ */

Test(validate, barcode)
{
    STR_ACCEPTS("barcode.format", "AZTEC");
    STR_ACCEPTS("barcode.format", "PDF417");
    STR_ACCEPTS("barcode.format", "CODE128");
    STR_REJECTS("barcode.format", "QR", "barcode.format", "barcode.format");
    STR_REJECTS("barcode.format", "qrcode", "barcode.format", "barcode.format");

    STR_ACCEPTS("barcode.message", "autogenerate");
    STR_ACCEPTS("barcode.message", "x");
    STR_REJECTS("barcode.message", "", "barcode.message", "barcode.message");
    json_t *r = valid();
    put(r, "barcode.message", rep("m", 512));
    ACCEPTS(r);
    r = valid();
    put(r, "barcode.message", rep("m", 513));
    REJECTS(r, "barcode.message", "barcode.message");
    /* 512 is bytes: 256 two-byte characters fit, 257 do not. */
    r = valid();
    put_str(r, "barcode.encoding", "utf-8");
    put(r, "barcode.message", rep("\xc3\xa9", 256));
    ACCEPTS(r);
    r = valid();
    put_str(r, "barcode.encoding", "utf-8");
    put(r, "barcode.message", rep("\xc3\xa9", 257));
    REJECTS(r, "barcode.message", "barcode.message");

    STR_ACCEPTS("barcode.encoding", "utf-8");
    STR_ACCEPTS("barcode.encoding", "UTF-8");
    STR_ACCEPTS("barcode.encoding", "ISO-8859-1");
    STR_REJECTS("barcode.encoding", "utf-16", "barcode.encoding", "barcode.encoding");
    STR_REJECTS("barcode.encoding", "latin1", "barcode.encoding", "barcode.encoding");
    STR_REJECTS("barcode.encoding", "", "barcode.encoding", "barcode.encoding");
}

Test(validate, barcode_latin1_charset)
{
    /* U+00FF is the last Latin-1 character; the euro sign is not Latin-1. */
    STR_ACCEPTS("barcode.message", "caf\xc3\xa9 \xc3\xbf");
    json_t *r = valid();
    put_str(r, "barcode.message", "10 \xe2\x82\xac");
    outcome o = REJECTS(r, "barcode.charset", "barcode.message");
    cr_assert(strstr(o.err.message, "U+20AC") != NULL, "%s", o.err.message);
    r = valid();
    put_str(r, "barcode.message", "10 \xe2\x82\xac");
    put_str(r, "barcode.encoding", "utf-8");
    ACCEPTS(r);
    r = valid();
    put_str(r, "barcode.message", "\xc4\x80"); /* U+0100 */
    REJECTS(r, "barcode.charset", "barcode.message");
}

/* ------------------------------------------------------------------ */
/* locations and beacons                                              */
/* ------------------------------------------------------------------ */

Test(validate, locations_count)
{
    json_t *r = valid();
    fill_array(r, "locations", 10);
    ACCEPTS(r);
    r = valid();
    fill_array(r, "locations", 11);
    REJECTS(r, "locations.count", "locations");
}

static void coord(const char *path, double d, const char *code, int line)
{
    json_t *r = valid();
    fill_array(r, "locations", 4);
    put(r, path, json_real(d));
    if (code)
        expect_reject(r, code, path, line);
    else
        expect_ok(r, line);
}

#define COORD_OK(path, d) coord((path), (d), NULL, __LINE__)
#define COORD_BAD(path, d, code) coord((path), (d), (code), __LINE__)

Test(validate, location_coordinates)
{
    COORD_OK("locations[3].latitude", 90.0);
    COORD_OK("locations[3].latitude", -90.0);
    COORD_BAD("locations[3].latitude", 90.0001, "location.latitude");
    COORD_BAD("locations[3].latitude", -90.0001, "location.latitude");
    COORD_OK("locations[3].longitude", 180.0);
    COORD_OK("locations[3].longitude", -180.0);
    COORD_BAD("locations[3].longitude", 180.5, "location.longitude");
    COORD_BAD("locations[0].longitude", -1e300, "location.longitude");
    json_t *r = valid();
    fill_array(r, "locations", 4);
    put(r, "locations[3].latitude", json_real(90.0001));
    outcome o = REJECTS(r, "location.latitude", "locations[3].latitude");
    cr_assert(strstr(o.err.message, "90.0001") != NULL, "%s", o.err.message);
    /* Integers are numbers too (JSON input may write 51). */
    r = valid();
    put(r, "locations[0].latitude", json_integer(51));
    ACCEPTS(r);
    r = valid();
    put(r, "locations[0].latitude", json_integer(91));
    REJECTS(r, "location.latitude", "locations[0].latitude");
    r = valid();
    put_str(r, "locations[0].latitude", "51.5");
    REJECTS(r, "schema.type", "locations[0].latitude");
    r = valid();
    put(r, "locations[0].altitude", json_integer(-400));
    ACCEPTS(r);
    r = valid();
    put_str(r, "locations[0].altitude", "high");
    REJECTS(r, "schema.type", "locations[0].altitude");
}

Test(validate, non_finite_numbers_cannot_reach_validate)
{
    /* location.altitude (and the finiteness half of latitude/longitude) is a
       guard: jansson refuses non-finite reals, so decode can never hand one
       over.  This pins the assumption the guard backs up. */
    cr_assert_null(json_real(INFINITY));
    cr_assert_null(json_real(NAN));
    json_t *j = json_real(1.0);
    cr_assert_eq(json_real_set(j, -INFINITY), -1);
    json_decref(j);
}

Test(validate, beacons)
{
    json_t *r = valid();
    fill_array(r, "beacons", 10);
    ACCEPTS(r);
    r = valid();
    fill_array(r, "beacons", 11);
    REJECTS(r, "beacons.count", "beacons");

    STR_ACCEPTS("beacons[0].proximity_uuid", "e2c56db5-dffb-48d2-b060-d0f5a71096e0");
    static const char *bad[] = {
        "E2C56DB5-DFFB-48D2-B060-D0F5A71096E",    /* 35 characters */
        "E2C56DB5-DFFB-48D2-B060-D0F5A71096E00",  /* 37 */
        "E2C56DB5DFFB-48D2-B060-D0F5A71096E0-",   /* dash misplaced */
        "E2C56DB5-DFFB-48D2-B060-D0F5A71096EG",   /* not hex */
        "{E2C56DB5-DFFB-48D2-B060-D0F5A71096E0}",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = valid();
        fill_array(r, "beacons", 2);
        put_str(r, "beacons[1].proximity_uuid", bad[i]);
        REJECTS(r, "beacon.uuid", "beacons[1].proximity_uuid");
    }

    static const struct { const char *path, *code; } ids[] = {
        {"beacons[0].major", "beacon.major"}, {"beacons[0].minor", "beacon.minor"}};
    for (size_t i = 0; i < 2; i++) {
        r = valid();
        put(r, ids[i].path, json_integer(0));
        ACCEPTS(r);
        r = valid();
        put(r, ids[i].path, json_integer(65535));
        ACCEPTS(r);
        r = valid();
        put(r, ids[i].path, json_integer(65536));
        REJECTS(r, ids[i].code, ids[i].path);
        r = valid();
        put(r, ids[i].path, json_integer(-1));
        REJECTS(r, ids[i].code, ids[i].path);
    }
}

/* ------------------------------------------------------------------ */
/* custom fields and metadata                                         */
/* ------------------------------------------------------------------ */

static json_t *custom_fields(size_t n)
{
    json_t *arr = json_array();
    char key[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof key, "k%zu", i);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "key", key, "label", "L", "value", "V"));
    }
    return arr;
}

Test(validate, custom_fields)
{
    json_t *r = valid();
    put(r, "custom_fields", custom_fields(10));
    ACCEPTS(r);
    r = valid();
    put(r, "custom_fields", custom_fields(11));
    REJECTS(r, "custom.count", "custom_fields");

    json_t *k32 = rep("k", 32);
    STR_ACCEPTS("custom_fields[1].key", json_string_value(k32));
    json_decref(k32);
    r = valid();
    put(r, "custom_fields[1].key", rep("k", 33));
    REJECTS(r, "custom.key", "custom_fields[1].key");
    STR_ACCEPTS("custom_fields[1].key", "Az09_-");
    STR_REJECTS("custom_fields[1].key", "bad key", "custom.key", "custom_fields[1].key");
    STR_REJECTS("custom_fields[1].key", "a.b", "custom.key", "custom_fields[1].key");
    STR_REJECTS("custom_fields[1].key", "", "custom.key", "custom_fields[1].key");
    r = valid();
    put_str(r, "custom_fields[1].key", "parking");
    outcome o = REJECTS(r, "custom.duplicate", "custom_fields[1].key");
    cr_assert(strstr(o.err.message, "custom_fields[0].key") != NULL, "%s", o.err.message);
    /* Keys are case-sensitive. */
    STR_ACCEPTS("custom_fields[1].key", "Parking");
}

static json_t *metadata(size_t n)
{
    json_t *obj = json_object();
    char key[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof key, "k%zu", i);
        json_object_set_new(obj, key, json_string("v"));
    }
    return obj;
}

Test(validate, metadata)
{
    json_t *r = valid();
    put(r, "metadata", metadata(32));
    ACCEPTS(r);
    r = valid();
    put(r, "metadata", metadata(33));
    REJECTS(r, "metadata.count", "metadata");

    json_t *k64 = rep("k", 64), *k65 = rep("k", 65);
    r = valid();
    json_object_set_new(get(r, "metadata"), json_string_value(k64), json_string("v"));
    ACCEPTS(r);
    r = valid();
    json_object_set_new(get(r, "metadata"), json_string_value(k65), json_string("v"));
    REJECTS(r, "metadata.too_long", "metadata");
    json_decref(k64);
    json_decref(k65);

    r = valid();
    put(r, "metadata.order_id", rep("v", 1024));
    ACCEPTS(r);
    r = valid();
    put(r, "metadata.order_id", rep("v", 1025));
    REJECTS(r, "metadata.too_long", "metadata.order_id");
    /* 1024 is bytes: 513 two-byte characters are 1026 bytes. */
    r = valid();
    put(r, "metadata.order_id", rep("\xc3\xa9", 513));
    REJECTS(r, "metadata.too_long", "metadata.order_id");
    r = valid();
    put(r, "metadata.order_id", json_integer(778899));
    REJECTS(r, "schema.type", "metadata.order_id");
}

/* ------------------------------------------------------------------ */
/* shape and order                                                    */
/* ------------------------------------------------------------------ */

Test(validate, shape_errors_are_rejects)
{
    json_t *r = valid();
    json_object_del(get(r, "event"), "name");
    REJECTS(r, "schema.missing", "event.name");
    r = valid();
    json_object_del(r, "metadata");
    REJECTS(r, "schema.missing", "metadata");
    r = valid();
    put(r, "event.venue_title", json_integer(3));
    REJECTS(r, "schema.type", "event.venue_title");
    r = valid();
    put(r, "locations[0]", json_string("here"));
    REJECTS(r, "schema.type", "locations[0]");
    r = valid();
    put(r, "pass_group_ids[0]", json_null());
    REJECTS(r, "schema.type", "pass_group_ids[0]");
    r = valid();
    put(r, "attendee.face_value", json_string("45 GBP"));
    REJECTS(r, "schema.type", "attendee.face_value");
    REJECTS(json_array(), "schema.type", "");
}

Test(validate, first_error_in_schema_order)
{
    /* Bad serial and bad currency: serial_number comes first. */
    json_t *r = valid();
    put_str(r, "serial_number", "bad serial");
    put_str(r, "attendee.face_value.currency", "GPB");
    REJECTS(r, "serial.format", "serial_number");
    /* Bad latitude and bad time zone: event comes before locations. */
    r = valid();
    put(r, "locations[0].latitude", json_real(100));
    put_str(r, "event.time_zone", "Mars/Olympus");
    REJECTS(r, "time_zone.unknown", "event.time_zone");
    /* Unknown template is reported at template_id, before later fields. */
    r = valid();
    put_str(r, "template_id", "nosuch");
    put_str(r, "event.name", "");
    REJECTS(r, "template.unknown", "template_id");
    /* Within an array, the count comes before the elements. */
    r = valid();
    fill_array(r, "locations", 11);
    put(r, "locations[0].latitude", json_real(100));
    REJECTS(r, "locations.count", "locations");
    /* Custom fields before metadata. */
    r = valid();
    put_str(r, "custom_fields[0].key", "x y");
    put(r, "metadata", metadata(40));
    REJECTS(r, "custom.key", "custom_fields[0].key");
}

Test(validate, record_is_not_modified)
{
    json_t *r = valid(), *copy = json_deep_copy(r);
    pm_job job;
    pm_job_init(&job);
    job.record = r;
    cr_assert_eq(pm_stage_validate.process(state, NULL, &job), 0, "%s", job.err.message);
    cr_assert(json_equal(job.record, copy));
    json_decref(copy);
    pm_job_free(&job);
}
