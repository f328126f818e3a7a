/*
 * bench_registry.c - registry apply() throughput: batches of fresh passes,
 * one transaction (and one synchronous commit) each.
 *
 *   bench_registry sqlite FILE [BATCHES [PER_BATCH]]
 *   bench_registry pg URL [BATCHES [PER_BATCH]]   password: $PASSMILL_REGISTRY_PASSWORD_FILE
 *
 * The passes are `passmill sample` records (what bench/run issues), with
 * their canonical text and content hash made as the fingerprint stage makes
 * them, outside the timing.  Prints batches/s, passes/s and the process CPU
 * per pass spent in apply() (for PostgreSQL only the client's share).  Use a
 * fresh FILE / database (schema).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "record/sample.h"
#include "registry/registry.h"
#include "wallet/template.h"

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "sqlite") != 0 && strcmp(argv[1], "pg") != 0)) {
        fprintf(stderr, "usage: bench_registry sqlite FILE | pg URL [BATCHES [PER_BATCH]]\n");
        return 2;
    }
    int batches = argc > 3 ? atoi(argv[3]) : 200, per = argc > 4 ? atoi(argv[4]) : 64;
    /* Opened as passmill opens it: the password from the file, never argv. */
    pm_config *cfg = pm_config_create();
    pm_registry *r = NULL;
    pm_error err;
    const char *pwfile = getenv("PASSMILL_REGISTRY_PASSWORD_FILE");
    bool pg = strcmp(argv[1], "pg") == 0;
    int rc = -1;
    if (!cfg)
        pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
    else if (pm_config_set(cfg, pg ? "registry.url" : "registry.path", argv[2], &err) == 0 &&
             (!pg || !pwfile || pm_config_set(cfg, "registry.password_file", pwfile, &err) == 0))
        rc = pm_registry_open(cfg, &r, &err);
    pm_config_destroy(cfg);
    if (rc != 0) {
        fprintf(stderr, "bench_registry: %s\n", err.message);
        return 1;
    }
    static pm_template tmpl = {.id = "concert", .version = "0123456789abcdef"};
    pm_job *jobs = calloc((size_t)per, sizeof *jobs);
    pm_job **ptrs = calloc((size_t)per, sizeof *ptrs);
    pm_sample_gen *gen;
    if (pm_sample_gen_create((uint64_t)time(NULL), &gen, &err) != 0) {
        fprintf(stderr, "bench_registry: %s\n", err.message);
        return 1;
    }
    static const uint8_t signer[32];
    double wall = 0, cpu = 0;
    for (int b = 0; b < batches; b++) {
        for (int j = 0; j < per; j++) {
            pm_job *job = &jobs[j];
            pm_job_init(job);
            if (pm_sample_gen_next(gen, &job->record, &err) != 0 ||
                pm_registry_content_hash(job->record, "active", tmpl.version, signer, &job->record_json,
                                         job->content_hash, &err) != 0 ||
                pm_registry_new_token(job->auth_token, &err) != 0) {
                fprintf(stderr, "bench_registry: %s\n", err.message);
                return 1;
            }
            job->serial = json_string_value(json_object_get(job->record, "serial_number"));
            job->tmpl = &tmpl;
            job->status = "active";
            job->outcome = PM_OUTCOME_PASS;
            job->now = 1700000000;
            job->origin.partition = -1;
            job->expect_tag = PM_TAG_ABSENT; /* as the fingerprint stage sets it for a new serial */
            ptrs[j] = job;
        }
        struct timespec w0, w1, c0, c1;
        clock_gettime(CLOCK_MONOTONIC, &w0);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        if (r->ops->apply(r, "bench", ptrs, (size_t)per, &err) != 0) {
            fprintf(stderr, "bench_registry: %s\n", err.message);
            return 1;
        }
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        clock_gettime(CLOCK_MONOTONIC, &w1);
        wall += (double)(w1.tv_sec - w0.tv_sec) + (double)(w1.tv_nsec - w0.tv_nsec) / 1e9;
        cpu += (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
        for (int j = 0; j < per; j++)
            pm_job_free(&jobs[j]);
    }
    pm_sample_gen_destroy(gen);
    double n = (double)batches * per;
    printf("%s: %d batches of %d passes in %.2f s: %.0f batches/s, %.0f passes/s, %.1f us CPU/pass\n",
           argv[1], batches, per, wall, batches / wall, n / wall, cpu * 1e6 / n);
    free(jobs);
    free(ptrs);
    pm_registry_close(r);
    return 0;
}
