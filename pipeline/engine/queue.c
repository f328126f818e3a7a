#include "engine/queue.h"

#include <errno.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define CACHELINE 64

typedef struct cell {
    atomic_size_t seq;
    void *item;
} cell;

struct pm_queue {
    _Alignas(CACHELINE) atomic_size_t head; /* next cell to enqueue */
    _Alignas(CACHELINE) atomic_size_t tail; /* next cell to dequeue */
    _Alignas(CACHELINE) size_t mask;
    cell *cells;
    sem_t slots; /* free cells */
    sem_t items; /* filled cells */
};

pm_queue *pm_queue_create(size_t capacity)
{
    size_t cap = 2;
    while (cap < capacity)
        cap <<= 1;
    pm_queue *q = aligned_alloc(CACHELINE, (sizeof *q + CACHELINE - 1) / CACHELINE * CACHELINE);
    if (!q)
        return NULL;
    q->cells = calloc(cap, sizeof *q->cells);
    if (!q->cells || sem_init(&q->slots, 0, (unsigned)cap) != 0 || sem_init(&q->items, 0, 0) != 0) {
        free(q->cells);
        free(q);
        return NULL;
    }
    for (size_t i = 0; i < cap; i++)
        atomic_init(&q->cells[i].seq, i);
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    q->mask = cap - 1;
    return q;
}

void pm_queue_destroy(pm_queue *q)
{
    if (!q)
        return;
    sem_destroy(&q->slots);
    sem_destroy(&q->items);
    free(q->cells);
    free(q);
}

/* Vyukov enqueue; the semaphore guarantees a free cell exists. */
static void ring_put(pm_queue *q, void *item)
{
    size_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);
    for (;;) {
        cell *c = &q->cells[pos & q->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->head, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                c->item = item;
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                return;
            }
        } else {
            /* Another producer took this cell, or a consumer has not yet
             * released it: reload and retry. */
            pos = atomic_load_explicit(&q->head, memory_order_relaxed);
        }
    }
}

static void *ring_take(pm_queue *q)
{
    size_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
    for (;;) {
        cell *c = &q->cells[pos & q->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                void *item = c->item;
                atomic_store_explicit(&c->seq, pos + q->mask + 1, memory_order_release);
                return item;
            }
        } else {
            pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
        }
    }
}

static void sem_wait_nointr(sem_t *s)
{
    while (sem_wait(s) != 0 && errno == EINTR)
        ;
}

void pm_queue_push(pm_queue *q, void *item)
{
    sem_wait_nointr(&q->slots);
    ring_put(q, item);
    sem_post(&q->items);
}

bool pm_queue_try_push(pm_queue *q, void *item)
{
    if (sem_trywait(&q->slots) != 0)
        return false;
    ring_put(q, item);
    sem_post(&q->items);
    return true;
}

void *pm_queue_pop(pm_queue *q)
{
    sem_wait_nointr(&q->items);
    void *item = ring_take(q);
    sem_post(&q->slots);
    return item;
}

bool pm_queue_try_pop(pm_queue *q, void **item)
{
    if (sem_trywait(&q->items) != 0)
        return false;
    *item = ring_take(q);
    sem_post(&q->slots);
    return true;
}
