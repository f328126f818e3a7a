/*
 * stress_kafka.c - the Kafka source's concurrency, as a plain program for
 * ThreadSanitizer (Criterion cannot start under TSan).
 *
 * An embedded broker (4 partitions) holds N JSON records.  The main thread
 * takes them with next() and signals backpressure (short blips and one
 * sustained stretch that really pauses the partitions); worker threads
 * finish them with done() out of order.  At the end every record was
 * delivered exactly once and the group's committed offsets are at the end
 * of every partition.  Exit status 0 on success.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "core/config.h"
#include "kafka/devbroker.h"
#include "sources/source.h"

#define TOPIC "stress"
#define PARTITIONS 4
#define N 4000
#define THREADS 4

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "stress_kafka: " __VA_ARGS__); \
    fputc('\n', stderr); exit(1); } } while (0)

typedef struct work {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pm_origin origins[N];
    void *refs[N];
    size_t head, tail;
    bool closed;
    pm_source *source;
} work;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *worker(void *arg)
{
    work *w = arg;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->head == w->tail && !w->closed)
            pthread_cond_wait(&w->cond, &w->mu);
        if (w->head == w->tail) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        size_t i = w->head++;
        pthread_mutex_unlock(&w->mu);
        if (rand_r(&seed) % 8 == 0)
            sleep_ms(1); /* finish out of order */
        w->source->ops->done(w->source, &w->origins[i], w->refs[i], true);
    }
}

static void produce(const char *bootstrap)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    CHECK(rk, "producer: %s", errstr);
    for (int i = 0; i < N; i++) {
        char v[32];
        int len = snprintf(v, sizeof v, "{\"n\": %d}", i);
        CHECK(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(i % PARTITIONS),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_VALUE(v, (size_t)len), RD_KAFKA_V_END) == 0,
              "produce");
    }
    CHECK(rd_kafka_flush(rk, 30000) == 0 && rd_kafka_outq_len(rk) == 0, "flush");
    rd_kafka_destroy(rk);
}

static void check_committed(const char *bootstrap, const char *group)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    CHECK(rk, "consumer: %s", errstr);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, TOPIC, p);
    CHECK(rd_kafka_committed(rk, parts, 20000) == 0, "committed()");
    for (int p = 0; p < PARTITIONS; p++) {
        int64_t lo, hi;
        CHECK(rd_kafka_query_watermark_offsets(rk, TOPIC, p, &lo, &hi, 20000) == 0, "watermarks");
        CHECK(parts->elems[p].offset == hi, "partition %d committed %lld, end %lld", p,
              (long long)parts->elems[p].offset, (long long)hi);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
}

int main(void)
{
    pm_error err;
    pm_devbroker *b;
    CHECK(pm_devbroker_create(1, &b, &err) == 0, "%s", err.message);
    CHECK(pm_devbroker_create_topic(b, TOPIC, PARTITIONS, &err) == 0, "%s", err.message);
    const char *bootstrap = pm_devbroker_bootstrap(b);
    produce(bootstrap);

    pm_config *cfg = pm_config_create();
    const char *pairs[] = {"kafka.group_id=stress", "kafka.topic.requests=" TOPIC,
                           "kafka.value_format=json", "kafka.exit_on_eof=true",
                           "kafka.session.timeout.ms=6000", "kafka.fetch.wait.max.ms=10",
                           "kafka.auto.commit.interval.ms=20"};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        CHECK(pm_config_set_pair(cfg, pairs[i], &err) == 0, "%s", err.message);
    CHECK(pm_config_set(cfg, "kafka.brokers", bootstrap, &err) == 0, "%s", err.message);
    pm_source *s;
    CHECK(pm_source_kafka_open(cfg, &s, &err) == 0, "%s", err.message);

    static work w;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cond, NULL);
    w.source = s;
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, &w) == 0, "thread");
    static bool seen[PARTITIONS][N];
    pm_job job;
    pm_job_init(&job);
    int rc, n = 0;
    while ((rc = s->ops->next(s, &job, &err)) == 1) {
        CHECK(job.origin.partition >= 0 && job.origin.partition < PARTITIONS &&
              job.origin.offset >= 0 && job.origin.offset < N, "bad origin");
        CHECK(!seen[job.origin.partition][job.origin.offset], "offset delivered twice");
        seen[job.origin.partition][job.origin.offset] = true;
        pthread_mutex_lock(&w.mu);
        w.origins[w.tail] = job.origin;
        w.refs[w.tail] = job.source_ref;
        w.tail++;
        pthread_cond_signal(&w.cond);
        pthread_mutex_unlock(&w.mu);
        pm_job_reset(&job);
        n++;
        if (n % 50 == 0) { /* a blip: not long enough to pause */
            s->ops->backpressure(s, true);
            s->ops->backpressure(s, false);
        }
        if (n == N / 2) { /* sustained: the partitions are paused, then resumed */
            s->ops->backpressure(s, true);
            sleep_ms(5600);
            s->ops->backpressure(s, false);
        }
    }
    CHECK(rc == 0, "next: %s", err.message);
    CHECK(n == N, "delivered %d of %d", n, N);
    pthread_mutex_lock(&w.mu);
    w.closed = true;
    pthread_cond_broadcast(&w.cond);
    pthread_mutex_unlock(&w.mu);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    s->ops->close(s);
    check_committed(bootstrap, "stress");
    pm_job_free(&job);
    pm_config_destroy(cfg);
    pm_devbroker_destroy(b);
    printf("stress_kafka: %d records, committed at the end of %d partitions\n", N, PARTITIONS);
    return 0;
}
