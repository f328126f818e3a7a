/*
 * fingerprint.c - stage 2: content hash and registry lookup (see fingerprint.h).
 */
#include "stages/fingerprint.h"

#include <stdlib.h>
#include <string.h>

#include "registry/registry.h"
#include "wallet/identity.h"
#include "wallet/template.h"

typedef struct fingerprint_state {
    pm_registry *registry;          /* borrowed from the context; NULL = none */
    const uint8_t *signer_sha256;   /* borrowed: the context's pass_settings_sha256 */
} fingerprint_state;

static int fingerprint_create(const pm_context *ctx, void **state, pm_error *err)
{
    *state = NULL;
    fingerprint_state *st = calloc(1, sizeof *st);
    if (!st)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    st->registry = ctx->registry;
    static const uint8_t none[32];
    st->signer_sha256 = ctx->identity ? ctx->pass_settings_sha256 : none;
    *state = st;
    return 0;
}

static void fingerprint_destroy(void *state)
{
    free(state);
}

/* One worker's: its registry reader and its hasher (registry.h). */
typedef struct fingerprint_scratch {
    pm_registry_reader *reader;
    pm_registry_hasher *hasher;
} fingerprint_scratch;

static void fingerprint_worker_destroy(void *scratch)
{
    fingerprint_scratch *sc = scratch;
    if (!sc)
        return;
    pm_registry_reader_close(sc->reader);
    pm_registry_hasher_destroy(sc->hasher);
    free(sc);
}

/* Scratch: NULL without a registry. */
static int fingerprint_worker_create(void *state, void **scratch, pm_error *err)
{
    fingerprint_state *st = state;
    *scratch = NULL;
    if (!st->registry)
        return 0;
    fingerprint_scratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    if (st->registry->ops->reader_open(st->registry, &sc->reader, err) != 0 ||
        pm_registry_hasher_create(&sc->hasher, err) != 0) {
        fingerprint_worker_destroy(sc);
        return -1;
    }
    *scratch = sc;
    return 0;
}

static int fingerprint_process(void *state, void *scratch, pm_job *job)
{
    fingerprint_state *st = state;
    fingerprint_scratch *sc = scratch;
    if (!st->registry)
        return 0;
    if (pm_registry_hasher_content_hash(sc->hasher, job->record, job->status ? job->status : "active",
                                        job->tmpl ? job->tmpl->version : "", st->signer_sha256,
                                        &job->record_json, job->content_hash, &job->err) != 0)
        return -1;
    pm_registry_pass prior;
    int found = pm_registry_lookup(sc->reader, job->serial, false, &prior, &job->err);
    if (found < 0)
        return -1;
    /* Times "after issue" (a template's auto expiry) count from the first
     * issue, so a reissue or an update never moves them. */
    job->issued_at = found ? prior.created_at : job->now;
    /* What this pass is built on; merge's lookup comes first for a change by
     * serial.  apply() writes the row only if it is still this one. */
    if (!job->patch)
        job->expect_tag = found ? prior.update_tag : PM_TAG_ABSENT;
    if (!found)
        return pm_registry_hasher_new_token(sc->hasher, job->auth_token, &job->err);
    memcpy(job->auth_token, prior.auth_token, sizeof job->auth_token);
    if (strcmp(prior.content_hash, job->content_hash) == 0) {
        /* Made again after a registry conflict (engine.c), this job's objects
         * may have replaced the other process's: store the pass again rather
         * than call it unchanged, so the store matches the row. */
        if (job->attempts > 0)
            return 0;
        job->unchanged = true;
        memcpy(job->prior_sha256, prior.pkpass_sha256, sizeof job->prior_sha256);
        return 0;
    }
    const char *action = json_string_value(json_object_get(job->record, "action"));
    if (action && strcmp(action, "ISSUE") == 0)
        return pm_reject(&job->err, "serial.exists", "serial_number",
                         "serial %s was already issued with other content; send an UPDATE to "
                         "change it", job->serial);
    return 0;
}

const pm_stage pm_stage_fingerprint = {
    .name = "fingerprint",
    .create = fingerprint_create,
    .destroy = fingerprint_destroy,
    .worker_create = fingerprint_worker_create,
    .worker_destroy = fingerprint_worker_destroy,
    .process = fingerprint_process,
};
