/*
 * outcome_json.c - the JSON shapes of a result and a reject, shared by every
 * outcome and the registry (see outcome.h).
 */
#include "outcomes/outcome.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>

#include "wallet/template.h"

static json_t *origin_json(const pm_origin *o)
{
    json_t *j = json_pack("{s:s}", "source", o->source);
    if (o->partition >= 0) {
        json_object_set_new(j, "partition", json_integer(o->partition));
        json_object_set_new(j, "offset", json_integer(o->offset));
    } else {
        json_object_set_new(j, "line", json_integer(o->offset));
    }
    return j;
}

static json_t *record_field(const pm_job *job, const char *name)
{
    json_t *v = job->record ? json_object_get(job->record, name) : NULL;
    return v ? json_incref(v) : json_null();
}

json_t *pm_outcome_result_json(const pm_job *job, const char *pkpass_key, const char *qr_key,
                               const char *pkpass_url, const char *qr_url)
{
    char sha_hex[65];
    if (job->outcome == PM_OUTCOME_UNCHANGED) /* the stored pass, not rebuilt */
        snprintf(sha_hex, sizeof sha_hex, "%s", job->prior_sha256);
    else
        pm_hex_encode(job->pkpass_sha256, sizeof job->pkpass_sha256, sha_hex);
    json_t *r = json_object();
    if (!r)
        return NULL;
    json_object_set_new(r, "serial", json_string(job->serial));
    json_object_set_new(r, "outcome", json_string(job->outcome == PM_OUTCOME_UNCHANGED ? "unchanged" : "pass"));
    json_object_set_new(r, "action", record_field(job, "action"));
    json_object_set_new(r, "status", json_string(job->status ? job->status : "active"));
    json_object_set_new(r, "template_id", record_field(job, "template_id"));
    json_object_set_new(r, "template_version", json_string(job->tmpl ? job->tmpl->version : ""));
    json_object_set_new(r, "keys", json_pack("{s:s, s:s}", "pkpass", pkpass_key, "qr", qr_key));
    json_object_set_new(r, "sha256", json_string(sha_hex));
    if (pkpass_url && qr_url)
        json_object_set_new(r, "urls", json_pack("{s:s, s:s}", "pkpass", pkpass_url, "qr", qr_url));
    json_object_set_new(r, "pass_group_ids", record_field(job, "pass_group_ids"));
    json_object_set_new(r, "metadata", record_field(job, "metadata"));
    json_object_set_new(r, "origin", origin_json(&job->origin));
    return r;
}

const char *pm_outcome_reject_serial(const pm_job *job, json_t **orig)
{
    *orig = NULL;
    if (job->format == PM_INPUT_JSON)
        *orig = json_loadb((const char *)job->raw.data, job->raw.len, JSON_DECODE_ANY, NULL);
    /* A record that failed decoding has no job->serial; its JSON may still name one. */
    if (job->serial)
        return job->serial;
    return json_is_object(*orig) ? json_string_value(json_object_get(*orig, "serial_number"))
                                 : NULL;
}

json_t *pm_outcome_reject_json(const pm_job *job)
{
    json_t *r = json_object();
    if (!r)
        return NULL;
    /* The original record, untouched: as JSON when it was JSON, else base64. */
    json_t *orig;
    const char *serial = pm_outcome_reject_serial(job, &orig);
    json_object_set_new(r, "serial", serial ? json_string(serial) : json_null());
    if (job->err.code == PM_ERR_REJECT) {
        json_object_set_new(r, "code", json_string(job->err.reason));
    } else {
        char code[64];
        snprintf(code, sizeof code, "failed.%s", pm_code_name(job->err.code));
        json_object_set_new(r, "code", json_string(code));
    }
    json_object_set_new(r, "field", json_string(job->err.field));
    json_object_set_new(r, "reason", json_string(job->err.message));
    json_object_set_new(r, "origin", origin_json(&job->origin));
    if (orig) {
        json_object_set_new(r, "record", orig);
    } else {
        size_t cap = 4 * ((job->raw.len + 2) / 3) + 1;
        unsigned char *b64 = malloc(cap);
        if (b64) {
            int n = EVP_EncodeBlock(b64, job->raw.data ? job->raw.data : (const unsigned char *)"",
                                    (int)job->raw.len);
            json_object_set_new(r, "record_base64", json_stringn((const char *)b64, (size_t)n));
            free(b64);
        }
    }
    return r;
}
