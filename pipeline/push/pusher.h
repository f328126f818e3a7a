/*
 * pusher.h - drains the registry's push outbox through APNs (docs/push.md).
 *
 * A pm_pusher owns its own registry handle (pm_registry_open on the same
 * configuration), the pass type ID identity (sign.*) and a pm_apns client,
 * so it can run beside a `run` or `serve` on its own thread without sharing
 * a connection.  Each round claims up to push.batch due pushes under a lease
 * of push.lease seconds, sends them concurrently and settles them in one
 * transaction: a sender killed mid-round leaves at most that round's pushes
 * to be sent again after the lease (at-least-once).
 */
#ifndef PM_PUSHER_H
#define PM_PUSHER_H

#include <stdint.h>

#include "core/config.h"
#include "core/error.h"

typedef struct pm_pusher pm_pusher;

/* What this pusher did (not the registry's all-time counters). */
typedef struct pm_push_counts {
    uint64_t sent, failed, retried, gone;
} pm_push_counts;

int pm_pusher_create(const pm_config *cfg, pm_pusher **out, pm_error *err);
/* Stops the thread if started, then frees. */
void pm_pusher_destroy(pm_pusher *p);

/* On the calling thread: rounds until nothing is due (the outbox is empty,
 * or holds only failed pushes and pushes backing off). */
int pm_pusher_drain(pm_pusher *p, pm_error *err);

/* Continuous draining on a thread of its own, waking every push.poll_ms;
 * errors (the registry or APNs unreachable) are reported on stderr and
 * retried next wake-up.  stop() returns once the round in flight is done. */
int pm_pusher_start(pm_pusher *p, pm_error *err);
void pm_pusher_stop(pm_pusher *p);

void pm_pusher_counts(pm_pusher *p, pm_push_counts *out);

#endif
