/*
 * stress_registry.c - registry readers on worker threads while the writer
 * applies batches, for the ThreadSanitizer build (plain program: Criterion
 * does not start under TSan here).  SQLite always; PostgreSQL too when
 * PASSMILL_REGISTRY_URL is set (password in PASSMILL_REGISTRY_PASSWORD_FILE),
 * e.g. eval "$(ops/pg-dev start)".  Exit 0 when every lookup succeeded and
 * saw the right token.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "registry/registry.h"
#include "wallet/template.h"

#define READERS 4
#define BATCHES 30
#define PER 20

typedef struct shared {
    pm_registry *r;
    atomic_int done;
    atomic_int failures;
    char tokens[BATCHES * PER][PM_AUTH_TOKEN_LEN + 1];
    atomic_int applied;                 /* passes whose token is final */
    int tag;                            /* in every serial: a shared database may hold older runs' */
} shared;

static void *reader_main(void *arg)
{
    shared *s = arg;
    pm_registry_reader *rd = NULL;
    pm_error err;
    if (s->r->ops->reader_open(s->r, &rd, &err) != 0) {
        fprintf(stderr, "stress_registry: reader_open: %s\n", err.message);
        atomic_fetch_add(&s->failures, 1);
        return NULL;
    }
    for (unsigned i = 0; !atomic_load(&s->done) || i < 100; i++) {
        int applied = atomic_load(&s->applied);
        if (applied == 0)
            continue;
        int k = (int)((i * 7919u) % (unsigned)applied);
        char serial[32];
        snprintf(serial, sizeof serial, "ST%d-%05d", s->tag, k);
        pm_registry_pass p;
        int rc = pm_registry_lookup(rd, serial, false, &p, &err);
        if (rc != 1 || strcmp(p.auth_token, s->tokens[k]) != 0) {
            fprintf(stderr, "stress_registry: lookup %s: %d %s\n", serial, rc, rc < 0 ? err.message : "");
            atomic_fetch_add(&s->failures, 1);
            break;
        }
    }
    pm_registry_reader_close(rd);
    return NULL;
}

static int stress(const char *name, pm_registry *r)
{
    static pm_template tmpl = {.id = "concert", .version = "0123456789abcdef"};
    shared *s = calloc(1, sizeof *s);
    s->r = r;
    s->tag = (int)getpid();
    pthread_t th[READERS];
    for (int t = 0; t < READERS; t++)
        pthread_create(&th[t], NULL, reader_main, s);
    pm_job jobs[PER];
    pm_job *ptrs[PER];
    pm_error err;
    int rc = 0;
    for (int b = 0; b < BATCHES && rc == 0; b++) {
        for (int j = 0; j < PER; j++) {
            int k = b * PER + j;
            pm_job *job = &jobs[j];
            pm_job_init(job);
            char serial[32];
            snprintf(serial, sizeof serial, "ST%d-%05d", s->tag, k);
            job->record = json_pack("{s:s, s:s, s:s, s:{s:s}, s:[s]}", "serial_number", serial,
                                    "template_id", "concert", "action", "ISSUE", "event", "event_id", "EV",
                                    "pass_group_ids", "g");
            job->serial = json_string_value(json_object_get(job->record, "serial_number"));
            job->tmpl = &tmpl;
            job->status = "active";
            job->outcome = PM_OUTCOME_PASS;
            job->now = 1700000000;
            job->origin.partition = -1;
            memset(job->content_hash, 'c', 64);
            pm_registry_new_token(job->auth_token, &err);
            memcpy(s->tokens[k], job->auth_token, sizeof job->auth_token);
            ptrs[j] = job;
        }
        if (r->ops->apply(r, "stress", ptrs, PER, &err) != 0) {
            fprintf(stderr, "stress_registry: %s: apply: %s\n", name, err.message);
            rc = 1;
        }
        atomic_store(&s->applied, (b + 1) * PER); /* after the commit: readers may look these up */
        for (int j = 0; j < PER; j++)
            pm_job_free(&jobs[j]);
    }
    atomic_store(&s->done, 1);
    for (int t = 0; t < READERS; t++)
        pthread_join(th[t], NULL);
    if (atomic_load(&s->failures))
        rc = 1;
    fprintf(stderr, "stress_registry: %s: %s\n", name, rc == 0 ? "ok" : "FAILED");
    free(s);
    return rc;
}

int main(void)
{
    char path[] = "/tmp/stress-registry-XXXXXX";
    if (!mkdtemp(path))
        return 2;
    char file[64];
    snprintf(file, sizeof file, "%s/registry.db", path);
    pm_registry *r = NULL;
    pm_error err;
    int rc = 0;
    if (pm_registry_sqlite_open(file, &r, &err) != 0) {
        fprintf(stderr, "stress_registry: %s\n", err.message);
        rc = 1;
    } else {
        rc |= stress("sqlite", r);
        pm_registry_close(r);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        rc = 1;

    const char *url = getenv("PASSMILL_REGISTRY_URL");
    if (url && *url) {
        /* Opened as passmill opens it: the password from the file, never argv. */
        pm_config *cfg = pm_config_create();
        const char *pwfile = getenv("PASSMILL_REGISTRY_PASSWORD_FILE");
        int orc = -1;
        if (!cfg)
            pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
        else if (pm_config_set(cfg, "registry.url", url, &err) == 0 &&
                 (!pwfile || pm_config_set(cfg, "registry.password_file", pwfile, &err) == 0))
            orc = pm_registry_open(cfg, &r, &err);
        pm_config_destroy(cfg);
        if (orc != 0) {
            fprintf(stderr, "stress_registry: %s\n", err.message);
            rc = 1;
        } else {
            rc |= stress("postgresql", r);
            pm_registry_close(r);
        }
    }
    return rc;
}
