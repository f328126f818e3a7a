/*
 * bench_bundle - the bundle stage alone (and, for comparison, manifest):
 * microseconds per pass on realistic jobs, one worker.
 *
 * Builds a pm_context from a config (default config/demo.conf, run from the
 * repository root: it needs demo/identity from `ops/demo`), pushes R sample
 * records through decode, validate, barcode, manifest and sign once, then
 * times N calls of the chosen stage's process() cycling over those jobs,
 * exactly as one pipeline worker calls it (same scratch, reused buffers).
 *
 * --stage verify times the check the manifest stage makes of every rendered
 * pass.json (pm_verify_pass_json on the tree) and --stage pass the whole
 * chain, decode to bundle, from the record's bytes: the two give the
 * check's share of a pass.
 *
 * Any single stage can be timed (decode, validate, barcode, manifest, sign,
 * bundle): the per-part table of docs/benchmarks.md.  The time is the
 * process's CPU time (one thread), which holds up on a shared machine where
 * wall-clock time does not.
 *
 * usage: bench_bundle [--config FILE] [--count N] [--records R]
 *                     [--stage decode|validate|barcode|manifest|sign|bundle|verify|pass]
 * Prints: bench=<stage> value=X unit=us/pass (CPU)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "engine/context.h"
#include "engine/job.h"
#include "record/sample.h"
#include "record/schema.h"
#include "stages/stage.h"
#include "wallet/verify.h"

#define FIXED_NOW 1800000000 /* 2027-01-15, inside the dev certificate's validity */

static const pm_stage *const stages[] = {
    &pm_stage_decode, &pm_stage_validate, &pm_stage_barcode,
    &pm_stage_manifest, &pm_stage_sign, &pm_stage_bundle,
};
#define N_STAGES (sizeof stages / sizeof *stages)

typedef struct runner {
    void *state[N_STAGES], *scratch[N_STAGES];
} runner;

static int die(const char *what, const pm_error *err)
{
    fprintf(stderr, "bench_bundle: %s: %s\n", what, err->message);
    return 1;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static int runner_open(runner *r, const pm_context *ctx, pm_error *err)
{
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < N_STAGES; i++) {
        if (stages[i]->create(ctx, &r->state[i], err) != 0)
            return -1;
        if (stages[i]->worker_create &&
            stages[i]->worker_create(r->state[i], &r->scratch[i], err) != 0)
            return -1;
    }
    return 0;
}

static void runner_close(runner *r)
{
    for (size_t i = N_STAGES; i-- > 0;) {
        if (stages[i]->worker_destroy && r->scratch[i])
            stages[i]->worker_destroy(r->scratch[i]);
        if (r->state[i])
            stages[i]->destroy(r->state[i]);
    }
}

/* One sample record through every stage: the job as bundle finds it (and leaves it). */
static int prepare(runner *r, pm_sample_gen *gen, pm_job *job, pm_error *err)
{
    json_t *rec;
    if (pm_sample_gen_next(gen, &rec, err) != 0)
        return -1;
    char *text = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (!text)
        return pm_error_set(err, PM_ERR_NOMEM, "json_dumps");
    pm_job_init(job);
    job->format = PM_INPUT_JSON;
    job->now = FIXED_NOW;
    int rc = pm_buf_append_str(&job->raw, text);
    free(text);
    for (size_t i = 0; rc == 0 && i < N_STAGES; i++)
        if (stages[i]->process(r->state[i], r->scratch[i], job) != 0) {
            *err = job->err;
            return -1;
        }
    return rc;
}

int main(int argc, char **argv)
{
    const char *conf = "config/demo.conf", *stage = "bundle";
    long count = 20000, records = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            conf = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = atol(argv[++i]);
        else if (!strcmp(argv[i], "--records") && i + 1 < argc)
            records = atol(argv[++i]);
        else if (!strcmp(argv[i], "--stage") && i + 1 < argc)
            stage = argv[++i];
        else {
            fprintf(stderr, "usage: bench_bundle [--config FILE] [--count N] [--records R] "
                            "[--stage decode|validate|barcode|manifest|sign|bundle|verify|"
                            "pass]\n");
            return 2;
        }
    }
    /* A stage index, or the two pseudo-stages past the end. */
    enum { VERIFY = N_STAGES, PASS, NONE };
    size_t which = !strcmp(stage, "verify") ? VERIFY : !strcmp(stage, "pass") ? PASS : NONE;
    for (size_t i = 0; i < N_STAGES; i++)
        if (!strcmp(stage, stages[i]->name))
            which = i;
    if (which == NONE || count < 1 || records < 1) {
        fprintf(stderr, "bench_bundle: --stage decode|validate|barcode|manifest|sign|bundle|"
                        "verify|pass, --count and --records >= 1\n");
        return 2;
    }

    pm_error err;
    pm_config *cfg = pm_config_create();
    if (!cfg || pm_schema_init(&err) != 0 || pm_config_load_file(cfg, conf, &err) != 0)
        return die(conf, &err);
    pm_context *ctx;
    if (pm_context_create(cfg, &ctx, &err) != 0)
        return die("context", &err);
    runner r;
    if (runner_open(&r, ctx, &err) != 0)
        return die("stages", &err);
    pm_sample_gen *gen;
    if (pm_sample_gen_create(1, &gen, &err) != 0)
        return die("sample", &err);
    pm_job *jobs = calloc((size_t)records, sizeof *jobs);
    if (!jobs)
        return 1;
    for (long i = 0; i < records; i++)
        if (prepare(&r, gen, &jobs[i], &err) != 0)
            return die("preparing a job", &err);

    /* verify: each job's pass.json as the tree the manifest stage checks; pass: its input. */
    json_t **trees = calloc((size_t)records, sizeof *trees);
    char **raws = calloc((size_t)records, sizeof *raws);
    if (!trees || !raws)
        return 1;
    for (long i = 0; i < records; i++) {
        trees[i] = json_loadb((const char *)jobs[i].pass_json.data, jobs[i].pass_json.len, 0, NULL);
        raws[i] = strndup((const char *)jobs[i].raw.data, jobs[i].raw.len);
        if (!trees[i] || !raws[i])
            return 1;
    }
    pm_verify_report *report = malloc(sizeof *report);
    if (!report)
        return 1;

    size_t bytes = 0;
    struct timespec t0;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    for (long n = 0; n < count; n++) {
        pm_job *job = &jobs[n % records];
        if (which == VERIFY) {
            if (pm_verify_pass_json(trees[n % records], report) != 0)
                return die(stage, &(pm_error){.message = "a pass fails verify"});
            bytes += job->pass_json.len;
            continue;
        }
        if (which == PASS) {
            pm_job_reset(job);
            job->now = FIXED_NOW;
            if (pm_buf_append_str(&job->raw, raws[n % records]) != 0)
                return 1;
            for (size_t i = 0; i < N_STAGES; i++)
                if (stages[i]->process(r.state[i], r.scratch[i], job) != 0)
                    return die(stage, &job->err);
            bytes += job->pkpass.len;
            continue;
        }
        if (which == 0) { /* decode starts from a fresh job holding the record's bytes */
            pm_job_reset(job);
            job->now = FIXED_NOW;
            if (pm_buf_append_str(&job->raw, raws[n % records]) != 0)
                return 1;
        }
        if (stages[which]->process(r.state[which], r.scratch[which], job) != 0)
            return die(stage, &job->err);
        bytes += which == 5 ? job->pkpass.len : job->pass_json.len;
    }
    double us = seconds_since(&t0) * 1e6 / (double)count;
    fprintf(stderr, "bench_bundle: %ld x %s, %.0f output bytes/pass\n", count, stage,
            (double)bytes / (double)count);
    printf("bench=%s value=%.1f unit=us/pass\n", stage, us);

    for (long i = 0; i < records; i++) {
        json_decref(trees[i]);
        free(raws[i]);
        pm_job_free(&jobs[i]);
    }
    free(trees);
    free(raws);
    free(report);
    free(jobs);
    pm_sample_gen_destroy(gen);
    runner_close(&r);
    pm_context_destroy(ctx);
    pm_config_destroy(cfg);
    return 0;
}
