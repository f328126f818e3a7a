/*
 * queue.h - a bounded multi-producer multi-consumer queue of pointers.
 *
 * Lock-free on the hot path: Dmitry Vyukov's bounded MPMC ring (one C11
 * atomic sequence number per cell, CAS on the head/tail counters), with two
 * POSIX semaphores counting free slots and filled slots so that a full or
 * empty queue blocks instead of spinning.  glibc's sem_post/sem_wait are a
 * single atomic operation unless a thread actually has to sleep.
 *
 * Why our own and not ck_ring: ck_ring uses inline-assembly atomics that
 * ThreadSanitizer cannot see, so the suite could not check the pool under
 * TSan; C11 atomics can be checked.  See tests/test_pool.c for the stress
 * test.
 */
#ifndef PM_QUEUE_H
#define PM_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pm_queue pm_queue;

/* capacity is rounded up to a power of two. NULL when out of memory. */
pm_queue *pm_queue_create(size_t capacity);
void pm_queue_destroy(pm_queue *q);

/* Block until there is room, then enqueue. */
void pm_queue_push(pm_queue *q, void *item);
/* Enqueue if there is room now; false if full. */
bool pm_queue_try_push(pm_queue *q, void *item);
/* Block until an item is there, then dequeue it. */
void *pm_queue_pop(pm_queue *q);
/* Dequeue if an item is there now; false if empty. */
bool pm_queue_try_pop(pm_queue *q, void **item);

#endif
