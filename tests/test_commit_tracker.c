/*
 * test_commit_tracker.c - the per-partition commit watermark.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "kafka/commit_tracker.h"

Test(commit_tracker, empty_has_no_watermark)
{
    pm_commit_tracker *t = pm_commit_tracker_create();
    cr_assert_not_null(t);
    cr_assert_eq(pm_commit_tracker_watermark(t), -1);
    cr_assert_eq(pm_commit_tracker_inflight(t), 0);
    cr_assert(!pm_commit_tracker_blocked(t));
    pm_commit_tracker_destroy(t);
}

Test(commit_tracker, out_of_order_completion_commits_contiguous_prefix)
{
    pm_commit_tracker *t = pm_commit_tracker_create();
    for (int64_t o = 10; o < 15; o++)
        cr_assert_eq(pm_commit_tracker_add(t, o), 0);
    cr_assert_eq(pm_commit_tracker_watermark(t), 10);
    cr_assert_eq(pm_commit_tracker_complete(t, 12, true), 0);
    cr_assert_eq(pm_commit_tracker_complete(t, 11, true), 0);
    cr_assert_eq(pm_commit_tracker_watermark(t), 10, "10 still in flight");
    cr_assert_eq(pm_commit_tracker_complete(t, 10, true), 0);
    cr_assert_eq(pm_commit_tracker_watermark(t), 13);
    cr_assert_eq(pm_commit_tracker_inflight(t), 2);
    cr_assert_eq(pm_commit_tracker_complete(t, 14, true), 0);
    cr_assert_eq(pm_commit_tracker_complete(t, 13, true), 0);
    cr_assert_eq(pm_commit_tracker_watermark(t), 15);
    cr_assert_eq(pm_commit_tracker_inflight(t), 0);
    pm_commit_tracker_destroy(t);
}

Test(commit_tracker, failure_blocks_the_watermark_for_good)
{
    pm_commit_tracker *t = pm_commit_tracker_create();
    for (int64_t o = 0; o < 6; o++)
        pm_commit_tracker_add(t, o);
    pm_commit_tracker_complete(t, 0, true);
    pm_commit_tracker_complete(t, 2, false);
    pm_commit_tracker_complete(t, 1, true);
    cr_assert_eq(pm_commit_tracker_watermark(t), 2);
    cr_assert(pm_commit_tracker_blocked(t));
    pm_commit_tracker_complete(t, 3, true);
    pm_commit_tracker_complete(t, 4, true);
    pm_commit_tracker_complete(t, 5, true);
    pm_commit_tracker_add(t, 6);
    pm_commit_tracker_complete(t, 6, true);
    cr_assert_eq(pm_commit_tracker_watermark(t), 2, "never past the failed offset");
    cr_assert_eq(pm_commit_tracker_inflight(t), 0);
    cr_assert(pm_commit_tracker_blocked(t));
    pm_commit_tracker_destroy(t);
}

Test(commit_tracker, gaps_in_offsets_are_skipped)
{
    pm_commit_tracker *t = pm_commit_tracker_create();
    pm_commit_tracker_add(t, 5);
    pm_commit_tracker_add(t, 9);
    pm_commit_tracker_add(t, 20);
    pm_commit_tracker_complete(t, 5, true);
    cr_assert_eq(pm_commit_tracker_watermark(t), 9);
    pm_commit_tracker_complete(t, 20, true);
    cr_assert_eq(pm_commit_tracker_watermark(t), 9);
    pm_commit_tracker_complete(t, 9, true);
    cr_assert_eq(pm_commit_tracker_watermark(t), 21);
    pm_commit_tracker_destroy(t);
}

Test(commit_tracker, redelivery_and_unknown_offsets_are_refused)
{
    pm_commit_tracker *t = pm_commit_tracker_create();
    cr_assert_eq(pm_commit_tracker_add(t, 3), 0);
    cr_assert_eq(pm_commit_tracker_add(t, 3), 1);
    cr_assert_eq(pm_commit_tracker_add(t, 1), 1);
    cr_assert_eq(pm_commit_tracker_add(t, -1), 1);
    cr_assert_eq(pm_commit_tracker_complete(t, 4, true), -1);
    cr_assert_eq(pm_commit_tracker_complete(t, 3, true), 0);
    cr_assert_eq(pm_commit_tracker_complete(t, 3, true), -1, "completed twice");
    cr_assert_eq(pm_commit_tracker_watermark(t), 4);
    pm_commit_tracker_destroy(t);
}

Test(commit_tracker, start_sets_the_watermark_before_any_record)
{
    pm_commit_tracker *t = pm_commit_tracker_create();
    cr_assert_eq(pm_commit_tracker_start(t, 40), 0);
    cr_assert_eq(pm_commit_tracker_watermark(t), 40);
    cr_assert_eq(pm_commit_tracker_add(t, 39), 1, "below the start: already done");
    cr_assert_eq(pm_commit_tracker_add(t, 40), 0);
    cr_assert_eq(pm_commit_tracker_start(t, 50), -1, "only before the first record");
    cr_assert_eq(pm_commit_tracker_watermark(t), 40);
    pm_commit_tracker_complete(t, 40, true);
    cr_assert_eq(pm_commit_tracker_watermark(t), 41);
    pm_commit_tracker_destroy(t);
}

/* Shuffled completion of many offsets (ring growth and wrap-around) against
 * a plain array model of the watermark. */
Test(commit_tracker, matches_model_under_random_completion)
{
    enum { N = 5000, WINDOW = 300 };
    srand(12345);
    pm_commit_tracker *t = pm_commit_tracker_create();
    static bool done[N];
    int64_t order[N];
    size_t added = 0, completed = 0, n_order = 0;
    while (completed < N) {
        /* add a few, keeping at most WINDOW in flight */
        while (added < N && added - completed < WINDOW && rand() % 3) {
            cr_assert_eq(pm_commit_tracker_add(t, (int64_t)added + 100), 0);
            order[n_order++] = (int64_t)added;
            added++;
        }
        if (n_order == 0)
            continue;
        size_t pick = (size_t)rand() % n_order;
        int64_t o = order[pick];
        order[pick] = order[--n_order];
        cr_assert_eq(pm_commit_tracker_complete(t, o + 100, true), 0);
        done[o] = true;
        completed++;
        int64_t expect = 0;
        while (expect < (int64_t)added && done[expect])
            expect++;
        cr_assert_eq(pm_commit_tracker_watermark(t), expect + 100);
        cr_assert_eq(pm_commit_tracker_inflight(t), added - completed);
    }
    cr_assert_eq(pm_commit_tracker_watermark(t), N + 100);
    pm_commit_tracker_destroy(t);
}
