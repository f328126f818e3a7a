/*
 * fuzz_record.c - decode + validate on hostile bytes (see fuzz_record.h).
 *
 * Contracts checked for every input:
 *   - decode and validate either succeed (a record with a serial; a
 *     template and a status) or reject with a reason code and a message;
 *   - a record that decodes and validates, written back as JSON, decodes
 *     and validates again to the same normalized record: whatever the
 *     input format, a valid record means the same thing.
 */
#include "fuzz_record.h"

#include <string.h>

#include "engine/context.h"
#include "record/canonical.h"
#include "stages/stage.h"
#include "wallet/template.h"

static pm_context ctx;
static void *decode_state, *validate_state;

void fuzz_record_init(const pm_config *cfg)
{
    pm_error err;
    memset(&ctx, 0, sizeof ctx);
    ctx.config = cfg;
    ctx.fixed_now = -1;
    FUZZ_CHECK(pm_template_set_load(PM_SOURCE_DIR "/config/templates", &ctx.templates, &err) == 0,
               "templates: %s", err.message);
    FUZZ_CHECK(pm_stage_decode.create(&ctx, &decode_state, &err) == 0, "decode: %s", err.message);
    FUZZ_CHECK(pm_stage_validate.create(&ctx, &validate_state, &err) == 0, "validate: %s",
               err.message);
}

/* Out of memory is not allowed either: inputs are small, and libFuzzer
 * stops a run on a huge malloc; a NOMEM here is a misreported failure. */
static void check_failure(const char *stage, const pm_error *err)
{
    FUZZ_CHECK(err->code == PM_ERR_REJECT, "%s failed with %s, not a reject: %s", stage,
               pm_code_name(err->code), err->message);
    FUZZ_CHECK(err->reason[0] && err->message[0], "%s: a reject without a code or reason", stage);
}

/* 1 valid, 0 rejected; job->record is the normalized record. */
static int run(pm_job *job)
{
    if (pm_stage_decode.process(decode_state, NULL, job) != 0) {
        check_failure("decode", &job->err);
        return 0;
    }
    if (job->patch) { /* a change by serial alone: the merge stage's, with a registry */
        FUZZ_CHECK(json_is_object(job->patch) && !job->record && job->serial &&
                   json_string_value(json_object_get(job->patch, "serial_number")) == job->serial,
                   "decode: a partial request without its object or serial");
        return 0;
    }
    FUZZ_CHECK(json_is_object(job->record) && job->serial, "decode: no record or no serial");
    if (pm_stage_validate.process(validate_state, NULL, job) != 0) {
        check_failure("validate", &job->err);
        return 0;
    }
    FUZZ_CHECK(job->tmpl && job->status, "validate: no template or no status");
    return 1;
}

void fuzz_record(pm_input_format format, const uint8_t *data, size_t size)
{
    pm_job job;
    pm_job_init(&job);
    job.format = format;
    FUZZ_CHECK(pm_buf_append(&job.raw, data, size) == 0, "out of memory");
    if (run(&job) == 1) {
        char *text = json_dumps(job.record, JSON_COMPACT | JSON_SORT_KEYS);
        FUZZ_CHECK(text, "a valid record cannot be written as JSON");
        pm_buf canonical = PM_BUF_INIT;
        FUZZ_CHECK(pm_canonical_json(job.record, NULL, &canonical) == 0 &&
                       canonical.len == strlen(text) && memcmp(canonical.data, text, canonical.len) == 0,
                   "the canonical text differs from jansson's: %s", text);
        pm_buf_free(&canonical);
        pm_job again;
        pm_job_init(&again);
        again.format = PM_INPUT_JSON;
        FUZZ_CHECK(pm_buf_append_str(&again.raw, text) == 0, "out of memory");
        int ok = run(&again);
        FUZZ_CHECK(ok == 1, "the valid record %s, as JSON, is rejected: %s %s: %s", text,
                   again.err.reason, again.err.field, again.err.message);
        FUZZ_CHECK(json_equal(job.record, again.record), "the record changes through JSON: %s",
                   text);
        free(text);
        pm_job_free(&again);
    }
    pm_job_free(&job);
}
