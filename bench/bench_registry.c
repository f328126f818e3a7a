/*
 * bench_registry.c - registry apply() throughput: batches of fresh passes,
 * one transaction (and one synchronous commit) each.
 *
 *   bench_registry sqlite FILE [BATCHES [PER_BATCH]]
 *   bench_registry pg URL [BATCHES [PER_BATCH]]   password: $PASSMILL_REGISTRY_PASSWORD_FILE
 *
 * Prints batches/s and passes/s.  Use a fresh FILE / database (schema).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "registry/registry.h"
#include "wallet/template.h"

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "sqlite") != 0 && strcmp(argv[1], "pg") != 0)) {
        fprintf(stderr, "usage: bench_registry sqlite FILE | pg URL [BATCHES [PER_BATCH]]\n");
        return 2;
    }
    int batches = argc > 3 ? atoi(argv[3]) : 200, per = argc > 4 ? atoi(argv[4]) : 64;
    char password[256] = "";
    const char *pwfile = getenv("PASSMILL_REGISTRY_PASSWORD_FILE");
    FILE *pf = pwfile ? fopen(pwfile, "r") : NULL;
    if (pf) {
        if (!fgets(password, sizeof password, pf))
            password[0] = '\0';
        password[strcspn(password, "\r\n")] = '\0';
        fclose(pf);
    }
    pm_registry *r = NULL;
    pm_error err;
    int rc = strcmp(argv[1], "pg") == 0 ? pm_registry_pg_open(argv[2], password, &r, &err)
                                        : pm_registry_sqlite_open(argv[2], &r, &err);
    if (rc != 0) {
        fprintf(stderr, "bench_registry: %s\n", err.message);
        return 1;
    }
    static pm_template tmpl = {.id = "concert", .version = "0123456789abcdef"};
    pm_job *jobs = calloc((size_t)per, sizeof *jobs);
    pm_job **ptrs = calloc((size_t)per, sizeof *ptrs);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int b = 0; b < batches; b++) {
        for (int j = 0; j < per; j++) {
            pm_job *job = &jobs[j];
            pm_job_init(job);
            char serial[48];
            snprintf(serial, sizeof serial, "B-%d-%d-%ld", b, j, (long)t0.tv_sec);
            job->record = json_pack("{s:s, s:s, s:s, s:{s:s}, s:[s, s]}", "serial_number", serial,
                                    "template_id", "concert", "action", "ISSUE", "event", "event_id",
                                    "EV1", "pass_group_ids", "g1", "g2");
            job->serial = json_string_value(json_object_get(job->record, "serial_number"));
            job->tmpl = &tmpl;
            job->status = "active";
            job->outcome = PM_OUTCOME_PASS;
            job->now = 1700000000;
            job->origin.partition = -1;
            memset(job->content_hash, 'c', 64);
            pm_registry_new_token(job->auth_token, &err);
            ptrs[j] = job;
        }
        if (r->ops->apply(r, "bench", ptrs, (size_t)per, &err) != 0) {
            fprintf(stderr, "bench_registry: %s\n", err.message);
            return 1;
        }
        for (int j = 0; j < per; j++)
            pm_job_free(&jobs[j]);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%s: %d batches of %d passes in %.2f s: %.0f batches/s, %.0f passes/s\n", argv[1], batches,
           per, s, batches / s, batches * per / s);
    free(jobs);
    free(ptrs);
    pm_registry_close(r);
    return 0;
}
