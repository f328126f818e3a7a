/*
 * stage.h - the one interface every pipeline stage implements.
 *
 * The engine knows a stage only through this table.  A stage has:
 *   - process-wide state built once by create() from the read-only context
 *     (compiled template, signing identity, secrets) and never mutated after;
 *   - optional per-worker scratch (OpenSSL contexts, buffers) built by
 *     worker_create(), used by one thread only, reused across records;
 *   - process(), which reads the job fields earlier stages wrote and writes
 *     its own (see pipeline/engine/job.h).  On failure it fills job->err (a reject
 *     for a bad record, another code for a system failure) and returns -1;
 *     the engine then skips the remaining stages for that record.  A stage
 *     that finds the pass unchanged (fingerprint) sets job->unchanged and
 *     returns 0: the remaining stages are skipped too.
 * process() must be safe to call concurrently from different workers with
 * different scratch.  Stages never call back into the engine.
 */
#ifndef PM_STAGE_H
#define PM_STAGE_H

#include "engine/context.h"
#include "core/error.h"
#include "engine/job.h"

typedef struct pm_stage {
    const char *name;
    int (*create)(const pm_context *ctx, void **state, pm_error *err);
    void (*destroy)(void *state);
    /* May be NULL: the stage then gets scratch == NULL. */
    int (*worker_create)(void *state, void **scratch, pm_error *err);
    void (*worker_destroy)(void *scratch);
    int (*process)(void *state, void *scratch, pm_job *job);
} pm_stage;

/* The stages, in pipeline order (stages/<name>.c). */
extern const pm_stage pm_stage_decode;
extern const pm_stage pm_stage_merge;
extern const pm_stage pm_stage_validate;
extern const pm_stage pm_stage_fingerprint;
extern const pm_stage pm_stage_barcode;
extern const pm_stage pm_stage_manifest;
extern const pm_stage pm_stage_sign;
extern const pm_stage pm_stage_bundle;

#endif
