/*
 * test_manifest.c - the manifest and bundle stages on a hand-written
 * normalized record, checked with independent tools (sha1sum, sha256sum,
 * unzip, zipinfo, python3).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <zip.h>

#include "stages/bundle.h"
#include "engine/job.h"
#include "stages/manifest.h"
#include "record/schema.h"
#include "stages/stage.h"
#include "wallet/template.h"
#include "wallet/verify.h"
#include "core/rfc3339.h"
#include "test_util.h"

#define NOW 1809172800 /* 2027-05-01T12:00:00Z */

static const char record_json[] =
    "{\"serial_number\": \"S-0001\", \"action\": \"ISSUE\", \"template_id\": \"stadium\","
    " \"pass_group_ids\": [],"
    " \"event\": {\"event_id\": \"ev1\", \"name\": \"Cup Final\", \"venue_title\": \"Wembley Stadium\","
    "   \"venue_address\": null, \"time_zone\": \"Europe/London\","
    "   \"doors_open\": \"2027-06-12T17:00:00+01:00\", \"start\": \"2027-06-12T19:45:00+01:00\","
    "   \"end\": null},"
    " \"attendee\": {\"holder_name\": \"Zoë ${event.name}\", \"seat\": \"12\", \"row\": \"F\","
    "   \"section\": \"114\", \"gate\": null, \"ticket_type\": \"Adult\", \"ticket_number\": \"T-99\","
    "   \"confirmation_code\": \"ABC123\","
    "   \"face_value\": {\"amount_micros\": 45000000, \"currency\": \"GBP\"}},"
    " \"barcode\": {\"format\": \"QRCODE\", \"message\": \"MSG-1\", \"alt_text\": null,"
    "   \"encoding\": \"iso-8859-1\"},"
    " \"locations\": [{\"latitude\": 51.556, \"longitude\": -0.2796, \"altitude\": null,"
    "   \"relevant_text\": \"Welcome to Wembley\"},"
    "   {\"latitude\": 51.5, \"longitude\": 0.0, \"altitude\": 12.5, \"relevant_text\": null}],"
    " \"beacons\": [{\"proximity_uuid\": \"E2C56DB5-DFFB-48D2-B060-D0F5A71096E0\", \"major\": 1,"
    "   \"minor\": null, \"relevant_text\": null}],"
    " \"relevant_date\": null, \"expiration_date\": null,"
    " \"custom_fields\": [{\"key\": \"parking\", \"label\": \"Parking\", \"value\": \"Lot B\"},"
    "   {\"key\": \"door\", \"label\": \"Door\", \"value\": \"7\"}],"
    " \"metadata\": {\"order_id\": \"ORDER-SECRET-42\"}}";

static const char barcodes_json[] =
    "{\"barcodes\": [{\"format\": \"PKBarcodeFormatQR\", \"message\": \"MSG-1\","
    " \"messageEncoding\": \"iso-8859-1\"}],"
    " \"barcode\": {\"format\": \"PKBarcodeFormatQR\", \"message\": \"MSG-1\","
    " \"messageEncoding\": \"iso-8859-1\"}}";

static pm_template *tmpl;
static char *tmp;

/* One stage with its state and one worker's scratch. */
typedef struct stage_run {
    const pm_stage *stage;
    void *state, *scratch;
} stage_run;

static stage_run manifest_run, bundle_run;

static void stage_open(stage_run *r, const pm_stage *stage)
{
    pm_context ctx;
    pm_error err;
    memset(&ctx, 0, sizeof ctx);
    r->stage = stage;
    cr_assert_eq(stage->create(&ctx, &r->state, &err), 0, "%s", err.message);
    cr_assert_eq(stage->worker_create(r->state, &r->scratch, &err), 0, "%s", err.message);
}

static void stage_close(stage_run *r)
{
    r->stage->worker_destroy(r->scratch);
    r->stage->destroy(r->state);
}

static void setup(void)
{
    pm_error err;
    cr_assert_eq(pm_schema_init(&err), 0, "%s", err.message);
    cr_assert_eq(pm_template_load(pmt_src("config/templates/stadium"), &tmpl, &err), 0, "%s",
                 err.message);
    stage_open(&manifest_run, &pm_stage_manifest);
    stage_open(&bundle_run, &pm_stage_bundle);
    tmp = pmt_tmpdir("manifest");
    cr_assert_not_null(tmp);
}

static void teardown(void)
{
    stage_close(&manifest_run);
    stage_close(&bundle_run);
    pm_template_destroy(tmpl);
    pmt_rmrf(tmp);
    free(tmp);
}

TestSuite(manifest, .init = setup, .fini = teardown);

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    cr_assert_not_null(v, "%s", jerr.text);
    return v;
}

/* A job as decode/validate/barcode/sign leave it. */
static void job_fill(pm_job *job, const char *action, int64_t now)
{
    pm_job_init(job);
    job->record = parse(record_json);
    if (action)
        json_object_set_new(job->record, "action", json_string(action));
    job->serial = json_string_value(json_object_get(job->record, "serial_number"));
    job->tmpl = tmpl;
    job->status = "active";
    job->barcodes = parse(barcodes_json);
    job->now = now;
}

static void run_manifest(pm_job *job)
{
    int rc = manifest_run.stage->process(manifest_run.state, manifest_run.scratch, job);
    cr_assert_eq(rc, 0, "%s", job->err.message);
}

static void run_bundle(pm_job *job)
{
    /* A dummy DER-ish signature: bundle only carries it. */
    pm_buf_reset(&job->signature);
    for (int i = 0; i < 700; i++) {
        uint8_t b = (uint8_t)(i * 37 + 11);
        pm_buf_append(&job->signature, &b, 1);
    }
    int rc = bundle_run.stage->process(bundle_run.state, bundle_run.scratch, job);
    cr_assert_eq(rc, 0, "%s", job->err.message);
}

static json_t *pass_of(pm_job *job)
{
    return parse(pm_buf_cstr(&job->pass_json));
}

static json_t *fields(json_t *pass, const char *which)
{
    return json_object_get(json_object_get(pass, "eventTicket"), which);
}

/* The field with this key in an array, or NULL. */
static json_t *field(json_t *arr, const char *key)
{
    size_t i;
    json_t *f;
    json_array_foreach(arr, i, f)
        if (strcmp(json_string_value(json_object_get(f, "key")), key) == 0)
            return f;
    return NULL;
}

static const char *field_value(json_t *pass, const char *which, const char *key)
{
    json_t *f = field(fields(pass, which), key);
    cr_assert_not_null(f, "no field %s in %s", key, which);
    return json_string_value(json_object_get(f, "value"));
}

static void write_buf(const char *name, const pm_buf *b, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", tmp, name);
    cr_assert_eq(pmt_write_file(path, b->data, b->len), 0);
}

Test(manifest, pass_json_has_the_record)
{
    pm_job job;
    job_fill(&job, NULL, NOW);
    run_manifest(&job);
    json_t *pass = pass_of(&job);

    /* Skeleton first, in file order, then the per-pass keys. */
    static const char *const keys[] = {
        "formatVersion", "passTypeIdentifier", "teamIdentifier", "organizationName",
        "description", "logoText", "foregroundColor", "backgroundColor", "labelColor",
        "eventTicket", "serialNumber", "barcodes", "barcode", "relevantDate", "locations",
        "beacons",
    };
    size_t n = 0;
    for (void *it = json_object_iter(pass); it; it = json_object_iter_next(pass, it), n++) {
        cr_assert_lt(n, sizeof keys / sizeof *keys, "extra key %s", json_object_iter_key(it));
        cr_assert_str_eq(json_object_iter_key(it), keys[n]);
    }
    cr_assert_eq(n, sizeof keys / sizeof *keys);

    cr_assert_str_eq(json_string_value(json_object_get(pass, "serialNumber")), "S-0001");
    cr_assert_str_eq(json_string_value(json_object_get(pass, "passTypeIdentifier")),
                     "pass.dev.passmill.stadium");
    json_t *bc = parse(barcodes_json);
    cr_assert(json_equal(json_object_get(pass, "barcodes"), json_object_get(bc, "barcodes")));
    cr_assert(json_equal(json_object_get(pass, "barcode"), json_object_get(bc, "barcode")));
    json_decref(bc);
    cr_assert_str_eq(json_string_value(json_object_get(pass, "relevantDate")),
                     "2027-06-12T19:45:00+01:00");
    cr_assert_null(json_object_get(pass, "expirationDate"));
    cr_assert_null(json_object_get(pass, "voided"));
    cr_assert_null(json_object_get(pass, "userInfo"));

    cr_assert_str_eq(field_value(pass, "primaryFields", "event"), "Cup Final");
    cr_assert_str_eq(field_value(pass, "secondaryFields", "venue"), "Wembley Stadium");
    json_t *date = field(fields(pass, "secondaryFields"), "date");
    cr_assert_str_eq(json_string_value(json_object_get(date, "value")), "2027-06-12T19:45:00+01:00");
    cr_assert_str_eq(json_string_value(json_object_get(date, "dateStyle")), "PKDateStyleMedium");
    cr_assert(json_is_true(json_object_get(date, "ignoresTimeZone")));
    cr_assert_str_eq(field_value(pass, "auxiliaryFields", "seat"), "12");
    cr_assert_str_eq(field_value(pass, "auxiliaryFields", "row"), "F");
    cr_assert_str_eq(field_value(pass, "auxiliaryFields", "section"), "114");
    cr_assert_str_eq(field_value(pass, "auxiliaryFields", "ticket_type"), "Adult");
    /* Record text is inserted once, never expanded again. */
    cr_assert_str_eq(field_value(pass, "backFields", "holder"), "Zoë ${event.name}");
    cr_assert_str_eq(field_value(pass, "backFields", "doors"), "2027-06-12T17:00:00+01:00");
    cr_assert_str_eq(field_value(pass, "backFields", "terms"), "TERMS_TEXT");

    /* Null bindings: gate (the only header field) and venue address are gone. */
    cr_assert_eq(json_array_size(fields(pass, "headerFields")), 0);
    cr_assert_null(field(fields(pass, "backFields"), "address"));
    cr_assert_eq(json_array_size(fields(pass, "backFields")), 5 + 2);

    /* Custom fields come last on the back; no status field for an active pass. */
    json_t *back = fields(pass, "backFields");
    cr_assert_null(field(back, "status"));
    json_t *c1 = json_array_get(back, 5), *c2 = json_array_get(back, 6);
    cr_assert_str_eq(json_string_value(json_object_get(c1, "key")), "custom_parking");
    cr_assert_str_eq(json_string_value(json_object_get(c1, "label")), "Parking");
    cr_assert_str_eq(json_string_value(json_object_get(c1, "value")), "Lot B");
    cr_assert_str_eq(json_string_value(json_object_get(c2, "key")), "custom_door");

    /* Locations and beacons, exact bytes: optional keys only when set. */
    const char *text = pm_buf_cstr(&job.pass_json);
    cr_assert(strstr(text, "\"locations\":[{\"latitude\":51.556,\"longitude\":-0.2796,"
                           "\"relevantText\":\"Welcome to Wembley\"},"
                           "{\"latitude\":51.5,\"longitude\":0.0,\"altitude\":12.5}]"), "%s", text);
    cr_assert(strstr(text, "\"beacons\":[{\"proximityUUID\":\"E2C56DB5-DFFB-48D2-B060-D0F5A71096E0\","
                           "\"major\":1}]"), "%s", text);
    cr_assert(strstr(text, "\"Zoë ${event.name}\""), "UTF-8 unescaped: %s", text);
    /* metadata never reaches the pass. */
    cr_assert_null(strstr(text, "ORDER-SECRET-42"));
    cr_assert_null(strstr(text, "order_id"));
    /* Compact: no ": " or ", " separators. */
    cr_assert_null(strstr(text, "\": "));
    json_decref(pass);
    pm_job_free(&job);
}

Test(manifest, manifest_json_hashes_match_sha1sum)
{
    pm_job job;
    job_fill(&job, NULL, NOW);
    run_manifest(&job);
    char path[700];
    write_buf("pass.json", &job.pass_json, path, sizeof path);

    /* Expected manifest from sha1sum over the real files, built by the shell + python. */
    int st;
    char *expected = pmt_sh_out(&st,
        "cd '%s' && (cd '%s' && sha1sum $(find . -type f ! -name pass.json | sed 's|^\\./||' | sort)) && "
        "(cd '%s' && sha1sum pass.json)", tmp, pmt_src("config/templates/stadium"), tmp);
    cr_assert_eq(st, 0);
    json_t *m = parse(pm_buf_cstr(&job.manifest_json));
    size_t lines = 0;
    for (char *line = strtok(expected, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        char hex[41], name[300];
        cr_assert_eq(sscanf(line, "%40s %299s", hex, name), 2, "%s", line);
        json_t *v = json_object_get(m, name);
        cr_assert_not_null(v, "%s not in manifest", name);
        cr_assert_str_eq(json_string_value(v), hex, "%s: %s vs %s", name, json_string_value(v), hex);
    }
    free(expected);
    cr_assert_eq(lines, 9);
    cr_assert_eq(json_object_size(m), 9);

    /* Keys in byte order, compact form. */
    const char *prev = "";
    for (void *it = json_object_iter(m); it; it = json_object_iter_next(m, it)) {
        cr_assert_lt(strcmp(prev, json_object_iter_key(it)), 0, "%s after %s",
                     json_object_iter_key(it), prev);
        prev = json_object_iter_key(it);
    }
    const char *text = pm_buf_cstr(&job.manifest_json);
    cr_assert(strncmp(text, "{\"en.lproj/pass.strings\":\"", 26) == 0, "%s", text);
    cr_assert(strstr(text, "\",\"pass.json\":\""), "%s", text);
    json_decref(m);
    pm_job_free(&job);
}

Test(manifest, deterministic)
{
    pm_job a, b;
    job_fill(&a, NULL, NOW);
    job_fill(&b, NULL, NOW);
    run_manifest(&a);
    run_manifest(&b);
    run_manifest(&b); /* reused buffers give the same bytes */
    cr_assert_eq(a.pass_json.len, b.pass_json.len);
    cr_assert_eq(memcmp(a.pass_json.data, b.pass_json.data, a.pass_json.len), 0);
    cr_assert_eq(a.manifest_json.len, b.manifest_json.len);
    cr_assert_eq(memcmp(a.manifest_json.data, b.manifest_json.data, a.manifest_json.len), 0);
    pm_job_free(&a);
    pm_job_free(&b);
}

static void check_status(const char *action, const char *word, int voided)
{
    pm_job job;
    job_fill(&job, action, NOW);
    run_manifest(&job);
    json_t *pass = pass_of(&job);
    cr_assert_eq(json_is_true(json_object_get(pass, "voided")), voided, "%s", action);
    if (!voided)
        cr_assert_null(json_object_get(pass, "voided"));
    json_t *first = json_array_get(fields(pass, "backFields"), 0);
    if (word) {
        cr_assert_str_eq(json_string_value(json_object_get(first, "key")), "status");
        cr_assert_str_eq(json_string_value(json_object_get(first, "label")), "STATUS");
        cr_assert_str_eq(json_string_value(json_object_get(first, "value")), word);
    } else {
        cr_assert_null(field(fields(pass, "backFields"), "status"), "%s", action);
    }
    if (strcmp(action, "EXPIRE") == 0)
        cr_assert_str_eq(json_string_value(json_object_get(pass, "expirationDate")),
                         "2027-05-01T12:00:00Z");
    else
        cr_assert_null(json_object_get(pass, "expirationDate"), "%s", action);
    json_decref(pass);
    pm_job_free(&job);
}

Test(manifest, actions)
{
    check_status("ISSUE", NULL, 0);
    check_status("UPDATE", NULL, 0);
    check_status("VOID", "VOIDED", 1);
    check_status("REDEEM", "REDEEMED", 1);
    check_status("EXPIRE", "EXPIRED", 0);
}

Test(manifest, record_dates)
{
    pm_job job;
    job_fill(&job, NULL, NOW);
    json_object_set_new(job.record, "relevant_date", json_string("2027-06-12T18:00:00+01:00"));
    json_object_set_new(job.record, "expiration_date", json_string("2027-06-13T02:00:00+01:00"));
    run_manifest(&job);
    json_t *pass = pass_of(&job);
    cr_assert_str_eq(json_string_value(json_object_get(pass, "relevantDate")),
                     "2027-06-12T18:00:00+01:00");
    cr_assert_str_eq(json_string_value(json_object_get(pass, "expirationDate")),
                     "2027-06-13T02:00:00+01:00");
    json_decref(pass);
    pm_job_free(&job);

    /* EXPIRE wins over the record's expiration_date: the pass expires now. */
    job_fill(&job, "EXPIRE", NOW + 61);
    json_object_set_new(job.record, "expiration_date", json_string("2027-06-13T02:00:00+01:00"));
    run_manifest(&job);
    pass = pass_of(&job);
    cr_assert_str_eq(json_string_value(json_object_get(pass, "expirationDate")),
                     "2027-05-01T12:01:01Z");
    json_decref(pass);
    pm_job_free(&job);
}

Test(manifest, no_locations_no_beacons_no_custom)
{
    pm_job job;
    job_fill(&job, NULL, NOW);
    json_object_set_new(job.record, "locations", json_array());
    json_object_set_new(job.record, "beacons", json_array());
    json_object_set_new(job.record, "custom_fields", json_array());
    run_manifest(&job);
    json_t *pass = pass_of(&job);
    cr_assert_null(json_object_get(pass, "locations"));
    cr_assert_null(json_object_get(pass, "beacons"));
    cr_assert_eq(json_array_size(fields(pass, "backFields")), 5);
    json_decref(pass);
    pm_job_free(&job);
}

/* A template whose skeleton exercises custom, numeric and embedded bindings. */
static pm_template *custom_template(void)
{
    char dir[700], path[800];
    snprintf(dir, sizeof dir, "%s/custom", tmp);
    cr_assert_eq(pmt_sh("cp -r '%s' '%s'", pmt_src("config/templates/stadium"), dir), 0);
    snprintf(path, sizeof path, "%s/pass.json", dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    cr_assert_not_null(root);
    json_t *style = json_object_get(root, "eventTicket");
    json_object_set_new(root, "logoText", json_string("${attendee.gate}Demo"));
    json_array_append_new(json_object_get(style, "auxiliaryFields"),
        json_pack("{s:s, s:s, s:s}", "key", "price", "label", "PRICE", "value",
                  "${attendee.face_value.amount_micros}"));
    json_array_append_new(json_object_get(style, "auxiliaryFields"),
        json_pack("{s:s, s:s, s:s}", "key", "price_text", "label", "PRICE", "value",
                  "${attendee.face_value.currency} ${attendee.face_value.amount_micros}"));
    json_array_append_new(json_object_get(style, "backFields"),
        json_pack("{s:s, s:s, s:s}", "key", "park", "label", "${custom.parking}:", "value",
                  "Car park ${custom.parking}"));
    json_array_append_new(json_object_get(style, "backFields"),
        json_pack("{s:s, s:s, s:s}", "key", "gate_text", "label", "GATE", "value",
                  "Use gate ${attendee.gate}"));
    json_array_append_new(json_object_get(style, "backFields"),
        json_pack("{s:s, s:s, s:s}", "key", "nothing", "label", "X", "value",
                  "${custom.absent}"));
    cr_assert_eq(json_dump_file(root, path, 0), 0);
    json_decref(root);
    pm_template *t = NULL;
    pm_error err;
    cr_assert_eq(pm_template_load(dir, &t, &err), 0, "%s", err.message);
    return t;
}

Test(manifest, bindings)
{
    pm_template *t = custom_template();
    json_t *record = parse(record_json), *pass = NULL;
    pm_buf scratch = PM_BUF_INIT;
    pm_error err;
    cr_assert_eq(pm_pass_render(t, record, NULL, NOW, &scratch, &pass, &err), 0, "%s",
                 err.message);
    /* Outside field arrays a null binding is just empty text. */
    cr_assert_str_eq(json_string_value(json_object_get(pass, "logoText")), "Demo");
    /* Exactly one binding to a number keeps the number; embedded, it becomes text. */
    json_t *price = field(fields(pass, "auxiliaryFields"), "price");
    cr_assert(json_is_integer(json_object_get(price, "value")));
    cr_assert_eq(json_integer_value(json_object_get(price, "value")), 45000000);
    cr_assert_str_eq(field_value(pass, "auxiliaryFields", "price_text"), "GBP 45000000");
    /* A bound custom field is not repeated on the back; the unbound one is. */
    json_t *park = field(fields(pass, "backFields"), "park");
    cr_assert_str_eq(json_string_value(json_object_get(park, "label")), "Lot B:");
    cr_assert_str_eq(json_string_value(json_object_get(park, "value")), "Car park Lot B");
    cr_assert_null(field(fields(pass, "backFields"), "custom_parking"));
    cr_assert_not_null(field(fields(pass, "backFields"), "custom_door"));
    /* Any null binding in a field's value drops the field. */
    cr_assert_null(field(fields(pass, "backFields"), "gate_text"));
    cr_assert_null(field(fields(pass, "backFields"), "nothing"));
    /* No barcodes object: no barcode keys. */
    cr_assert_null(json_object_get(pass, "barcodes"));
    /* The template's skeleton is untouched. */
    cr_assert_str_eq(json_string_value(json_object_get(t->skeleton, "logoText")),
                     "${attendee.gate}Demo");
    json_decref(pass);

    /* Without face_value the number binding is null: the price fields go. */
    json_object_set_new(json_object_get(record, "attendee"), "face_value", json_null());
    cr_assert_eq(pm_pass_render(t, record, NULL, NOW, &scratch, &pass, &err), 0);
    cr_assert_null(field(fields(pass, "auxiliaryFields"), "price"));
    cr_assert_null(field(fields(pass, "auxiliaryFields"), "price_text"));
    json_decref(pass);
    pm_buf_free(&scratch);
    json_decref(record);
    pm_template_destroy(t);
}

/* A copy of the example named `name`, its pass.json changed by edit(), loaded. */
static pm_template *edited_template(const char *name, void (*edit)(json_t *root))
{
    char dir[700], path[800];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    cr_assert_eq(pmt_sh("cp -r '%s' '%s'", pmt_src("config/templates/stadium"), dir), 0);
    snprintf(path, sizeof path, "%s/pass.json", dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    cr_assert_not_null(root, "%s", jerr.text);
    edit(root);
    cr_assert_eq(json_dump_file(root, path, 0), 0);
    json_decref(root);
    pm_template *t = NULL;
    pm_error err;
    cr_assert_eq(pm_template_load(dir, &t, &err), 0, "%s", err.message);
    return t;
}

static void doors_relevant(json_t *root)
{
    json_object_set_new(root, "relevantDates",
        json_pack("[{s:s, s:s}, {s:s}]", "startDate", "${event.doors_open}",
                  "endDate", "${event.start}", "date", "${event.doors_open}"));
}

/* Issue 14: an empty doors time rendered "startDate": "", which verify refuses. */
Test(manifest, relevant_dates_leave_out_entries_with_empty_bindings)
{
    pm_template *t = edited_template("doors", doors_relevant);
    pm_job job;
    job_fill(&job, NULL, NOW);
    job.tmpl = t;
    run_manifest(&job);
    json_t *pass = pass_of(&job);
    json_t *dates = json_object_get(pass, "relevantDates");
    cr_assert_eq(json_array_size(dates), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(dates, 0), "startDate")),
                     "2027-06-12T17:00:00+01:00");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(dates, 1), "date")),
                     "2027-06-12T17:00:00+01:00");
    json_decref(pass);

    /* No doors time: both entries bind it, so both go, and the key with them. */
    json_object_set_new(json_object_get(job.record, "event"), "doors_open", json_null());
    run_manifest(&job);
    pass = pass_of(&job);
    cr_assert_null(json_object_get(pass, "relevantDates"), "%s", pm_buf_cstr(&job.pass_json));
    pm_verify_report report;
    cr_assert_eq(pm_verify_pass_json(pass, &report), 0, "%s", report.failures[0].message);
    json_decref(pass);
    pm_job_free(&job);
    pm_template_destroy(t);
}

static void name_as_date(json_t *root)
{
    json_object_set_new(root, "relevantDates", json_pack("[{s:s}]", "date", "${event.name}"));
}

/* Issue 14: passmill stored and counted passes that its own verify refused. */
Test(manifest, a_pass_that_verify_refuses_is_a_reject)
{
    pm_template *t = edited_template("bad_dates", name_as_date);
    pm_job job;
    job_fill(&job, NULL, NOW);
    job.tmpl = t;
    cr_assert_eq(manifest_run.stage->process(manifest_run.state, manifest_run.scratch, &job), -1,
                 "signed anyway: %s", pm_buf_cstr(&job.pass_json));
    cr_assert_eq(job.err.code, PM_ERR_REJECT, "%s", job.err.message);
    cr_assert_str_eq(job.err.reason, "pass.verify");
    cr_assert_str_eq(job.err.field, "");
    cr_assert(strstr(job.err.message, "template 'bad_dates'") &&
              strstr(job.err.message, "rule pass.dates") &&
              strstr(job.err.message, "relevantDates[0].date") &&
              strstr(job.err.message, "Cup Final"), "%s", job.err.message);
    pm_job_free(&job);
    pm_template_destroy(t);
}

static void shows_barcode_message(json_t *root)
{
    json_array_append_new(json_object_get(json_object_get(root, "eventTicket"), "backFields"),
        json_pack("{s:s, s:s, s:s}", "key", "code", "label", "CODE", "value",
                  "Code ${barcode.message}"));
}

/* Issue 14: ${barcode.message} rendered the literal "autogenerate". */
Test(manifest, barcode_message_binding_is_the_final_message)
{
    pm_template *t = edited_template("code", shows_barcode_message);
    pm_job job;
    job_fill(&job, NULL, NOW);
    job.tmpl = t;
    json_object_set_new(json_object_get(job.record, "barcode"), "message",
                        json_string("autogenerate"));
    json_decref(job.barcodes);
    job.barcodes = parse("{\"barcodes\": [{\"format\": \"PKBarcodeFormatQR\", "
                         "\"message\": \"0123456789ABCDEFGHJKMNPQ\", "
                         "\"messageEncoding\": \"iso-8859-1\"}]}");
    run_manifest(&job);
    json_t *pass = pass_of(&job);
    cr_assert_str_eq(field_value(pass, "backFields", "code"), "Code 0123456789ABCDEFGHJKMNPQ");
    json_decref(pass);
    pm_job_free(&job);
    pm_template_destroy(t);
}

Test(manifest, missing_inputs_are_internal_errors)
{
    pm_job job;
    job_fill(&job, NULL, NOW);
    job.tmpl = NULL;
    cr_assert_eq(manifest_run.stage->process(manifest_run.state, manifest_run.scratch, &job), -1);
    cr_assert_eq(job.err.code, PM_ERR_INTERNAL);
    job.tmpl = tmpl;
    run_manifest(&job);
    pm_buf_reset(&job.signature);
    cr_assert_eq(bundle_run.stage->process(bundle_run.state, bundle_run.scratch, &job), -1);
    cr_assert_eq(job.err.code, PM_ERR_INTERNAL);
    cr_assert(strstr(job.err.message, "signature"), "%s", job.err.message);
    pm_job_free(&job);
}

/* ---- bundle ---- */

static void build_pass(pm_job *job, int64_t now)
{
    job_fill(job, NULL, now);
    run_manifest(job);
    run_bundle(job);
}

Test(manifest, bundle_is_a_valid_pkpass)
{
    pm_job job;
    build_pass(&job, NOW);
    char zip[700];
    write_buf("p.pkpass", &job.pkpass, zip, sizeof zip);

    cr_assert_eq(pmt_sh("unzip -tq '%s' >&2", zip), 0);
    /* Entry order: the static template files first, then this pass's files. */
    int st;
    char *names = pmt_sh_out(&st, "unzip -Z1 '%s'", zip);
    cr_assert_eq(st, 0);
    cr_assert_str_eq(names, "en.lproj/pass.strings\nfr.lproj/pass.strings\nicon.png\n"
                            "icon@2x.png\nlogo.png\nlogo@2x.png\nstrip.png\nstrip@2x.png\n"
                            "pass.json\nmanifest.json\nsignature\n");
    free(names);
    /* PNGs and the (DER) signature stored, the rest deflated. */
    char *methods = pmt_sh_out(&st, "unzip -v '%s' | awk 'NF==8 && $2 ~ /^(Defl|Stored)/ {print $2, $8}'",
                               zip);
    cr_assert_eq(st, 0);
    cr_assert_str_eq(methods, "Defl:N en.lproj/pass.strings\nDefl:N fr.lproj/pass.strings\n"
                              "Stored icon.png\nStored icon@2x.png\nStored logo.png\n"
                              "Stored logo@2x.png\nStored strip.png\nStored strip@2x.png\n"
                              "Defl:N pass.json\nDefl:N manifest.json\nStored signature\n");
    free(methods);
    /* Times: the fixed DOS epoch on static files, now's UTC wall clock on this pass's. */
    char *times = pmt_sh_out(&st, "zipinfo -T '%s' | awk '$1 ~ /^-/ {print $7, $8}'", zip);
    cr_assert_eq(st, 0);
    cr_assert_str_eq(times, "19800101.000000 en.lproj/pass.strings\n"
                            "19800101.000000 fr.lproj/pass.strings\n"
                            "19800101.000000 icon.png\n19800101.000000 icon@2x.png\n"
                            "19800101.000000 logo.png\n19800101.000000 logo@2x.png\n"
                            "19800101.000000 strip.png\n19800101.000000 strip@2x.png\n"
                            "20270501.120000 pass.json\n20270501.120000 manifest.json\n"
                            "20270501.120000 signature\n");
    free(times);

    /* Unzip and re-hash every file against manifest.json; contents are what we gave. */
    cr_assert_eq(pmt_sh(
        "set -e; cd '%s'; mkdir x; cd x; unzip -q ../p.pkpass; "
        "python3 -c 'import json,hashlib,os,sys\n"
        "m=json.load(open(\"manifest.json\"))\n"
        "files=sorted(os.path.relpath(os.path.join(r,f)) for r,_,fs in os.walk(\".\") for f in fs)\n"
        "files=[f for f in files if f not in (\"manifest.json\",\"signature\")]\n"
        "assert files==sorted(m), (files, sorted(m))\n"
        "bad=[f for f in m if hashlib.sha1(open(f,\"rb\").read()).hexdigest()!=m[f]]\n"
        "sys.exit(\"bad hash: %%s\" %% bad if bad else 0)'; "
        "for f in $(find . -name \"*.png\" -o -name pass.strings | sed 's|^\\./||'); do "
        "  cmp \"$f\" '%s'/\"$f\"; done", tmp, pmt_src("config/templates/stadium")), 0);
    char path[700];
    size_t len;
    snprintf(path, sizeof path, "%s/x/pass.json", tmp);
    char *pj = pmt_read_file(path, &len);
    cr_assert_eq(len, job.pass_json.len);
    cr_assert_eq(memcmp(pj, job.pass_json.data, len), 0);
    free(pj);
    snprintf(path, sizeof path, "%s/x/signature", tmp);
    char *sig = pmt_read_file(path, &len);
    cr_assert_eq(len, job.signature.len);
    cr_assert_eq(memcmp(sig, job.signature.data, len), 0);
    free(sig);

    /* pkpass_sha256 is the SHA-256 of the bytes. */
    char *sum = pmt_sh_out(&st, "sha256sum '%s' | cut -c1-64", zip);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", job.pkpass_sha256[i]);
    cr_assert(strncmp(sum, hex, 64) == 0, "%s vs %s", sum, hex);
    free(sum);
    pm_job_free(&job);
}

/*
 * The per-pass entries are written by bundle.c itself, not libzip: every
 * reader must agree with what the job holds (libzip, Python's zipfile).
 */
Test(manifest, bundle_reads_back_with_libzip_and_python)
{
    pm_job job;
    build_pass(&job, NOW);
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(job.pkpass.data, job.pkpass.len, 0, &ze);
    cr_assert_not_null(src);
    zip_t *za = zip_open_from_source(src, ZIP_CHECKCONS | ZIP_RDONLY, &ze);
    cr_assert_not_null(za, "libzip: %s", zip_error_strerror(&ze));
    cr_assert_eq(zip_get_num_entries(za, 0), (zip_int64_t)tmpl->files_len + 3);
    const pm_buf *own[3] = {&job.pass_json, &job.manifest_json, &job.signature};
    const char *names[3] = {"pass.json", "manifest.json", "signature"};
    for (int i = 0; i < 3; i++) {
        zip_stat_t st;
        cr_assert_eq(zip_stat(za, names[i], 0, &st), 0, "%s", names[i]);
        cr_assert_eq(st.size, own[i]->len);
        uint8_t *got = malloc(own[i]->len + 1);
        zip_file_t *zf = zip_fopen(za, names[i], 0);
        cr_assert_not_null(zf, "%s", names[i]);
        cr_assert_eq(zip_fread(zf, got, own[i]->len + 1), (zip_int64_t)own[i]->len);
        cr_assert_eq(zip_fclose(zf), 0, "%s: CRC or size wrong", names[i]);
        cr_assert_eq(memcmp(got, own[i]->data, own[i]->len), 0, "%s", names[i]);
        free(got);
    }
    for (size_t i = 0; i < tmpl->files_len; i++) {
        zip_stat_t st;
        cr_assert_eq(zip_stat(za, tmpl->files[i].name, 0, &st), 0, "%s", tmpl->files[i].name);
        cr_assert_eq(st.index, i, "static files first, in order");
    }
    zip_close(za);
    zip_error_fini(&ze);

    char zip[700];
    write_buf("p.pkpass", &job.pkpass, zip, sizeof zip);
    cr_assert_eq(pmt_sh("python3 -c 'import zipfile,sys\n"
                        "z=zipfile.ZipFile(sys.argv[1])\n"
                        "assert z.testzip() is None\n"
                        "import subprocess\n"
                        "for n in z.namelist():\n"
                        "    assert z.read(n)==subprocess.run([\"unzip\",\"-p\",sys.argv[1],n],"
                        "capture_output=True,check=True).stdout, n\n' '%s'", zip), 0);
    pm_job_free(&job);
}

/* Issue 14: libzip's default 0666 made unzipped files world-writable. */
Test(manifest, bundle_entries_are_mode_0644)
{
    pm_job job;
    build_pass(&job, NOW);
    char zip[700];
    write_buf("p.pkpass", &job.pkpass, zip, sizeof zip);
    int st;
    /* zipinfo's first column is the Unix mode of each entry. */
    char *modes = pmt_sh_out(&st, "zipinfo '%s' | awk '$1 ~ /^[-d]/ {print $1}' | sort | uniq -c",
                             zip);
    cr_assert_eq(st, 0);
    cr_assert_str_eq(modes, "     11 -rw-r--r--\n");
    free(modes);
    /* And unzip creates them so, whatever the umask. */
    cr_assert_eq(pmt_sh("set -e; cd '%s'; mkdir m; cd m; umask 000; unzip -q ../p.pkpass; "
                        "test -z \"$(find . -type f ! -perm 0644)\"", tmp), 0);
    pm_job_free(&job);
}

Test(manifest, bundle_same_input_same_bytes)
{
    pm_job a, b, c, d;
    build_pass(&a, NOW);
    build_pass(&b, NOW);
    run_bundle(&b); /* rebuilding into a reused buffer changes nothing */
    cr_assert_eq(a.pkpass.len, b.pkpass.len);
    cr_assert_eq(memcmp(a.pkpass.data, b.pkpass.data, a.pkpass.len), 0);
    cr_assert_eq(memcmp(a.pkpass_sha256, b.pkpass_sha256, 32), 0);

    /* Another clock: other bytes (entry times differ even though pass.json does not). */
    build_pass(&c, NOW + 3600);
    cr_assert_eq(a.pass_json.len, c.pass_json.len);
    cr_assert_eq(memcmp(a.pass_json.data, c.pass_json.data, a.pass_json.len), 0);
    cr_assert(a.pkpass.len != c.pkpass.len || memcmp(a.pkpass.data, c.pkpass.data, a.pkpass.len) != 0);
    cr_assert_neq(memcmp(a.pkpass_sha256, c.pkpass_sha256, 32), 0);

    /* The host's time zone does not matter. */
    const char *old = getenv("TZ");
    char *saved = old ? strdup(old) : NULL;
    setenv("TZ", "America/New_York", 1);
    tzset();
    build_pass(&d, NOW);
    if (saved) {
        setenv("TZ", saved, 1);
        free(saved);
    } else {
        unsetenv("TZ");
    }
    tzset();
    cr_assert_eq(a.pkpass.len, d.pkpass.len);
    cr_assert_eq(memcmp(a.pkpass.data, d.pkpass.data, a.pkpass.len), 0);
    pm_job_free(&a);
    pm_job_free(&b);
    pm_job_free(&c);
    pm_job_free(&d);
}

/* Offset of the local header of entry name in zip, or 0 when absent. */
static size_t local_header(const pm_buf *zip, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 1; i + 30 + n <= zip->len; i++)
        if (memcmp(zip->data + i, "PK\3\4", 4) == 0 &&
            (zip->data[i + 26] | zip->data[i + 27] << 8) == (int)n &&
            memcmp(zip->data + i + 30, name, n) == 0)
            return i;
    return 0;
}

Test(manifest, bundle_static_entries_do_not_depend_on_the_pass)
{
    /* Another clock and another record: the static entries are the same bytes. */
    pm_job a, b;
    build_pass(&a, NOW);
    job_fill(&b, NULL, NOW + 86400 * 400);
    json_object_set_new(json_object_get(b.record, "attendee"), "seat", json_string("99"));
    run_manifest(&b);
    run_bundle(&b);
    size_t off = local_header(&a.pkpass, "pass.json");
    cr_assert_gt(off, 90000, "pass.json at %zu: the static files come first", off);
    cr_assert_eq(local_header(&b.pkpass, "pass.json"), off);
    cr_assert_eq(memcmp(a.pkpass.data, b.pkpass.data, off), 0);
    cr_assert(a.pkpass.len != b.pkpass.len ||
              memcmp(a.pkpass.data + off, b.pkpass.data + off, a.pkpass.len - off) != 0);
    pm_job_free(&a);
    pm_job_free(&b);
}

static void check_sha256(const pm_job *job)
{
    uint8_t md[32];
    unsigned len = 0;
    cr_assert(EVP_Digest(job->pkpass.data, job->pkpass.len, md, &len, EVP_sha256(), NULL));
    cr_assert_eq(len, 32);
    cr_assert_eq(memcmp(md, job->pkpass_sha256, 32), 0);
}

Test(manifest, bundle_one_worker_several_templates)
{
    /* A second load of the same folder is another template to the worker's cache. */
    pm_template *other;
    pm_error err;
    cr_assert_eq(pm_template_load(pmt_src("config/templates/stadium"), &other, &err), 0, "%s",
                 err.message);
    pm_job a, b;
    build_pass(&a, NOW);
    check_sha256(&a);
    job_fill(&b, NULL, NOW);
    b.tmpl = other;
    for (int round = 0; round < 3; round++) {
        run_manifest(&b);
        run_bundle(&b);
        check_sha256(&b);
        run_bundle(&a);
        check_sha256(&a);
        cr_assert_eq(a.pkpass.len, b.pkpass.len);
        cr_assert_eq(memcmp(a.pkpass.data, b.pkpass.data, a.pkpass.len), 0, "round %d", round);
        b.now += 2; /* the archive changes with the clock; the hash keeps up */
        a.now += 2;
    }
    pm_job_free(&a);
    pm_job_free(&b);
    pm_template_destroy(other);
}

Test(manifest, bundle_template_without_static_files)
{
    /* Not loadable from a folder (icon.png is required), but bundle does not rely on that. */
    pm_template bare = {.id = "bare", .files = NULL, .files_len = 0};
    pm_job job;
    job_fill(&job, NULL, NOW);
    run_manifest(&job);
    job.tmpl = &bare;
    run_bundle(&job);
    check_sha256(&job);
    char zip[700];
    write_buf("bare.pkpass", &job.pkpass, zip, sizeof zip);
    int st;
    char *names = pmt_sh_out(&st, "unzip -tq '%s' >&2 && unzip -Z1 '%s'", zip, zip);
    cr_assert_eq(st, 0);
    cr_assert_str_eq(names, "pass.json\nmanifest.json\nsignature\n");
    free(names);
    pm_job_free(&job);
}

/* ---- the template's expiry and the record's sharing_prohibited ------------- */

static const char *expiration_of(pm_job *job, char *out, size_t outlen)
{
    json_t *pass = pass_of(job);
    const char *s = json_string_value(json_object_get(pass, "expirationDate"));
    snprintf(out, outlen, "%s", s ? s : "(none)");
    json_decref(pass);
    return out;
}

Test(manifest, template_expiry_fixed)
{
    pm_template t = *tmpl; /* shallow: the same files, other settings; never destroyed */
    t.expiry.kind = PM_EXPIRY_FIXED;
    snprintf(t.expiry.fixed_text, sizeof t.expiry.fixed_text, "2027-06-13T03:00:00+01:00");
    pm_job job;
    char got[64];
    job_fill(&job, NULL, NOW);
    job.tmpl = &t;
    run_manifest(&job);
    cr_assert_str_eq(expiration_of(&job, got, sizeof got), "2027-06-13T03:00:00+01:00");
    /* the registry's copy of the record is not changed by the template's date */
    cr_assert(json_is_null(json_object_get(job.record, "expiration_date")));
    pm_job_free(&job);

    /* the record's own expiration_date wins over the template's */
    job_fill(&job, NULL, NOW);
    job.tmpl = &t;
    json_object_set_new(job.record, "expiration_date", json_string("2027-06-12T23:30:00+01:00"));
    run_manifest(&job);
    cr_assert_str_eq(expiration_of(&job, got, sizeof got), "2027-06-12T23:30:00+01:00");
    pm_job_free(&job);

    /* without a setting: no expirationDate at all */
    job_fill(&job, NULL, NOW);
    run_manifest(&job);
    cr_assert_str_eq(expiration_of(&job, got, sizeof got), "(none)");
    pm_job_free(&job);
}

Test(manifest, template_auto_expiry_counts_from_the_first_issue)
{
    pm_template t = *tmpl;
    t.expiry.kind = PM_EXPIRY_AUTO;
    t.expiry.after_days = 45;
    t.expiry.round_midnight = true;
    snprintf(t.expiry.zone, sizeof t.expiry.zone, "Europe/London");
    pm_job job;
    char first[64], again[64];
    /* first issue (fingerprint: issued_at = now; without a registry it stays 0 = now) */
    job_fill(&job, NULL, NOW);
    job.tmpl = &t;
    run_manifest(&job);
    /* 2027-05-01T13:00 BST + 45 days = 2027-06-15T13:00 BST -> midnight starting the 16th */
    cr_assert_str_eq(expiration_of(&job, first, sizeof first), "2027-06-16T00:00:00+01:00");
    pm_job_free(&job);

    /* a reissue ten days later: the registry's created_at is the base, not the clock */
    job_fill(&job, "UPDATE", NOW + 10 * 86400);
    job.tmpl = &t;
    job.issued_at = NOW;
    run_manifest(&job);
    cr_assert_str_eq(expiration_of(&job, again, sizeof again), first);
    pm_job_free(&job);

    /* a genuinely new pass issued ten days later expires ten days later */
    job_fill(&job, NULL, NOW + 10 * 86400);
    job.tmpl = &t;
    job.issued_at = NOW + 10 * 86400;
    run_manifest(&job);
    cr_assert_str_eq(expiration_of(&job, again, sizeof again), "2027-06-26T00:00:00+01:00");
    pm_job_free(&job);
}

static void prohibits_sharing(json_t *root)
{
    json_object_set_new(root, "sharingProhibited", json_true());
}

Test(manifest, sharing_prohibited_per_record)
{
    pm_job job;
    job_fill(&job, NULL, NOW);
    json_object_set_new(job.record, "sharing_prohibited", json_true());
    run_manifest(&job);
    json_t *pass = pass_of(&job);
    cr_assert(json_is_true(json_object_get(pass, "sharingProhibited")));
    json_decref(pass);
    pm_job_free(&job);

    /* null (and absent): the template decides; the example allows sharing */
    job_fill(&job, NULL, NOW);
    json_object_set_new(job.record, "sharing_prohibited", json_null());
    run_manifest(&job);
    pass = pass_of(&job);
    cr_assert_null(json_object_get(pass, "sharingProhibited"));
    json_decref(pass);
    pm_job_free(&job);

    /* a template that prohibits sharing: kept for null, lifted by false */
    pm_template *t = edited_template("noshare", prohibits_sharing);
    job_fill(&job, NULL, NOW);
    job.tmpl = t;
    json_object_set_new(job.record, "sharing_prohibited", json_null());
    run_manifest(&job);
    pass = pass_of(&job);
    cr_assert(json_is_true(json_object_get(pass, "sharingProhibited")));
    json_decref(pass);
    pm_job_free(&job);
    job_fill(&job, NULL, NOW);
    job.tmpl = t;
    json_object_set_new(job.record, "sharing_prohibited", json_false());
    run_manifest(&job);
    pass = pass_of(&job);
    cr_assert_null(json_object_get(pass, "sharingProhibited"));
    json_decref(pass);
    pm_job_free(&job);
    pm_template_destroy(t);
}

/* docs/lifecycle.md: the status field, its changeMessage, and an expired pass's date. */
Test(manifest, status_field_change_message_and_expiry)
{
    pm_template *t = custom_template();
    json_t *record = parse(record_json), *pass = NULL;
    pm_buf scratch = PM_BUF_INIT;
    pm_error err;
    json_object_set_new(record, "action", json_string("VOID"));
    static const char *const cases[][2] = {
        {"Postponed", "Postponed %@"},
        {"Now %@ (50% refund)", "Now %@ (50%% refund)"},
    };
    for (size_t i = 0; i < 2; i++) {
        json_object_set_new(record, "status_message", json_string(cases[i][0]));
        cr_assert_eq(pm_pass_render(t, record, NULL, NOW, &scratch, &pass, &err), 0, "%s", err.message);
        json_t *st = json_array_get(fields(pass, "backFields"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(st, "key")), "status");
        cr_assert_str_eq(json_string_value(json_object_get(st, "value")), "VOIDED");
        cr_assert_str_eq(json_string_value(json_object_get(st, "changeMessage")), cases[i][1]);
        cr_assert(json_is_true(json_object_get(pass, "voided")));
        json_decref(pass);
    }
    /* No message: no changeMessage. */
    json_object_set_new(record, "status_message", json_null());
    cr_assert_eq(pm_pass_render(t, record, NULL, NOW, &scratch, &pass, &err), 0);
    cr_assert_null(json_object_get(json_array_get(fields(pass, "backFields"), 0), "changeMessage"));
    json_decref(pass);
    /* EXPIRE: a past expiration date stays, a future one becomes now. */
    json_object_set_new(record, "action", json_string("EXPIRE"));
    json_object_set_new(record, "expiration_date", json_string("2001-01-01T00:00:00Z"));
    cr_assert_eq(pm_pass_render(t, record, NULL, NOW, &scratch, &pass, &err), 0);
    cr_assert_str_eq(json_string_value(json_object_get(pass, "expirationDate")), "2001-01-01T00:00:00Z");
    cr_assert_null(json_object_get(pass, "voided"));
    json_decref(pass);
    json_object_set_new(record, "expiration_date", json_string("2999-01-01T00:00:00Z"));
    cr_assert_eq(pm_pass_render(t, record, NULL, NOW, &scratch, &pass, &err), 0);
    char now_text[32];
    pm_rfc3339_format_utc(NOW, now_text);
    cr_assert_str_eq(json_string_value(json_object_get(pass, "expirationDate")), now_text);
    json_decref(pass);
    pm_buf_free(&scratch);
    json_decref(record);
    pm_template_destroy(t);
}
