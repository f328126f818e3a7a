/*
 * bench_s3_put - PUT/s of the S3 store against a real server.
 *
 *   eval "$(ops/s3-dev start)"
 *   build/bench/bench_s3_put [COUNT [THREADS [SIZE [MAX_INFLIGHT]]]]
 *
 * THREADS threads (like the engine's workers) each put COUNT/THREADS objects
 * of SIZE random bytes under bench-<pid>/ through one store; prints the rate.
 * Endpoint and bucket from PASSMILL_S3_ENDPOINT / PASSMILL_S3_BUCKET,
 * credentials from the usual AWS_* variables.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stores/store.h"

typedef struct job {
    pm_store *st;
    int id, count;
    size_t size;
    int failures;
    char error[512];
} job;

static void *run(void *arg)
{
    job *j = arg;
    uint8_t *data = malloc(j->size);
    if (!data) {
        j->failures = j->count;
        return NULL;
    }
    unsigned seed = (unsigned)j->id * 2654435761u;
    for (size_t i = 0; i < j->size; i++) {
        seed = seed * 1103515245u + 12345u;
        data[i] = (uint8_t)(seed >> 16);
    }
    for (int i = 0; i < j->count; i++) {
        char key[96];
        snprintf(key, sizeof key, "bench-%d/t%d/%06d.pkpass", (int)getpid(), j->id, i);
        data[0] = (uint8_t)i;
        pm_object o = {.key = key, .data = data, .len = j->size,
                       .content_type = "application/vnd.apple.pkpass"};
        pm_error err;
        if (pm_store_put(j->st, &o, &err) != 0 && j->failures++ == 0)
            snprintf(j->error, sizeof j->error, "%s", err.message);
    }
    free(data);
    return NULL;
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 2000;
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    long size = argc > 3 ? atol(argv[3]) : 30000;
    const char *inflight = argc > 4 ? argv[4] : "16";
    const char *ep = getenv("PASSMILL_S3_ENDPOINT"), *bucket = getenv("PASSMILL_S3_BUCKET");
    if (count < 1 || threads < 1 || threads > 256 || size < 0 || !ep || !bucket) {
        fprintf(stderr, "usage: bench_s3_put [COUNT [THREADS [SIZE [MAX_INFLIGHT]]]]\n"
                        "needs PASSMILL_S3_ENDPOINT and PASSMILL_S3_BUCKET (eval \"$(ops/s3-dev env)\")\n");
        return 2;
    }
    pm_config *cfg = pm_config_create();
    pm_error err;
    pm_store *st = NULL;
    if (!cfg || pm_config_set(cfg, "s3.endpoint", ep, &err) != 0 ||
        pm_config_set(cfg, "s3.bucket", bucket, &err) != 0 ||
        pm_config_set(cfg, "s3.max_inflight", inflight, &err) != 0 ||
        pm_store_s3_open(cfg, &st, &err) != 0) {
        fprintf(stderr, "bench_s3_put: %s\n", err.message);
        return 1;
    }
    job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){.st = st, .id = i, .count = count / threads + (i < count % threads),
                        .size = (size_t)size};
        pthread_create(&tids[i], NULL, run, &jobs[i]);
    }
    int failures = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tids[i], NULL);
        if (jobs[i].failures && !failures)
            fprintf(stderr, "bench_s3_put: first failure: %s\n", jobs[i].error);
        failures += jobs[i].failures;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("bench_s3_put: %d PUTs of %ld bytes, %d threads, max_inflight %s: %.2f s, %.0f PUT/s, "
           "%.1f MB/s, %d failed\n",
           count, size, threads, inflight, secs, count / secs, count * (double)size / secs / 1e6,
           failures);
    pm_store_close(st);
    pm_config_destroy(cfg);
    free(jobs);
    free(tids);
    return failures ? 1 : 0;
}
