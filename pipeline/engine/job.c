#include "engine/job.h"

#include <stdio.h>
#include <string.h>

void pm_job_init(pm_job *job)
{
    memset(job, 0, sizeof *job);
    job->origin.partition = -1;
}

/* What the stages wrote: cleared for the next record and for a restage. */
static void clear_stage_outputs(pm_job *job)
{
    json_decref(job->barcodes);
    job->barcodes = NULL;
    job->tmpl = NULL;
    job->status = NULL;
    pm_buf_reset(&job->barcode_message);
    pm_buf_reset(&job->qr_png);
    pm_buf_reset(&job->pass_json);
    pm_buf_reset(&job->manifest_json);
    pm_buf_reset(&job->signature);
    pm_buf_reset(&job->pkpass);
    pm_buf_reset(&job->record_json);
    memset(job->pkpass_sha256, 0, sizeof job->pkpass_sha256);
    job->content_hash[0] = job->auth_token[0] = job->prior_sha256[0] = '\0';
    job->unchanged = false;
    job->issued_at = 0;
    job->expect_tag = 0;
    job->conflict = false;
    pm_error_clear(&job->err);
    job->outcome = PM_OUTCOME_PASS;
}

void pm_job_reset(pm_job *job)
{
    clear_stage_outputs(job);
    json_decref(job->record);
    json_decref(job->patch);
    job->record = job->patch = NULL;
    job->serial = NULL;
    job->source_ref = NULL;
    job->writer = NULL;
    job->format = PM_INPUT_JSON;
    job->origin.source[0] = '\0';
    job->origin.partition = -1;
    job->origin.offset = 0;
    pm_buf_reset(&job->raw);
    job->attempts = 0;
}

void pm_job_restage(pm_job *job)
{
    if (job->patch) { /* merge builds the record again from the patch and the registry */
        json_decref(job->record);
        job->record = NULL;
        job->serial = json_string_value(json_object_get(job->patch, "serial_number"));
    }
    clear_stage_outputs(job);
}

void pm_job_free(pm_job *job)
{
    pm_job_reset(job);
    pm_buf_free(&job->raw);
    pm_buf_free(&job->barcode_message);
    pm_buf_free(&job->qr_png);
    pm_buf_free(&job->pass_json);
    pm_buf_free(&job->manifest_json);
    pm_buf_free(&job->signature);
    pm_buf_free(&job->pkpass);
    pm_buf_free(&job->record_json);
}

void pm_origin_format(const pm_origin *o, char *out, size_t outlen)
{
    if (o->partition >= 0)
        snprintf(out, outlen, "%s[%d]@%lld", o->source, (int)o->partition,
                 (long long)o->offset);
    else
        snprintf(out, outlen, "%s:%lld", o->source, (long long)o->offset);
}
