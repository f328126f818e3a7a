/*
 * Stress tests for the lock-free MPMC queue and the worker pool.
 * Run under ThreadSanitizer by ops/test (build-tsan).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "queue.h"

#define PRODUCERS 4
#define CONSUMERS 4
#define PER_PRODUCER 50000

typedef struct stress {
    pm_queue *q;
    atomic_uint_fast64_t sum;
    atomic_uint_fast64_t count;
    unsigned char *seen; /* one flag per item: each item exactly once */
} stress;

typedef struct producer_arg {
    stress *s;
    uintptr_t first;
} producer_arg;

static void *producer(void *arg)
{
    producer_arg *p = arg;
    for (uintptr_t i = 0; i < PER_PRODUCER; i++) {
        uintptr_t v = p->first + i + 1; /* never NULL */
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
    for (;;) {
        void *item;
        if ((atomic_load(&s->count) & 1) == 0) {
            item = pm_queue_pop(s->q);
        } else {
            while (!pm_queue_try_pop(s->q, &item))
                ;
        }
        if (!item)
            return NULL;
        uintptr_t v = (uintptr_t)item;
        /* Each item is consumed once: a second time would flip it back. */
        s->seen[v - 1] ^= 1;
        atomic_fetch_add(&s->sum, v);
        atomic_fetch_add(&s->count, 1);
    }
}

Test(queue, mpmc_every_item_exactly_once, .timeout = 120)
{
    stress s;
    s.q = pm_queue_create(64); /* small: forces full and empty waits */
    cr_assert_not_null(s.q);
    atomic_init(&s.sum, 0);
    atomic_init(&s.count, 0);
    size_t total = (size_t)PRODUCERS * PER_PRODUCER;
    s.seen = calloc(total, 1);
    pthread_t prod[PRODUCERS], cons[CONSUMERS];
    producer_arg args[PRODUCERS];
    for (int i = 0; i < CONSUMERS; i++)
        pthread_create(&cons[i], NULL, consumer, &s);
    for (int i = 0; i < PRODUCERS; i++) {
        args[i].s = &s;
        args[i].first = (uintptr_t)i * PER_PRODUCER;
        pthread_create(&prod[i], NULL, producer, &args[i]);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(prod[i], NULL);
    for (int i = 0; i < CONSUMERS; i++)
        pm_queue_push(s.q, NULL);
    for (int i = 0; i < CONSUMERS; i++)
        pthread_join(cons[i], NULL);

    cr_assert_eq(atomic_load(&s.count), total);
    uint64_t expect = (uint64_t)total * (total + 1) / 2;
    cr_assert_eq(atomic_load(&s.sum), expect);
    for (size_t i = 0; i < total; i++)
        cr_assert_eq(s.seen[i], 1, "item %zu seen %d times (mod 2)", i + 1, s.seen[i]);
    void *left;
    cr_assert(!pm_queue_try_pop(s.q, &left), "queue must be empty");
    free(s.seen);
    pm_queue_destroy(s.q);
}

Test(queue, fifo_and_capacity_single_thread)
{
    pm_queue *q = pm_queue_create(3); /* rounds up to 4 */
    cr_assert_not_null(q);
    for (uintptr_t i = 1; i <= 4; i++)
        cr_assert(pm_queue_try_push(q, (void *)i));
    cr_assert(!pm_queue_try_push(q, (void *)5), "a full queue refuses");
    for (uintptr_t i = 1; i <= 4; i++)
        cr_assert_eq((uintptr_t)pm_queue_pop(q), i);
    void *x;
    cr_assert(!pm_queue_try_pop(q, &x));
    pm_queue_destroy(q);
}
