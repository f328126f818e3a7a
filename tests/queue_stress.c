#include "queue_stress.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/queue.h"

typedef struct stress {
    pm_queue *q;
    size_t per_producer;
    atomic_uint_fast64_t sum;
    atomic_uint_fast64_t count;
    atomic_uchar *seen; /* times each item was consumed */
} stress;

typedef struct producer_arg {
    stress *s;
    uintptr_t first;
} producer_arg;

static void *producer(void *arg)
{
    producer_arg *p = arg;
    for (uintptr_t i = 0; i < p->s->per_producer; i++) {
        uintptr_t v = p->first + i + 1; /* never NULL: NULL stops a consumer */
        if (i % 3 == 0) {
            while (!pm_queue_try_push(p->s->q, (void *)v))
                ;
        } else {
            pm_queue_push(p->s->q, (void *)v);
        }
    }
    return NULL;
}

static void *consumer(void *arg)
{
    stress *s = arg;
    for (unsigned n = 0;; n++) {
        void *item;
        if (n % 2 == 0) {
            item = pm_queue_pop(s->q);
        } else {
            while (!pm_queue_try_pop(s->q, &item))
                ;
        }
        if (!item)
            return NULL;
        uintptr_t v = (uintptr_t)item;
        atomic_fetch_add(&s->seen[v - 1], 1);
        atomic_fetch_add(&s->sum, v);
        atomic_fetch_add(&s->count, 1);
    }
}

int pm_queue_stress(int producers, int consumers, size_t per_producer, size_t capacity,
                    char *why, size_t why_len)
{
    stress s;
    size_t total = (size_t)producers * per_producer;
    s.q = pm_queue_create(capacity);
    s.per_producer = per_producer;
    s.seen = calloc(total, sizeof *s.seen);
    atomic_init(&s.sum, 0);
    atomic_init(&s.count, 0);
    pthread_t *prod = calloc((size_t)producers, sizeof *prod);
    pthread_t *cons = calloc((size_t)consumers, sizeof *cons);
    producer_arg *args = calloc((size_t)producers, sizeof *args);
    int rc = -1;
    if (!s.q || !s.seen || !prod || !cons || !args) {
        snprintf(why, why_len, "out of memory");
        goto out;
    }
    for (int i = 0; i < consumers; i++)
        pthread_create(&cons[i], NULL, consumer, &s);
    for (int i = 0; i < producers; i++) {
        args[i].s = &s;
        args[i].first = (uintptr_t)i * per_producer;
        pthread_create(&prod[i], NULL, producer, &args[i]);
    }
    for (int i = 0; i < producers; i++)
        pthread_join(prod[i], NULL);
    for (int i = 0; i < consumers; i++)
        pm_queue_push(s.q, NULL);
    for (int i = 0; i < consumers; i++)
        pthread_join(cons[i], NULL);

    uint64_t expect = (uint64_t)total * (total + 1) / 2;
    if (atomic_load(&s.count) != total || atomic_load(&s.sum) != expect) {
        snprintf(why, why_len, "consumed %llu items (sum %llu), expected %zu (sum %llu)",
                 (unsigned long long)atomic_load(&s.count), (unsigned long long)atomic_load(&s.sum),
                 total, (unsigned long long)expect);
        goto out;
    }
    for (size_t i = 0; i < total; i++) {
        if (atomic_load(&s.seen[i]) != 1) {
            snprintf(why, why_len, "item %zu consumed %d times", i + 1, (int)atomic_load(&s.seen[i]));
            goto out;
        }
    }
    void *left;
    if (pm_queue_try_pop(s.q, &left)) {
        snprintf(why, why_len, "queue not empty at the end");
        goto out;
    }
    rc = 0;
out:
    free(args);
    free(prod);
    free(cons);
    free(s.seen);
    pm_queue_destroy(s.q);
    return rc;
}
