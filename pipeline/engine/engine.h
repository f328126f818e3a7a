/*
 * engine.h - runs source -> stages -> store -> outcomes, and counts.
 *
 * The engine pulls raw records from the source on the calling thread,
 * hands them to a pool of workers (pipeline/engine/pool.h) that run every stage
 * in order with their own per-worker scratch, store the artefacts, and
 * report one outcome per record.  Invariant, checked at the end:
 *   in == passes + unchanged + rejects + failed.
 * `unchanged` counts records whose pass the registry already holds exactly
 * (nothing rendered, signed or stored).
 * `failed` counts records the system could not finish (store down, crypto
 * error); they are reported to the source as not durable (not committed)
 * and make the run fail.
 */
#ifndef PM_ENGINE_H
#define PM_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/context.h"
#include "engine/progress.h"
#include "outcomes/outcome.h"
#include "sources/source.h"
#include "stores/store.h"

typedef struct pm_run_stats {
    uint64_t in;
    uint64_t passes;
    uint64_t unchanged;
    uint64_t rejects;
    uint64_t failed;
    double seconds;
} pm_run_stats;

typedef struct pm_engine_opts {
    unsigned workers;          /* >= 1 */
    unsigned queue_size;       /* >= 1 */
    unsigned progress_ms;      /* 0 = no progress reports */
    /*
     * Called every progress_ms on the engine's progress thread, then once
     * with p->final set on the caller's thread after the last record.
     * NULL = no reports.  The engine prints nothing itself: the CLI does.
     */
    void (*on_progress)(void *arg, const pm_progress *p);
    void *progress_arg;
    const char *run_id;        /* recorded with every registry row; NULL = "" */
} pm_engine_opts;

/*
 * Run until the source ends (or is stopped).  Everything is borrowed.  With
 * ctx->registry set, every finished batch is written to it (one transaction)
 * before any record of the batch is reported; a store, registry or outcome
 * that cannot record stops the run (the rest ends as failed).
 * Returns 0 when the run completed (rejects allowed), -1 on a fatal error
 * (source error, or records failed); stats are filled either way.
 */
int pm_engine_run(const pm_context *ctx, pm_source *source, pm_store *store,
                  pm_outcome *const *outcomes, size_t n_outcomes,
                  const pm_engine_opts *opts, pm_run_stats *stats, pm_error *err);

#endif
