#include "engine/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "stages/stage.h"

/* decode runs on the engine's source thread (engine.c: per-serial order). */
const pm_stage *const pm_pipeline_stages[] = {
    &pm_stage_merge, &pm_stage_validate, &pm_stage_fingerprint, &pm_stage_barcode,
    &pm_stage_manifest, &pm_stage_sign, &pm_stage_bundle,
};
const size_t pm_pipeline_stages_len = sizeof pm_pipeline_stages / sizeof pm_pipeline_stages[0];

typedef struct worker {
    pm_pool *pool;
    pthread_t thread;
    void **scratch;       /* one per stage */
    int started;
} worker;

struct pm_pool {
    const pm_stage *const *stages;
    size_t n_stages;
    void **states;        /* one per stage, read-only once built */
    pm_queue *in;
    pm_pool_finish_fn finish;
    void *arg;
    worker *workers;
    unsigned n_workers;
};

static void run_stages(pm_pool *p, worker *w, pm_job *job)
{
    if (job->err.code != PM_OK) /* rejected before the pool (source or decode) */
        return;
    for (size_t i = 0; i < p->n_stages && !job->unchanged; i++) {
        if (p->stages[i]->process(p->states[i], w->scratch[i], job) != 0) {
            if (job->err.code == PM_OK) /* a stage forgot to say why */
                pm_error_set(&job->err, PM_ERR_INTERNAL, "stage %s failed without an error",
                             p->stages[i]->name);
            return;
        }
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pm_pool *p = w->pool;
    pm_job *job;
    while ((job = pm_queue_pop(p->in)) != NULL) {
        run_stages(p, w, job);
        p->finish(p->arg, job);
    }
    return NULL;
}

static void free_scratch(pm_pool *p, worker *w)
{
    if (!w->scratch)
        return;
    for (size_t i = 0; i < p->n_stages; i++)
        if (w->scratch[i] && p->stages[i]->worker_destroy)
            p->stages[i]->worker_destroy(w->scratch[i]);
    free(w->scratch);
    w->scratch = NULL;
}

static void pool_free(pm_pool *p)
{
    for (unsigned i = 0; i < p->n_workers; i++)
        free_scratch(p, &p->workers[i]);
    for (size_t i = 0; i < p->n_stages; i++)
        if (p->states && p->states[i])
            p->stages[i]->destroy(p->states[i]);
    free(p->states);
    free(p->workers);
    free(p);
}

int pm_pool_start(const pm_context *ctx, const pm_stage *const *stages, size_t n_stages,
                  unsigned workers, pm_queue *in, pm_pool_finish_fn finish, void *arg,
                  pm_pool **out, pm_error *err)
{
    pm_pool *p = calloc(1, sizeof *p);
    if (!p)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    p->stages = stages;
    p->n_stages = n_stages;
    p->in = in;
    p->finish = finish;
    p->arg = arg;
    p->n_workers = workers;
    p->states = calloc(n_stages, sizeof *p->states);
    p->workers = calloc(workers, sizeof *p->workers);
    if (!p->states || !p->workers) {
        pool_free(p);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n_stages; i++) {
        if (stages[i]->create(ctx, &p->states[i], err) != 0) {
            pm_error_prefix(err, "stage %s", stages[i]->name);
            pool_free(p);
            return -1;
        }
    }
    for (unsigned w = 0; w < workers; w++) {
        worker *wk = &p->workers[w];
        wk->pool = p;
        wk->scratch = calloc(n_stages, sizeof *wk->scratch);
        if (!wk->scratch) {
            pool_free(p);
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < n_stages; i++) {
            if (stages[i]->worker_create &&
                stages[i]->worker_create(p->states[i], &wk->scratch[i], err) != 0) {
                pm_error_prefix(err, "stage %s worker", stages[i]->name);
                pool_free(p);
                return -1;
            }
        }
    }
    for (unsigned w = 0; w < workers; w++) {
        if (pthread_create(&p->workers[w].thread, NULL, worker_main, &p->workers[w]) != 0) {
            for (unsigned j = 0; j < w; j++)
                pm_queue_push(in, NULL);
            for (unsigned j = 0; j < w; j++)
                pthread_join(p->workers[j].thread, NULL);
            pool_free(p);
            return pm_error_set(err, PM_ERR_INTERNAL, "cannot start worker thread %u", w);
        }
        p->workers[w].started = 1;
    }
    *out = p;
    return 0;
}

void pm_pool_stop(pm_pool *p)
{
    if (!p)
        return;
    for (unsigned w = 0; w < p->n_workers; w++)
        pm_queue_push(p->in, NULL);
    for (unsigned w = 0; w < p->n_workers; w++)
        if (p->workers[w].started)
            pthread_join(p->workers[w].thread, NULL);
    pool_free(p);
}

unsigned pm_pool_workers(const pm_pool *p)
{
    return p->n_workers;
}
