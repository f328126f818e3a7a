/*
 * commit_tracker.h - which offset of one Kafka partition may be committed.
 *
 * A partition hands out records in increasing offset order, but they finish
 * out of order on the worker threads.  The tracker remembers every offset in
 * flight, in arrival order, and yields the commit watermark: the offset of
 * the first record that is not yet durably done (Kafka's "next offset to
 * consume").  Everything below the watermark is done.  A record that failed
 * (not durable) stays at the front forever: the watermark never passes it,
 * so a restart re-delivers it.
 *
 * Offsets may have gaps (compacted topics, transaction markers): only the
 * offsets that were added count.  The tracker is not thread-safe; the Kafka
 * source guards it with its own lock.  Memory is one 16-byte entry per
 * record in flight (ring buffer, grows by doubling).
 */
#ifndef PM_COMMIT_TRACKER_H
#define PM_COMMIT_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pm_commit_tracker pm_commit_tracker;

/* NULL when out of memory. */
pm_commit_tracker *pm_commit_tracker_create(void);
void pm_commit_tracker_destroy(pm_commit_tracker *t);

/*
 * A record with this offset was handed out.  Returns 0, 1 when the offset
 * is not above every offset added before (a re-delivery: not tracked, the
 * caller should skip the record), or -1 when out of memory.
 */
int pm_commit_tracker_add(pm_commit_tracker *t, int64_t offset);

/*
 * Before the first add: everything below `offset` is known to be done (a
 * partition handed back by a rebalance resumes where it was), so the
 * watermark is `offset` until records arrive.  Returns -1 after an add.
 */
int pm_commit_tracker_start(pm_commit_tracker *t, int64_t offset);

/*
 * The record with this offset finished: durable (ok) or failed.  Returns 0,
 * or -1 when the offset is not in flight (never added, or finished twice).
 */
int pm_commit_tracker_complete(pm_commit_tracker *t, int64_t offset, bool ok);

/* The offset to commit (all offsets below it are done), or -1 before any add. */
int64_t pm_commit_tracker_watermark(const pm_commit_tracker *t);

/* Records added but not yet completed. */
size_t pm_commit_tracker_inflight(const pm_commit_tracker *t);

/* Whether a failed record holds the watermark back for good. */
bool pm_commit_tracker_blocked(const pm_commit_tracker *t);

#endif
