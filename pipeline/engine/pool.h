/*
 * pool.h - the worker pool: N threads running the stage chain.
 *
 * The pool builds each stage's process-wide state once (stage->create) and,
 * per worker thread, each stage's scratch (stage->worker_create), so the
 * hot path shares nothing mutable between workers.  Workers take jobs from
 * an input queue, run the stages in order until one fails (job->err says
 * how) or finds the pass unchanged (job->unchanged), and hand the job to
 * `finish` on the same thread.  A job that arrives with job->err set runs
 * no stage.  A NULL job in the
 * queue stops one worker.
 */
#ifndef PM_POOL_H
#define PM_POOL_H

#include <stddef.h>

#include "engine/context.h"
#include "core/error.h"
#include "engine/job.h"
#include "engine/queue.h"

struct pm_stage;

typedef struct pm_pool pm_pool;

/* Called on the worker thread after the stages ran (ok or not). */
typedef void (*pm_pool_finish_fn)(void *arg, pm_job *job);

/*
 * Start `workers` threads.  stages/ctx/in are borrowed and must outlive the
 * pool.  Returns -1 with err if a stage or thread could not be created
 * (nothing is left running then).
 */
int pm_pool_start(const pm_context *ctx, const struct pm_stage *const *stages, size_t n_stages,
                  unsigned workers, pm_queue *in, pm_pool_finish_fn finish, void *arg,
                  pm_pool **out, pm_error *err);
/* Push one NULL per worker, wait for them, free everything. */
void pm_pool_stop(pm_pool *pool);
unsigned pm_pool_workers(const pm_pool *pool);

/* The workers' stage chain, merge .. bundle (decode runs before, see engine.c). */
extern const struct pm_stage *const pm_pipeline_stages[];
extern const size_t pm_pipeline_stages_len;

#endif
