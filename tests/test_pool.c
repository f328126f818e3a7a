/* Tests for the lock-free MPMC queue under the worker pool. */
#include <criterion/criterion.h>
#include <stdint.h>

#include "engine/queue.h"
#include "queue_stress.h"

Test(queue, mpmc_every_item_exactly_once, .timeout = 120)
{
    char why[256] = "";
    /* A small queue forces the full and empty paths constantly. */
    cr_assert_eq(pm_queue_stress(4, 4, 50000, 64, why, sizeof why), 0, "%s", why);
    cr_assert_eq(pm_queue_stress(1, 3, 20000, 2, why, sizeof why), 0, "%s", why);
    cr_assert_eq(pm_queue_stress(3, 1, 20000, 1024, why, sizeof why), 0, "%s", why);
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
