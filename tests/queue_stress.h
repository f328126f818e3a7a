/*
 * queue_stress.h - the MPMC queue stress run shared by the Criterion test
 * (tests/test_pool.c) and the plain ThreadSanitizer program
 * (tests/stress_queue.c; Criterion itself cannot start under TSan).
 */
#ifndef PM_QUEUE_STRESS_H
#define PM_QUEUE_STRESS_H

#include <stddef.h>

/*
 * Push producers*per_producer distinct items through a queue of `capacity`
 * with `consumers` threads, mixing blocking and non-blocking calls.
 * Returns 0 when every item came out exactly once and the queue is empty;
 * otherwise -1 with a description in why.
 */
int pm_queue_stress(int producers, int consumers, size_t per_producer, size_t capacity,
                    char *why, size_t why_len);

#endif
