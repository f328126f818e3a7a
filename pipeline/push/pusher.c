/* pusher.c - see pusher.h. */
#include "push/pusher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "push/apns.h"
#include "registry/registry.h"
#include "wallet/identity.h"

struct pm_pusher {
    pm_registry *registry;
    pm_identity *identity;
    pm_apns *apns;
    size_t batch;
    int64_t lease;
    int64_t poll_ms;
    pm_push_item *items;
    pm_push_result *res;
    _Atomic uint64_t sent, failed, retried, gone;

    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;           /* under lock */
};

int pm_pusher_create(const pm_config *cfg, pm_pusher **out, pm_error *err)
{
    *out = NULL;
    if (cfg->push_batch < 1 || cfg->push_lease < 1 || cfg->push_connections < 1 ||
        cfg->push_streams < 1 || cfg->push_poll_ms < 1 || cfg->push_backoff_initial < 1 ||
        cfg->push_backoff_max < cfg->push_backoff_initial)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "push.batch, push.lease, push.connections, push.streams, push.poll_ms and"
                            " push.backoff_initial must be at least 1, push.backoff_max at least"
                            " push.backoff_initial");
    pm_pusher *p = calloc(1, sizeof *p);
    if (!p)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->batch = (size_t)cfg->push_batch;
    p->lease = cfg->push_lease;
    p->poll_ms = cfg->push_poll_ms;
    p->items = calloc(p->batch, sizeof *p->items);
    p->res = calloc(p->batch, sizeof *p->res);
    if (!p->items || !p->res) {
        pm_pusher_destroy(p);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    if (pm_registry_open(cfg, &p->registry, err) != 0)
        goto fail;
    if (!p->registry) {
        pm_error_set(err, PM_ERR_CONFIG, "push: no registry (registry.path or registry.url): no outbox");
        goto fail;
    }
    if (pm_identity_load(cfg, &p->identity, err) != 0)
        goto fail;
    pm_apns_options o = {
        .url = cfg->push_apns_url, .ca_file = cfg->push_ca_file,
        .cert = p->identity->cert, .key = p->identity->key, .chain = p->identity->chain,
        .connections = (long)cfg->push_connections, .streams = (long)cfg->push_streams,
        .timeout_ms = (long)cfg->push_timeout_ms,
        .backoff_initial = cfg->push_backoff_initial, .backoff_max = cfg->push_backoff_max,
    };
    if (pm_apns_create(&o, &p->apns, err) != 0)
        goto fail;
    *out = p;
    return 0;
fail:
    pm_pusher_destroy(p);
    return -1;
}

/* One round: claim, send, settle.  *n = pushes claimed (0: nothing due). */
static int round_once(pm_pusher *p, size_t *n, pm_error *err)
{
    int64_t now = (int64_t)time(NULL);
    if (p->registry->ops->push_claim(p->registry, now, now + p->lease, p->items, p->batch, n, err) != 0)
        return -1;
    if (*n == 0)
        return 0;
    if (pm_apns_send(p->apns, p->items, p->res, *n, now, err) != 0)
        return -1; /* claimed rows come due again when the lease ends */
    if (p->registry->ops->push_settle(p->registry, p->items, p->res, *n, err) != 0)
        return -1;
    for (size_t i = 0; i < *n; i++) {
        switch (p->res[i].verdict) {
        case PM_PUSH_SENT: atomic_fetch_add(&p->sent, 1); break;
        case PM_PUSH_FAILED: atomic_fetch_add(&p->failed, 1); break;
        case PM_PUSH_RETRY: atomic_fetch_add(&p->retried, 1); break;
        case PM_PUSH_GONE: atomic_fetch_add(&p->gone, 1); break;
        }
    }
    return 0;
}

static bool stopping(pm_pusher *p)
{
    pthread_mutex_lock(&p->lock);
    bool s = p->stopping;
    pthread_mutex_unlock(&p->lock);
    return s;
}

int pm_pusher_drain(pm_pusher *p, pm_error *err)
{
    size_t n;
    do {
        if (round_once(p, &n, err) != 0)
            return -1;
    } while (n > 0 && !stopping(p));
    return 0;
}

static void *thread_main(void *arg)
{
    pm_pusher *p = arg;
    while (!stopping(p)) {
        pm_error err;
        pm_error_clear(&err);
        if (pm_pusher_drain(p, &err) != 0)
            fprintf(stderr, "passmill: push: %s (trying again)\n", err.message);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += p->poll_ms / 1000;
        until.tv_nsec += (p->poll_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&p->lock);
        while (!p->stopping && pthread_cond_timedwait(&p->wake, &p->lock, &until) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

int pm_pusher_start(pm_pusher *p, pm_error *err)
{
    if (p->started)
        return 0;
    if (pthread_create(&p->thread, NULL, thread_main, p) != 0)
        return pm_error_set(err, PM_ERR_INTERNAL, "push: cannot start its thread");
    p->started = true;
    return 0;
}

void pm_pusher_stop(pm_pusher *p)
{
    if (!p || !p->started)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    p->started = false;
    pthread_mutex_lock(&p->lock);
    p->stopping = false; /* the thread is gone: pm_pusher_drain may run to the end again */
    pthread_mutex_unlock(&p->lock);
}

void pm_pusher_counts(pm_pusher *p, pm_push_counts *out)
{
    out->sent = atomic_load(&p->sent);
    out->failed = atomic_load(&p->failed);
    out->retried = atomic_load(&p->retried);
    out->gone = atomic_load(&p->gone);
}

void pm_pusher_destroy(pm_pusher *p)
{
    if (!p)
        return;
    pm_pusher_stop(p);
    pm_apns_destroy(p->apns);
    pm_identity_destroy(p->identity);
    pm_registry_close(p->registry);
    free(p->items);
    free(p->res);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
