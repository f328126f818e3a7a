/*
 * bench_sign - the sign stage alone: signatures per second over a typical
 * manifest.json, with T threads each owning its scratch, exactly as the
 * pipeline's workers do.  Compare with `openssl speed -multi T rsa2048`.
 *
 * usage: bench_sign [--threads T] [--seconds S] [--api]
 *   --api  use the reference CMS-API path (pm_sign_manifest) instead of the
 *          pipeline's pm_signer fast path, to measure what the fast path buys.
 * Prints: bench=sign_only_tT value=X unit=signs/s
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "wallet/identity.h"
#include "stages/sign.h"

static const char manifest[] =
    "{\"icon.png\":\"3c1ab3d5a0bb8a3d0c5f1f3e0d1c5b8f9a1e2d3c\",\"icon@2x.png\":\"5d2e1f7a9b3c4d5e6f708192a3b4c5d6e7f80910\","
    "\"logo.png\":\"0a1b2c3d4e5f60718293a4b5c6d7e8f901234567\",\"logo@2x.png\":\"89abcdef0123456789abcdef0123456789abcdef\","
    "\"pass.json\":\"fedcba9876543210fedcba9876543210fedcba98\",\"strip.png\":\"1111222233334444555566667777888899990000\","
    "\"strip@2x.png\":\"aaaabbbbccccddddeeeeffff0000111122223333\",\"en.lproj/pass.strings\":\"0123012301230123012301230123012301230123\"}";

typedef struct shared {
    const pm_identity *id;
    const pm_signer *signer;
    int use_api;
    atomic_bool stop;
    atomic_uint_fast64_t count;
    atomic_int errors;
} shared;

static void *bench_thread(void *arg)
{
    shared *sh = arg;
    pm_buf out = PM_BUF_INIT;
    pm_error err;
    pm_signer_scratch *sc = NULL;
    if (!sh->use_api && pm_signer_scratch_create(sh->signer, &sc, &err) != 0) {
        fprintf(stderr, "bench_sign: %s\n", err.message);
        atomic_fetch_add(&sh->errors, 1);
        return NULL;
    }
    uint64_t n = 0;
    int64_t t = 1800000000; /* 2027-01-15, inside the dev certificate's validity */
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        int rc = sh->use_api ? pm_sign_manifest(sh->id, (const uint8_t *)manifest, sizeof manifest - 1, t, &out, &err)
                             : pm_signer_sign(sc, (const uint8_t *)manifest, sizeof manifest - 1, t, &out, &err);
        if (rc != 0) {
            fprintf(stderr, "bench_sign: %s\n", err.message);
            atomic_fetch_add(&sh->errors, 1);
            break;
        }
        n++;
    }
    atomic_fetch_add(&sh->count, n);
    pm_signer_scratch_destroy(sc);
    pm_buf_free(&out);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = 1, seconds = 5, use_api = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--api"))
            use_api = 1;
        else {
            fprintf(stderr, "usage: bench_sign [--threads T] [--seconds S] [--api]\n");
            return 2;
        }
    }
    if (threads < 1 || seconds < 1)
        return 2;

    char dir[] = "/tmp/pm-bench-sign-XXXXXX";
    if (!mkdtemp(dir))
        return 3;
    char idir[600], cert[700], key[700], chain[700];
    snprintf(idir, sizeof idir, "%s/id", dir);
    snprintf(cert, sizeof cert, "%s/signer.pem", idir);
    snprintf(key, sizeof key, "%s/signer.key", idir);
    snprintf(chain, sizeof chain, "%s/wwdr.pem", idir);
    pm_error err;
    pm_config *cfg = pm_config_create();
    pm_identity *id = NULL;
    pm_signer *signer = NULL;
    int status = 3;
    if (!cfg || pm_identity_create_dev(idir, "pass.dev.passmill.stadium", "PMDEVTEAM1", &err) != 0 ||
        pm_config_set(cfg, "sign.cert", cert, &err) || pm_config_set(cfg, "sign.key", key, &err) ||
        pm_config_set(cfg, "sign.chain", chain, &err) || pm_identity_load(cfg, &id, &err) != 0 ||
        pm_signer_create(id, &signer, &err) != 0) {
        fprintf(stderr, "bench_sign: %s\n", err.message);
        goto out;
    }

    shared sh = {.id = id, .signer = signer, .use_api = use_api};
    atomic_init(&sh.stop, false);
    atomic_init(&sh.count, 0);
    atomic_init(&sh.errors, 0);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; i++)
        pthread_create(&tids[i], NULL, bench_thread, &sh);
    sleep((unsigned)seconds);
    atomic_store(&sh.stop, true);
    for (int i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(tids);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (atomic_load(&sh.errors) == 0) {
        printf("bench=sign_only%s_t%d value=%.0f unit=signs/s\n", use_api ? "_cmsapi" : "", threads,
               (double)atomic_load(&sh.count) / secs);
        status = 0;
    }
out:
    pm_signer_destroy(signer);
    pm_identity_destroy(id);
    pm_config_destroy(cfg);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_sign: could not remove %s\n", dir);
    return status;
}
