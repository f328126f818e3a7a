/*
 * merge.c - stage 1: partial request + the registry's record (see merge.h).
 */
#include "stages/merge.h"

#include <stdlib.h>

#include "record/schema.h"
#include "registry/registry.h"
#include "stages/decode.h"

int pm_merge_patch(json_t *base, json_t *patch)
{
    const char *key;
    json_t *value;
    json_object_foreach(patch, key, value) {
        json_t *old = json_object_get(base, key);
        if (json_is_object(old) && json_is_object(value)) {
            if (pm_merge_patch(old, value) != 0)
                return -1;
        } else if (json_object_set(base, key, value) != 0) {
            return -1;
        }
    }
    return 0;
}

typedef struct merge_state {
    pm_registry *registry; /* borrowed from the context; NULL = none */
} merge_state;

static int merge_create(const pm_context *ctx, void **state, pm_error *err)
{
    merge_state *st = calloc(1, sizeof *st);
    if (!st)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    st->registry = ctx->registry;
    *state = st;
    return 0;
}

static void merge_destroy(void *state)
{
    free(state);
}

/* Scratch: this worker's registry reader (NULL without a registry). */
static int merge_worker_create(void *state, void **scratch, pm_error *err)
{
    merge_state *st = state;
    *scratch = NULL;
    if (!st->registry)
        return 0;
    return st->registry->ops->reader_open(st->registry, (pm_registry_reader **)scratch, err);
}

static void merge_worker_destroy(void *scratch)
{
    pm_registry_reader_close(scratch);
}

static int merge_process(void *state, void *scratch, pm_job *job)
{
    (void)state;
    if (!job->patch)
        return 0;
    if (!scratch)
        return pm_reject(&job->err, "record.partial", "",
                         "a change by serial (%s) needs a registry to take the rest of the pass "
                         "from: set registry.path or registry.url, or send the whole record",
                         job->serial);
    pm_registry_pass prior;
    int found = pm_registry_lookup(scratch, job->serial, true, &prior, &job->err);
    if (found < 0)
        return -1;
    if (!found || !prior.record) {
        json_decref(prior.record);
        return pm_reject(&job->err, "serial.unknown", "serial_number",
                         "no pass with serial %s in the registry: a change by serial needs an "
                         "earlier ISSUE (or send the whole record)", job->serial);
    }
    /* The merged record is built on this version of the row: apply()
     * writes it only if the row is still this one (another process). */
    job->expect_tag = prior.update_tag;
    json_t *merged = prior.record; /* ours now */
    if (pm_merge_patch(merged, job->patch) != 0) {
        json_decref(merged);
        return pm_error_set(&job->err, PM_ERR_NOMEM, "out of memory merging %s", job->serial);
    }
    json_t *rec = NULL;
    int rc = pm_schema_normalize(merged, &rec, &job->err);
    json_decref(merged);
    if (rc != 0)
        return -1;
    job->record = rec;
    job->serial = pm_record_str(rec, "serial_number");
    return 0;
}

const pm_stage pm_stage_merge = {
    .name = "merge",
    .create = merge_create,
    .destroy = merge_destroy,
    .worker_create = merge_worker_create,
    .worker_destroy = merge_worker_destroy,
    .process = merge_process,
};
