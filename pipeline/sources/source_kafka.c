/*
 * source_kafka.c - pass requests from a Kafka topic, at least once.
 *
 * A consumer-group member (group.id = kafka.group_id) subscribed to
 * kafka.topic.requests.  Each message value becomes one job unchanged
 * (format from kafka.value_format), its origin is topic/partition/offset.
 *
 * Commits: offsets are committed manually (enable.auto.commit and
 * enable.auto.offset.store are forced off).  Every assigned partition has
 * a commit tracker (commit_tracker.h); done() marks a record finished and
 * the source commits the highest contiguous finished offset + 1, at most
 * once per auto.commit.interval.ms (default 1000 here), on revoke and on
 * close.  A record finished with durable=false blocks its partition's
 * watermark for good and makes next() fail, so the run ends and a restart
 * re-delivers it.
 *
 * Rebalances (eager protocol by default; cooperative-sticky works too):
 * on revoke the source waits up to PM_KAFKA_REVOKE_WAIT_MS for the records
 * in flight from those partitions, commits what is done, then gives them
 * up; records that finish later are not committed (they are re-delivered
 * to the new owner).  On assign every partition starts a fresh tracker; a
 * partition that comes straight back to us resumes at our own watermark
 * (the commit on revoke may have been refused mid-rebalance).  close()
 * retries its final commit while the group rebalances.
 *
 * Backpressure: prefetching is bounded by queued.max.messages.kbytes
 * (16 MB by default here); when the engine's queue stays full for
 * PM_KAFKA_PAUSE_AFTER_MS a small thread pauses the assigned partitions,
 * and they are resumed as soon as the engine has room again.
 *
 * Threads: next(), backpressure() and the rebalance/commit callbacks run on
 * the engine's source thread (callbacks are served inside
 * rd_kafka_consumer_poll); done() runs on worker and producer threads.  One
 * mutex guards the partition table and trackers.  stop() only sets an
 * atomic flag (async-signal-safe).
 */
#include "sources/source.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "kafka/commit_tracker.h"
#include "kafka/kafka_conf.h"

/* How long a revoke waits for in-flight records of the revoked partitions. */
#define PM_KAFKA_REVOKE_WAIT_MS 15000
/* How long close() waits for every record in flight before the last commit. */
#define PM_KAFKA_CLOSE_WAIT_MS 30000
#define PM_KAFKA_POLL_MS 100
/* How long close() keeps retrying the last commit (rebalance, coordinator move). */
#define PM_KAFKA_CLOSE_COMMIT_MS 20000
/*
 * Backpressure pauses the partitions only once it has lasted this long.
 * The engine signals it around every wait for a free job, often once per
 * record when workers are the bottleneck, and pausing drops librdkafka's
 * prefetched messages (they are fetched again on resume): pausing at once
 * made consuming ~1000x slower, and pausing after 500 ms still looked
 * costly (33 s against 20 s for 20000 passes on a noisy 2-core machine:
 * store syncs stall the engine that long).  Short waits
 * are absorbed by the bounded prefetch queue (queued.max.messages.kbytes);
 * pausing is for real stalls (a store that is down).
 */
#define PM_KAFKA_PAUSE_AFTER_MS 5000

/* One partition as long as it stays assigned to us (one "generation"). */
typedef struct part {
    int32_t id;
    uint64_t gen;              /* unique per assignment, to match commit results */
    pm_commit_tracker *tracker;
    int64_t commit_sent;       /* offset of the last commit request, -1 none */
    int64_t committed;         /* offset the broker confirmed, -1 none */
    bool eof;                  /* reached the end (enable.partition.eof) */
    bool retired;              /* revoked: finishing records are no longer committed */
    struct part *next_retired;
} part;

typedef struct kafka_source {
    pm_source base;
    rd_kafka_t *rk;
    char topic[256];
    pm_input_format format;
    bool exit_on_eof;
    int64_t commit_interval_ms;
    int64_t last_commit_ms;
    atomic_int stopping;

    pthread_mutex_t mu;
    pthread_cond_t cond;       /* signalled when a record finishes */
    part **parts;              /* by partition id; NULL when not assigned */
    size_t parts_cap;
    size_t n_assigned;
    part *retired;             /* revoked, with records still in flight */
    int64_t *resume_at;        /* by partition id: watermark when revoked, -1 none */
    uint64_t next_gen;
    rd_kafka_topic_partition_list_t *async_sent; /* the periodic commit in flight */
    bool pressure;             /* backpressure signalled (engine queue full) */
    int64_t pressure_since_ms;
    bool paused;               /* partitions actually paused */
    pthread_cond_t pcond;      /* wakes the pauser */
    pthread_t pauser;
    bool pauser_started, pauser_stop;
    bool failed;               /* a record finished not durable */
    pm_origin failed_origin;
    bool fatal;                /* a fatal consumer error (set in callbacks) */
    int64_t shutdown_ms;       /* kafka.shutdown_timeout_ms */
    atomic_int_fast64_t down_since_ms; /* when every broker went down; 0 = reachable */
    pm_error fatal_err;
} kafka_source;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the partition table (callers hold mu) ---- */

static void part_free(part *p)
{
    if (p) {
        pm_commit_tracker_destroy(p->tracker);
        free(p);
    }
}

static int table_reserve(kafka_source *s, int32_t id)
{
    if ((size_t)id < s->parts_cap)
        return 0;
    size_t cap = s->parts_cap ? s->parts_cap : 16;
    while (cap <= (size_t)id)
        cap *= 2;
    part **parts = realloc(s->parts, cap * sizeof *parts);
    if (!parts)
        return -1;
    memset(parts + s->parts_cap, 0, (cap - s->parts_cap) * sizeof *parts);
    s->parts = parts;
    int64_t *resume = realloc(s->resume_at, cap * sizeof *resume);
    if (!resume)
        return -1;
    for (size_t i = s->parts_cap; i < cap; i++)
        resume[i] = -1;
    s->resume_at = resume;
    s->parts_cap = cap;
    return 0;
}

/* Take a partition out of the table; keep it until its last record finishes. */
static void retire(kafka_source *s, part *p)
{
    s->parts[p->id] = NULL;
    s->n_assigned--;
    p->retired = true;
    if (pm_commit_tracker_inflight(p->tracker) == 0) {
        part_free(p);
        return;
    }
    p->next_retired = s->retired;
    s->retired = p;
}

static part *assign_part(kafka_source *s, int32_t id)
{
    if (id < 0 || table_reserve(s, id) != 0)
        return NULL;
    if (s->parts[id])
        retire(s, s->parts[id]);
    part *p = calloc(1, sizeof *p);
    if (!p || !(p->tracker = pm_commit_tracker_create())) {
        free(p);
        return NULL;
    }
    p->id = id;
    p->gen = ++s->next_gen;
    p->commit_sent = p->committed = -1;
    s->parts[id] = p;
    s->n_assigned++;
    return p;
}

static void set_fatal(kafka_source *s, pm_code code, const char *fmt, const char *detail)
{
    pthread_mutex_lock(&s->mu);
    if (!s->fatal) {
        s->fatal = true;
        pm_error_set(&s->fatal_err, code, fmt, detail);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- commits ---- */

/*
 * The partitions in `which` (all assigned ones when NULL) whose watermark is
 * past what was last sent (or, with `resend`, past what the broker
 * confirmed), as a commit list; NULL when nothing to commit.  Caller holds mu.
 */
static rd_kafka_topic_partition_list_t *commit_list(kafka_source *s,
                                                    const rd_kafka_topic_partition_list_t *which,
                                                    bool resend)
{
    rd_kafka_topic_partition_list_t *list = NULL;
    size_t n = which ? (size_t)which->cnt : s->parts_cap;
    for (size_t i = 0; i < n; i++) {
        int32_t id = which ? which->elems[i].partition : (int32_t)i;
        part *p = id >= 0 && (size_t)id < s->parts_cap ? s->parts[id] : NULL;
        if (!p)
            continue;
        int64_t w = pm_commit_tracker_watermark(p->tracker);
        if (w < 0 || w <= (resend ? p->committed : p->commit_sent))
            continue;
        if (!list && !(list = rd_kafka_topic_partition_list_new(8)))
            return NULL;
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(list, s->topic, id);
        tp->offset = w;
        tp->opaque = (void *)(uintptr_t)p->gen;
        p->commit_sent = w;
    }
    return list;
}

/* Commit refusals that only mean "the group is rebalancing, commit later". */
static bool rebalancing(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
           err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
           err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID;
}

/* A commit finished (async: from the commit callback; sync: directly). */
static void commit_result(kafka_source *s, rd_kafka_resp_err_t err,
                          const rd_kafka_topic_partition_list_t *offsets)
{
    if (!offsets)
        return;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        part *p = tp->partition >= 0 && (size_t)tp->partition < s->parts_cap
                      ? s->parts[tp->partition] : NULL;
        if (!p || p->gen != (uint64_t)(uintptr_t)tp->opaque)
            continue; /* revoked meanwhile */
        if (!err && !tp->err) {
            if (tp->offset > p->committed)
                p->committed = tp->offset;
        } else {
            p->commit_sent = p->committed; /* retried at the next interval */
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET && !rebalancing(err))
        fprintf(stderr, "passmill: kafka: offset commit failed (will retry): %s\n",
                rd_kafka_err2str(err));
}

/* The periodic async commit finished (served inside rd_kafka_consumer_poll). */
static void on_async_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    kafka_source *s = opaque;
    commit_result(s, err, offsets && offsets->cnt ? offsets : s->async_sent);
    rd_kafka_topic_partition_list_destroy(s->async_sent);
    s->async_sent = NULL;
}

/*
 * Commit synchronously the watermarks of `which` (all when NULL) that the
 * broker has not confirmed yet.
 */
static rd_kafka_resp_err_t commit_now(kafka_source *s, const rd_kafka_topic_partition_list_t *which)
{
    pthread_mutex_lock(&s->mu);
    rd_kafka_topic_partition_list_t *list = commit_list(s, which, true);
    pthread_mutex_unlock(&s->mu);
    if (!list)
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_resp_err_t err = rd_kafka_commit(s->rk, list, 0);
    commit_result(s, err, list);
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

/*
 * The periodic commit: asynchronous, and one at a time, so a slow or
 * retried request can never land after a newer commit and move the
 * group's offset backwards.
 */
static void maybe_commit(kafka_source *s)
{
    int64_t t = now_ms();
    if (s->async_sent || t - s->last_commit_ms < s->commit_interval_ms)
        return;
    s->last_commit_ms = t;
    pthread_mutex_lock(&s->mu);
    rd_kafka_topic_partition_list_t *list = commit_list(s, NULL, false);
    pthread_mutex_unlock(&s->mu);
    if (!list)
        return;
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(s->rk);
    s->async_sent = list;
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(s->rk, list, q, on_async_commit, s);
    if (q)
        rd_kafka_queue_destroy(q);
    if (err) {
        commit_result(s, err, list);
        rd_kafka_topic_partition_list_destroy(list);
        s->async_sent = NULL;
    }
}

/* Serve the consumer without taking records (dropped untracked: never
 * committed, so delivered again later), for rebalances and commit results. */
static void serve_consumer(kafka_source *s, int ms)
{
    int64_t until = now_ms() + ms;
    while (now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->rk, 50);
        if (m)
            rd_kafka_message_destroy(m);
    }
}

/* ---- rebalances ---- */

static bool revoked_idle(kafka_source *s, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        int32_t id = parts->elems[i].partition;
        part *p = id >= 0 && (size_t)id < s->parts_cap ? s->parts[id] : NULL;
        if (p && pm_commit_tracker_inflight(p->tracker) > 0)
            return false;
    }
    return true;
}

/* Wait (bounded) for the revoked partitions' records, commit, retire them. */
static void revoke(kafka_source *s, const rd_kafka_topic_partition_list_t *parts, bool lost)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += PM_KAFKA_REVOKE_WAIT_MS / 1000;
    pthread_mutex_lock(&s->mu);
    while (!lost && !revoked_idle(s, parts))
        if (pthread_cond_timedwait(&s->cond, &s->mu, &deadline) != 0)
            break;
    bool idle = revoked_idle(s, parts);
    pthread_mutex_unlock(&s->mu);
    if (!idle)
        fprintf(stderr, "passmill: kafka: partitions revoked with records still in flight "
                        "after %d ms; they will be re-delivered to the new owner\n",
                PM_KAFKA_REVOKE_WAIT_MS);
    /* A lost assignment belongs to someone else already: do not commit. */
    if (!lost) {
        rd_kafka_resp_err_t err = commit_now(s, parts);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET && !rebalancing(err))
            fprintf(stderr, "passmill: kafka: commit on revoke failed: %s\n",
                    rd_kafka_err2str(err));
    }
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < parts->cnt; i++) {
        int32_t id = parts->elems[i].partition;
        part *p = id >= 0 && (size_t)id < s->parts_cap ? s->parts[id] : NULL;
        if (p) {
            /* Remember durable progress the broker has not confirmed. */
            int64_t w = pm_commit_tracker_watermark(p->tracker);
            s->resume_at[id] = w > p->committed ? w : -1;
            retire(s, p);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static void assign(kafka_source *s, rd_kafka_topic_partition_list_t *parts, bool cooperative)
{
    pthread_mutex_lock(&s->mu);
    bool ok = true;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int64_t resume = tp->partition >= 0 && (size_t)tp->partition < s->parts_cap
                             ? s->resume_at[tp->partition] : -1;
        part *p = assign_part(s, tp->partition);
        if (!p) {
            ok = false;
        } else if (resume >= 0) {
            /* Ours again: continue from our own watermark, which may be
             * ahead of the committed offset when the commit on revoke
             * failed.  Everything below it is durably done. */
            tp->offset = resume;
            pm_commit_tracker_start(p->tracker, resume);
        }
    }
    for (size_t i = 0; i < s->parts_cap; i++)
        s->resume_at[i] = -1;
    pthread_mutex_unlock(&s->mu);
    if (!ok)
        set_fatal(s, PM_ERR_NOMEM, "%s", "out of memory for partition trackers");
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (cooperative)
        error = rd_kafka_incremental_assign(s->rk, parts);
    else
        err = rd_kafka_assign(s->rk, parts);
    if (error) {
        set_fatal(s, PM_ERR_IO, "kafka: assign failed: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (err) {
        set_fatal(s, PM_ERR_IO, "kafka: assign failed: %s", rd_kafka_err2str(err));
    }
    /* Keep honouring backpressure across a rebalance. */
    pthread_mutex_lock(&s->mu);
    if (s->paused)
        rd_kafka_pause_partitions(s->rk, parts);
    pthread_mutex_unlock(&s->mu);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafka_source *s = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        assign(s, parts, cooperative);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        revoke(s, parts, rd_kafka_assignment_lost(rk) == 1);
    else
        fprintf(stderr, "passmill: kafka: rebalance error: %s\n", rd_kafka_err2str(err));
    if (cooperative) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e)
            rd_kafka_error_destroy(e);
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_source *s = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof why);
        set_fatal(s, PM_ERR_IO, "kafka consumer: fatal error: %s", why);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        int_fast64_t zero = 0;
        atomic_compare_exchange_strong(&s->down_since_ms, &zero, now_ms());
    }
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT)
        return; /* librdkafka's own log line (FAIL) already says it */
    fprintf(stderr, "passmill: kafka consumer: %s\n", reason);
}

/* ---- the source ---- */

static bool all_at_eof(kafka_source *s)
{
    pthread_mutex_lock(&s->mu);
    bool eof = s->n_assigned > 0;
    for (size_t i = 0; eof && i < s->parts_cap; i++)
        if (s->parts[i] && !s->parts[i]->eof)
            eof = false;
    pthread_mutex_unlock(&s->mu);
    return eof;
}

/* A consumer error event; returns -1 (err filled) when the run must stop. */
static int consumer_event(kafka_source *s, const rd_kafka_message_t *m, pm_error *err)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        pthread_mutex_lock(&s->mu);
        part *p = m->partition >= 0 && (size_t)m->partition < s->parts_cap
                      ? s->parts[m->partition] : NULL;
        if (p)
            p->eof = true;
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    const char *what = rd_kafka_message_errstr(m);
    if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
        m->err == RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED)
        return pm_error_set(err, PM_ERR_CONFIG, "kafka.topic.requests '%s': %s", s->topic, what);
    if (m->err == RD_KAFKA_RESP_ERR__FATAL || rd_kafka_fatal_error(s->rk, NULL, 0))
        return pm_error_set(err, PM_ERR_IO, "kafka consumer: fatal error: %s", what);
    fprintf(stderr, "passmill: kafka consumer: %s\n", what);
    return 0;
}

/* A fatal consumer error, or a record that finished not durable: stop. */
static bool stop_reason(kafka_source *s, pm_error *err)
{
    char where[320] = "";
    pthread_mutex_lock(&s->mu);
    bool stop = s->fatal || s->failed;
    if (s->fatal)
        *err = s->fatal_err;
    else if (s->failed)
        pm_origin_format(&s->failed_origin, where, sizeof where);
    pthread_mutex_unlock(&s->mu);
    if (where[0])
        pm_error_set(err, PM_ERR_IO, "record %s could not be finished; stopping without "
                     "committing past it so that a restart re-delivers it", where);
    return stop;
}

static int kafka_next(pm_source *base, pm_job *job, pm_error *err)
{
    kafka_source *s = (kafka_source *)base;
    for (;;) {
        if (atomic_load(&s->stopping))
            return 0;
        if (stop_reason(s, err))
            return -1;
        maybe_commit(s);
        if (s->exit_on_eof && all_at_eof(s))
            return 0;
        int64_t down = atomic_load(&s->down_since_ms);
        if (s->exit_on_eof && down && now_ms() - down >= s->shutdown_ms / 3)
            return pm_error_set(err, PM_ERR_IO,
                                "kafka: no broker reachable for %lld ms (kafka.shutdown_timeout_ms): "
                                "stopping; records not finished are not committed and will be "
                                "delivered again", (long long)(now_ms() - down));

        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->rk, PM_KAFKA_POLL_MS);
        if (!m)
            continue;
        atomic_store(&s->down_since_ms, 0); /* a broker answered */
        if (m->err) {
            int rc = consumer_event(s, m, err);
            rd_kafka_message_destroy(m);
            if (rc != 0)
                return -1;
            continue;
        }
        pm_buf_reset(&job->raw);
        /* The payload is librdkafka's until rd_kafka_message_destroy(): copy it
         * first, and read nothing of m after the destroy. */
        PM_KAFKA_PAYLOAD_READS_BEGIN();
        int copied = m->len ? pm_buf_append(&job->raw, m->payload, m->len) : 0;
        PM_KAFKA_PAYLOAD_READS_END();
        if (copied != 0) {
            size_t len = m->len;
            rd_kafka_message_destroy(m);
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory for a %zu-byte message", len);
        }
        pthread_mutex_lock(&s->mu);
        part *p = m->partition >= 0 && (size_t)m->partition < s->parts_cap
                      ? s->parts[m->partition] : NULL;
        if (!p) /* not announced by a rebalance: track it all the same */
            p = assign_part(s, m->partition);
        int rc = p ? pm_commit_tracker_add(p->tracker, m->offset) : -1;
        if (p && rc == 0)
            p->eof = false;
        pthread_mutex_unlock(&s->mu);
        if (rc != 0) {
            rd_kafka_message_destroy(m);
            if (rc < 0)
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory for the commit tracker");
            continue; /* a re-delivery of an offset already in flight or done */
        }
        job->format = s->format;
        snprintf(job->origin.source, sizeof job->origin.source, "%s", s->topic);
        job->origin.partition = m->partition;
        job->origin.offset = m->offset;
        job->source_ref = p;
        rd_kafka_message_destroy(m);
        return 1;
    }
}

static void kafka_done(pm_source *base, const pm_origin *origin, void *source_ref, bool durable)
{
    kafka_source *s = (kafka_source *)base;
    part *p = source_ref;
    pthread_mutex_lock(&s->mu);
    if (pm_commit_tracker_complete(p->tracker, origin->offset, durable) != 0)
        fprintf(stderr, "passmill: kafka: internal: offset %lld finished twice\n",
                (long long)origin->offset);
    if (!durable && !p->retired && !s->failed) {
        s->failed = true;
        s->failed_origin = *origin;
    }
    if (p->retired && pm_commit_tracker_inflight(p->tracker) == 0) {
        part **pp = &s->retired;
        while (*pp && *pp != p)
            pp = &(*pp)->next_retired;
        if (*pp)
            *pp = p->next_retired;
        part_free(p);
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Pause or resume every assigned partition. Caller holds mu. */
static void pause_assignment(kafka_source *s, bool pause)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(s->rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts) {
        if (parts->cnt) {
            if (pause)
                rd_kafka_pause_partitions(s->rk, parts);
            else
                rd_kafka_resume_partitions(s->rk, parts);
        }
        rd_kafka_topic_partition_list_destroy(parts);
    }
    s->paused = pause;
}

/* Pauses the partitions once backpressure has lasted PM_KAFKA_PAUSE_AFTER_MS. */
static void *pauser_main(void *arg)
{
    kafka_source *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->pauser_stop) {
        if (!s->pressure || s->paused) {
            pthread_cond_wait(&s->pcond, &s->mu);
            continue;
        }
        int64_t due = s->pressure_since_ms + PM_KAFKA_PAUSE_AFTER_MS;
        if (now_ms() >= due) {
            fprintf(stderr, "passmill: kafka: no room for records for %d ms: pausing the "
                            "partitions until there is\n", PM_KAFKA_PAUSE_AFTER_MS);
            pause_assignment(s, true);
            continue;
        }
        struct timespec deadline = {(time_t)(due / 1000), (long)(due % 1000) * 1000000L};
        pthread_cond_timedwait(&s->pcond, &s->mu, &deadline);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void kafka_backpressure(pm_source *base, bool pressure)
{
    kafka_source *s = (kafka_source *)base;
    pthread_mutex_lock(&s->mu);
    if (pressure && !s->pressure) {
        s->pressure = true;
        s->pressure_since_ms = now_ms();
        pthread_cond_signal(&s->pcond);
    } else if (!pressure) {
        s->pressure = false;
        if (s->paused)
            pause_assignment(s, false);
    }
    pthread_mutex_unlock(&s->mu);
}

static void kafka_stop(pm_source *base)
{
    atomic_store(&((kafka_source *)base)->stopping, 1);
}

static size_t inflight_total(kafka_source *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->parts_cap; i++)
        if (s->parts[i])
            n += pm_commit_tracker_inflight(s->parts[i]->tracker);
    for (part *p = s->retired; p; p = p->next_retired)
        n += pm_commit_tracker_inflight(p->tracker);
    return n;
}

/*
 * Whether partitions were revoked with durable progress the broker did not
 * confirm, and no assignment has followed yet: a close should wait for the
 * rejoin, get them back (resuming at that progress) and commit it.
 */
static bool uncommitted_revoked(kafka_source *s)
{
    pthread_mutex_lock(&s->mu);
    bool any = false;
    for (size_t i = 0; !any && i < s->parts_cap; i++)
        any = s->resume_at[i] >= 0;
    pthread_mutex_unlock(&s->mu);
    return any;
}

/*
 * The last commit.  While the group rebalances the coordinator refuses
 * commits, so keep serving the consumer (which rejoins; a partition we get
 * back resumes at our watermark, see assign()) and retry, for a bounded
 * time, until nothing durable is left uncommitted (partitions that went to
 * another member are its business: it resumes from the committed offset).
 * Messages polled meanwhile are dropped untracked: never committed, so
 * they are delivered again later.
 */
static rd_kafka_resp_err_t final_commit(kafka_source *s, int64_t deadline)
{
    while (s->async_sent && now_ms() < deadline) /* its result first */
        serve_consumer(s, 50);
    for (;;) {
        rd_kafka_resp_err_t err = commit_now(s, NULL);
        bool done = !err || err == RD_KAFKA_RESP_ERR__NO_OFFSET;
        if ((done && !uncommitted_revoked(s)) || now_ms() >= deadline)
            return done && uncommitted_revoked(s) ? RD_KAFKA_RESP_ERR__TIMED_OUT : err;
        serve_consumer(s, 200);
    }
}

/*
 * Leave the group (revoking: the rebalance callback commits again if
 * needed) and destroy the consumer, by close_until at the latest (at least
 * one second).  rd_kafka_consumer_close() would block while no coordinator
 * answers; the queue form is served here until it is done or the time is
 * up, and then the handle goes without leaving: the group notices by the
 * session timeout.
 */
static void leave_group(kafka_source *s, int64_t close_until)
{
    if (close_until < now_ms() + 1000)
        close_until = now_ms() + 1000;
    rd_kafka_queue_t *q = rd_kafka_queue_new(s->rk);
    rd_kafka_error_t *e = q ? rd_kafka_consumer_close_queue(s->rk, q) : NULL;
    if (e) {
        fprintf(stderr, "passmill: kafka: leaving the group: %s\n", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (q) {
        /* The close forwards its rebalance as an event: hand it to the same
         * callback a consumer_close() would call. */
        while (!rd_kafka_consumer_closed(s->rk) && now_ms() < close_until) {
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (!ev)
                continue;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                on_rebalance(s->rk, rd_kafka_event_error(ev),
                             rd_kafka_event_topic_partition_list(ev), s);
            rd_kafka_event_destroy(ev);
        }
    }
    bool closed = q && rd_kafka_consumer_closed(s->rk);
    if (q)
        rd_kafka_queue_destroy(q);
    if (closed) {
        rd_kafka_destroy(s->rk);
    } else {
        fprintf(stderr, "passmill: kafka: could not leave the consumer group in time (no broker "
                        "answered); closing without it\n");
        rd_kafka_destroy_flags(s->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
}

static void kafka_close(pm_source *base)
{
    kafka_source *s = (kafka_source *)base;
    if (!s)
        return;
    if (s->pauser_started) {
        pthread_mutex_lock(&s->mu);
        s->pauser_stop = true;
        pthread_cond_signal(&s->pcond);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->pauser, NULL);
    }
    /* The whole close is bounded (a third of kafka.shutdown_timeout_ms; the
     * other thirds are giving up on the broker and the outcome's last
     * deliveries): with the broker gone nothing below can succeed, and
     * waiting longer only delays the exit. */
    int64_t bound = s->shutdown_ms / 3 > 1000 ? s->shutdown_ms / 3 : 1000;
    int64_t close_until = now_ms() + (bound < PM_KAFKA_CLOSE_WAIT_MS ? bound : PM_KAFKA_CLOSE_WAIT_MS);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (close_until - now_ms()) / 1000;
    pthread_mutex_lock(&s->mu);
    while (inflight_total(s) > 0)
        if (pthread_cond_timedwait(&s->cond, &s->mu, &deadline) != 0)
            break;
    size_t left = inflight_total(s);
    pthread_mutex_unlock(&s->mu);

    if (s->rk) {
        int64_t commit_until = now_ms() + PM_KAFKA_CLOSE_COMMIT_MS;
        if (commit_until > close_until) /* at least one attempt is made */
            commit_until = close_until;
        rd_kafka_resp_err_t err = final_commit(s, commit_until);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            fprintf(stderr, "passmill: kafka: final offset commit failed: %s "
                            "(finished records will be re-delivered)\n", rd_kafka_err2str(err));
        leave_group(s, close_until);
        if (s->async_sent) /* its result never came */
            rd_kafka_topic_partition_list_destroy(s->async_sent);
    }
    if (left) {
        /* done() may still be called for these: keep the source alive. */
        fprintf(stderr, "passmill: kafka: %zu records still in flight at close; "
                        "they were not committed\n", left);
        return;
    }
    for (size_t i = 0; i < s->parts_cap; i++)
        part_free(s->parts[i]);
    while (s->retired) {
        part *next = s->retired->next_retired;
        part_free(s->retired);
        s->retired = next;
    }
    free(s->parts);
    free(s->resume_at);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->pcond);
    free(s);
}

static const pm_source_ops kafka_ops = {
    .name = "kafka",
    .next = kafka_next,
    .done = kafka_done,
    .backpressure = kafka_backpressure,
    .stop = kafka_stop,
    .close = kafka_close,
};

static int parse_format(const char *v, pm_input_format *out, pm_error *err)
{
    if (strcmp(v, "avro") == 0)
        *out = PM_INPUT_CONFLUENT;
    else if (strcmp(v, "json") == 0)
        *out = PM_INPUT_JSON;
    else
        return pm_error_set(err, PM_ERR_CONFIG,
                            "kafka.value_format: expected avro or json, got '%s'", v);
    return 0;
}

static int64_t commit_interval(const pm_config *cfg)
{
    const char *v = pm_kafka_prop(cfg->kafka_props, cfg->kafka_props_len,
                                  "auto.commit.interval.ms");
    long long ms = v ? atoll(v) : 1000;
    return ms > 0 ? ms : 1000;
}

int pm_source_kafka_open(const pm_config *cfg, pm_source **out, pm_error *err)
{
    *out = NULL;
    if (!cfg->kafka_topic_requests || !*cfg->kafka_topic_requests ||
        strlen(cfg->kafka_topic_requests) > 249)
        return pm_error_set(err, PM_ERR_CONFIG, "kafka.topic.requests: expected a topic name");
    if (!cfg->kafka_group_id || !*cfg->kafka_group_id)
        return pm_error_set(err, PM_ERR_CONFIG, "kafka.group_id: expected a consumer group id");
    kafka_source *s = calloc(1, sizeof *s);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    s->base.ops = &kafka_ops;
    snprintf(s->topic, sizeof s->topic, "%s", cfg->kafka_topic_requests);
    s->exit_on_eof = cfg->exit_on_eof;
    s->shutdown_ms = cfg->kafka_shutdown_ms > 0 ? cfg->kafka_shutdown_ms : 30000;
    atomic_init(&s->down_since_ms, 0);
    s->commit_interval_ms = commit_interval(cfg);
    s->last_commit_ms = now_ms();
    atomic_init(&s->stopping, 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_condattr_t ca; /* the pauser's deadlines are CLOCK_MONOTONIC (now_ms) */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->pcond, &ca);
    pthread_condattr_destroy(&ca);
    if (parse_format(cfg->kafka_value_format, &s->format, err) != 0) {
        kafka_close(&s->base);
        return -1;
    }

    static const char *const defaults[] = {
        "client.id", "passmill",
        "auto.offset.reset", "earliest",        /* a new group starts at the beginning */
        "queued.max.messages.kbytes", "16384",   /* bounds prefetched data (librdkafka: 64 MB) */
        NULL,
    };
    const char *forced[] = {
        "group.id", cfg->kafka_group_id,
        "enable.auto.commit", "false",           /* commits follow durability, see above */
        "enable.auto.offset.store", "false",
        cfg->exit_on_eof ? "enable.partition.eof" : NULL, "true",
        NULL,
    };
    rd_kafka_conf_t *conf = pm_kafka_conf_new(defaults, cfg->kafka_brokers, cfg->kafka_props,
                                              cfg->kafka_props_len, forced, err);
    if (!conf) {
        kafka_close(&s->base);
        return -1;
    }
    rd_kafka_conf_set_opaque(conf, s);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    char errstr[512];
    s->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!s->rk) {
        rd_kafka_conf_destroy(conf);
        pm_error_set(err, PM_ERR_CONFIG, "kafka consumer: %s", errstr);
        kafka_close(&s->base);
        return -1;
    }
    rd_kafka_poll_set_consumer(s->rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, s->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(s->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        pm_error_set(err, PM_ERR_IO, "kafka: subscribing to '%s': %s", s->topic,
                     rd_kafka_err2str(e));
        kafka_close(&s->base);
        return -1;
    }
    if (pthread_create(&s->pauser, NULL, pauser_main, s) != 0) {
        pm_error_set(err, PM_ERR_INTERNAL, "kafka: cannot start the pause thread");
        kafka_close(&s->base);
        return -1;
    }
    s->pauser_started = true;
    *out = &s->base;
    return 0;
}
