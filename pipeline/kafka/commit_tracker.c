#include "kafka/commit_tracker.h"

#include <stdlib.h>

enum entry_state { PENDING = 0, DONE = 1, FAILED = 2 };

typedef struct entry {
    int64_t offset;
    int32_t state;
} entry;

/*
 * Ring buffer of entries in offset order.  Leading DONE entries are popped
 * at once, so the front entry is always PENDING or FAILED (or the ring is
 * empty) and the watermark is its offset.
 */
struct pm_commit_tracker {
    entry *ring;
    size_t cap;          /* power of two */
    size_t head;         /* index of the front entry */
    size_t len;          /* entries in the ring */
    size_t pending;      /* entries not completed */
    int64_t last_added;  /* -1 before the first add */
};

static entry *at(const pm_commit_tracker *t, size_t i)
{
    return &t->ring[(t->head + i) & (t->cap - 1)];
}

pm_commit_tracker *pm_commit_tracker_create(void)
{
    pm_commit_tracker *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cap = 64;
    t->ring = malloc(t->cap * sizeof *t->ring);
    if (!t->ring) {
        free(t);
        return NULL;
    }
    t->last_added = -1;
    return t;
}

void pm_commit_tracker_destroy(pm_commit_tracker *t)
{
    if (!t)
        return;
    free(t->ring);
    free(t);
}

static int grow(pm_commit_tracker *t)
{
    size_t cap = t->cap * 2;
    entry *ring = malloc(cap * sizeof *ring);
    if (!ring)
        return -1;
    for (size_t i = 0; i < t->len; i++)
        ring[i] = *at(t, i);
    free(t->ring);
    t->ring = ring;
    t->cap = cap;
    t->head = 0;
    return 0;
}

int pm_commit_tracker_add(pm_commit_tracker *t, int64_t offset)
{
    if (offset < 0 || (t->last_added >= 0 && offset <= t->last_added))
        return 1;
    if (t->len == t->cap && grow(t) != 0)
        return -1;
    entry *e = at(t, t->len);
    e->offset = offset;
    e->state = PENDING;
    t->len++;
    t->pending++;
    t->last_added = offset;
    return 0;
}

int pm_commit_tracker_start(pm_commit_tracker *t, int64_t offset)
{
    if (t->len || t->last_added >= 0 || offset < 0)
        return -1;
    t->last_added = offset - 1;
    return 0;
}

/* Binary search: entries are sorted by offset. */
static entry *find(pm_commit_tracker *t, int64_t offset)
{
    size_t lo = 0, hi = t->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        entry *e = at(t, mid);
        if (e->offset == offset)
            return e;
        if (e->offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int pm_commit_tracker_complete(pm_commit_tracker *t, int64_t offset, bool ok)
{
    entry *e = find(t, offset);
    if (!e || e->state != PENDING)
        return -1;
    e->state = ok ? DONE : FAILED;
    t->pending--;
    while (t->len && at(t, 0)->state == DONE) {
        t->head = (t->head + 1) & (t->cap - 1);
        t->len--;
    }
    return 0;
}

int64_t pm_commit_tracker_watermark(const pm_commit_tracker *t)
{
    if (t->len)
        return at(t, 0)->offset;
    return t->last_added < 0 ? -1 : t->last_added + 1;
}

size_t pm_commit_tracker_inflight(const pm_commit_tracker *t)
{
    return t->pending;
}

bool pm_commit_tracker_blocked(const pm_commit_tracker *t)
{
    return t->len && at(t, 0)->state == FAILED;
}
