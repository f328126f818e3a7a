/*
 * outcome_kafka.c - results and dead letters on Kafka topics.
 *
 * One idempotent producer (enable.idempotence=true, acks=all,
 * compression.type=zstd) writes:
 *   - kafka.topic.results: one message per outcome, key = serial.  A pass
 *     sends its result JSON (pm_outcome_result_json); a reject sends
 *     {"serial", "status": "rejected", "code", "field", "reason", "origin"}
 *     (serial as pm_outcome_reject_serial finds it; null and no key when
 *     the record names none).
 *   - kafka.topic.rejects (dead letters): the original value bytes
 *     unchanged, key = serial when known, and the reason in headers:
 *     passmill.error.code, passmill.error.field, passmill.error.reason,
 *     passmill.source.topic, passmill.source.partition,
 *     passmill.source.offset (all UTF-8 text).
 * System failures (fail()) are not sent: the offset is not committed and
 * the record is re-delivered.
 *
 * Every message holds the record's completion token until its delivery
 * report: the source commits an offset only after the broker acknowledged
 * every message of that record.  Delivery reports are served by a poll
 * thread; flush() waits for all of them (and purges what is left after a
 * bound, reporting it failed) so no completion is pending once it returns.
 */
#include "outcomes/outcome.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "kafka/kafka_conf.h"

/* After message.timeout.ms every message has a report; this is extra slack. */
#define PM_KAFKA_FLUSH_SLACK_MS 10000

typedef struct kafka_outcome {
    pm_outcome base;
    rd_kafka_t *rk;
    rd_kafka_topic_t *results;
    rd_kafka_topic_t *rejects;
    int64_t flush_wait_ms;
    pthread_t poller;
    bool poller_started;
    atomic_int stopping;
    atomic_uint_fast64_t delivery_failures;
    pthread_mutex_t mu;
    char first_failure[256];   /* guarded by mu */
} kafka_outcome;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    kafka_outcome *o = opaque;
    if (m->err) {
        if (atomic_fetch_add(&o->delivery_failures, 1) == 0) {
            pthread_mutex_lock(&o->mu);
            snprintf(o->first_failure, sizeof o->first_failure, "%s: %s",
                     rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
            pthread_mutex_unlock(&o->mu);
            fprintf(stderr, "passmill: kafka: delivery to %s failed: %s\n",
                    rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
        }
    }
    pm_completion_release(m->_private, m->err == RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof why);
        fprintf(stderr, "passmill: kafka producer: fatal error: %s\n", why);
        return; /* every later delivery report fails, so nothing is committed */
    }
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT)
        return; /* librdkafka's own log line (FAIL) already says it */
    fprintf(stderr, "passmill: kafka producer: %s\n", reason);
}

static void *poll_main(void *arg)
{
    kafka_outcome *o = arg;
    while (!atomic_load(&o->stopping))
        rd_kafka_poll(o->rk, 100);
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/*
 * Produce one message holding c.  Waits while the local queue is full (the
 * poll thread drains it).  hdrs is consumed either way.
 */
static int produce(kafka_outcome *o, rd_kafka_topic_t *topic, const char *key,
                   void *value, size_t len, int msgflags, rd_kafka_headers_t *hdrs,
                   pm_completion *c, pm_error *err)
{
    pm_completion_hold(c);
    size_t keylen = key ? strlen(key) : 0;
    rd_kafka_resp_err_t e;
    /* A full local queue drains as the broker acknowledges; with the broker
     * gone it never does, so give up after the flush bound. */
    for (int64_t waited = 0;; waited += 2) {
        e = rd_kafka_producev(o->rk, RD_KAFKA_V_RKT(topic), RD_KAFKA_V_MSGFLAGS(msgflags),
                              RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_VALUE(value, len),
                              RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || waited >= o->flush_wait_ms)
            break;
        sleep_ms(2);
    }
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0; /* librdkafka owns value (F_FREE) and hdrs now */
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    if (msgflags & RD_KAFKA_MSG_F_FREE)
        free(value);
    pm_completion_release(c, false);
    return pm_error_set(err, PM_ERR_IO, "kafka: producing to %s: %s",
                        rd_kafka_topic_name(topic), rd_kafka_err2str(e));
}

static int kafka_pass(pm_outcome *base, const pm_job *job, json_t *result, pm_completion *c,
                      pm_error *err)
{
    kafka_outcome *o = (kafka_outcome *)base;
    char *value = json_dumps(result, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!value)
        return pm_error_set(err, PM_ERR_NOMEM, "kafka: cannot serialise the result");
    return produce(o, o->results, job->serial, value, strlen(value), RD_KAFKA_MSG_F_FREE, NULL,
                   c, err);
}

/* The results-topic line of a reject (no copy of the record: that is the DLQ's). */
static char *reject_result(const pm_job *job, const char *serial)
{
    json_t *origin = json_pack("{s:s, s:i, s:I}", "source", job->origin.source, "partition",
                               (int)job->origin.partition, "offset", (json_int_t)job->origin.offset);
    json_t *r = json_pack("{s:o, s:s, s:s, s:s, s:s, s:o}",
                          "serial", serial ? json_string(serial) : json_null(),
                          "status", "rejected", "code", job->err.reason, "field", job->err.field,
                          "reason", job->err.message, "origin", origin);
    char *s = r ? json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(r);
    return s;
}

static rd_kafka_headers_t *reject_headers(const pm_job *job)
{
    char partition[16], offset[24];
    snprintf(partition, sizeof partition, "%d", (int)job->origin.partition);
    snprintf(offset, sizeof offset, "%lld", (long long)job->origin.offset);
    const char *kv[][2] = {
        {"passmill.error.code", job->err.reason},
        {"passmill.error.field", job->err.field},
        {"passmill.error.reason", job->err.message},
        {"passmill.source.topic", job->origin.source},
        {"passmill.source.partition", partition},
        {"passmill.source.offset", offset},
    };
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);
    for (size_t i = 0; h && i < sizeof kv / sizeof kv[0]; i++)
        rd_kafka_header_add(h, kv[i][0], -1, kv[i][1], -1);
    return h;
}

static int kafka_reject(pm_outcome *base, const pm_job *job, pm_completion *c, pm_error *err)
{
    kafka_outcome *o = (kafka_outcome *)base;
    json_t *orig;
    const char *serial = pm_outcome_reject_serial(job, &orig); /* as the rejects file has it */
    rd_kafka_headers_t *h = reject_headers(job);
    char *line = reject_result(job, serial);
    int rc;
    if (!h || !line) {
        if (h)
            rd_kafka_headers_destroy(h);
        free(line);
        rc = pm_error_set(err, PM_ERR_NOMEM, "kafka: out of memory for a dead letter");
    } else if (produce(o, o->rejects, serial, job->raw.data, job->raw.len, RD_KAFKA_MSG_F_COPY,
                       h, c, err) != 0) {
        /* The dead letter first: it is the one that must not be lost. */
        free(line);
        rc = -1;
    } else {
        rc = produce(o, o->results, serial, line, strlen(line), RD_KAFKA_MSG_F_FREE, NULL, c,
                     err);
    }
    json_decref(orig); /* librdkafka copied the key */
    return rc;
}

static int kafka_fail(pm_outcome *base, const pm_job *job, pm_error *err)
{
    (void)base;
    (void)job;
    (void)err;
    return 0; /* not committed, so re-delivered: nothing to publish */
}

static int kafka_flush(pm_outcome *base, pm_error *err)
{
    kafka_outcome *o = (kafka_outcome *)base;
    rd_kafka_resp_err_t e = rd_kafka_flush(o->rk, (int)o->flush_wait_ms);
    if (e == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        /* Fail what is left so every completion is released now. */
        rd_kafka_purge(o->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        while (rd_kafka_outq_len(o->rk) > 0)
            rd_kafka_poll(o->rk, 100);
    }
    uint64_t failures = atomic_load(&o->delivery_failures);
    if (failures) {
        pthread_mutex_lock(&o->mu);
        pm_error_set(err, PM_ERR_IO, "kafka: %llu message(s) were not delivered; first: %s",
                     (unsigned long long)failures, o->first_failure);
        pthread_mutex_unlock(&o->mu);
        return -1;
    }
    return 0;
}

static void kafka_close(pm_outcome *base)
{
    kafka_outcome *o = (kafka_outcome *)base;
    if (!o)
        return;
    if (o->rk) {
        pm_error ignored;
        kafka_flush(base, &ignored);
    }
    if (o->poller_started) {
        atomic_store(&o->stopping, 1);
        pthread_join(o->poller, NULL);
    }
    if (o->results)
        rd_kafka_topic_destroy(o->results);
    if (o->rejects)
        rd_kafka_topic_destroy(o->rejects);
    if (o->rk)
        rd_kafka_destroy(o->rk);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

static const pm_outcome_ops kafka_ops = {
    .name = "kafka",
    .pass = kafka_pass,
    .reject = kafka_reject,
    .fail = kafka_fail,
    .flush = kafka_flush,
    .close = kafka_close,
};

static int64_t conf_int(rd_kafka_conf_t *conf, const char *key, int64_t fallback)
{
    char v[64];
    size_t len = sizeof v;
    if (rd_kafka_conf_get(conf, key, v, &len) != RD_KAFKA_CONF_OK)
        return fallback;
    return atoll(v);
}

static int open_topic(kafka_outcome *o, const char *key, const char *name,
                      rd_kafka_topic_t **out, pm_error *err)
{
    if (!name || !*name || strlen(name) > 249)
        return pm_error_set(err, PM_ERR_CONFIG, "%s: expected a topic name", key);
    *out = rd_kafka_topic_new(o->rk, name, NULL);
    if (!*out)
        return pm_error_set(err, PM_ERR_CONFIG, "%s '%s': %s", key, name,
                            rd_kafka_err2str(rd_kafka_last_error()));
    return 0;
}

int pm_outcome_kafka_open(const pm_config *cfg, pm_outcome **out, pm_error *err)
{
    *out = NULL;
    if (strcmp(cfg->kafka_results_format, "json") != 0)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "kafka.results_format: only json is supported, got '%s'",
                            cfg->kafka_results_format);
    kafka_outcome *o = calloc(1, sizeof *o);
    if (!o)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    o->base.ops = &kafka_ops;
    pthread_mutex_init(&o->mu, NULL);
    atomic_init(&o->stopping, 0);
    atomic_init(&o->delivery_failures, 0);

    static const char *const defaults[] = {
        "client.id", "passmill",
        "compression.type", "zstd",
        "linger.ms", "20",
        NULL,
    };
    static const char *const forced[] = {
        "enable.idempotence", "true",   /* retries never duplicate or reorder */
        "acks", "all",
        NULL,
    };
    rd_kafka_conf_t *conf = pm_kafka_conf_new(defaults, cfg->kafka_brokers, cfg->kafka_props,
                                              cfg->kafka_props_len, forced, err);
    if (!conf) {
        kafka_close(&o->base);
        return -1;
    }
    o->flush_wait_ms = conf_int(conf, "message.timeout.ms", 300000) + PM_KAFKA_FLUSH_SLACK_MS;
    /* With the broker gone every report would only come at message.timeout.ms
     * (5 minutes by default): the end of a run waits at most a third of the
     * shutdown bound (the source's close and its giving up on the broker
     * take the other two), then what is left is purged and counted failed
     * (not committed, so delivered again). */
    if (cfg->kafka_shutdown_ms > 0 && cfg->kafka_shutdown_ms / 3 < o->flush_wait_ms)
        o->flush_wait_ms = cfg->kafka_shutdown_ms / 3 > 1000 ? cfg->kafka_shutdown_ms / 3 : 1000;
    rd_kafka_conf_set_opaque(conf, o);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    char errstr[512];
    o->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!o->rk) {
        rd_kafka_conf_destroy(conf);
        pm_error_set(err, PM_ERR_CONFIG, "kafka producer: %s", errstr);
        kafka_close(&o->base);
        return -1;
    }
    if (open_topic(o, "kafka.topic.results", cfg->kafka_topic_results, &o->results, err) != 0 ||
        open_topic(o, "kafka.topic.rejects", cfg->kafka_topic_rejects, &o->rejects, err) != 0) {
        kafka_close(&o->base);
        return -1;
    }
    if (pthread_create(&o->poller, NULL, poll_main, o) != 0) {
        pm_error_set(err, PM_ERR_INTERNAL, "kafka: cannot start the delivery-report thread");
        kafka_close(&o->base);
        return -1;
    }
    o->poller_started = true;
    *out = &o->base;
    return 0;
}
