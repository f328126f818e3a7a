/*
 * test_kafka.c - Kafka in, store and topics out, against a real broker.
 *
 * Every test starts an embedded Kafka-protocol cluster in this process
 * (pipeline/kafka/devbroker.h, librdkafka's mock cluster: 3 brokers on 127.0.0.1)
 * and drives the real `passmill run` / `passmill produce` binaries as child
 * processes, so a consumer can be killed with SIGKILL and restarted while
 * the broker keeps its data.  Faults are injected through the mock
 * cluster.  Checks read the topics back with a plain librdkafka consumer
 * and ask the group coordinator for committed offsets.
 *
 * Suite kafka_pg runs the kill -9 case with a PostgreSQL registry (a schema
 * of its own): the server PASSMILL_REGISTRY_URL names (password in
 * PASSMILL_REGISTRY_PASSWORD_FILE), else one this runner starts with
 * ops/pg-dev; without one it FAILS.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include "core/config.h"
#include "kafka/devbroker.h"
#include "kafka/kafka_conf.h"
#include "sources/source.h"
#include "test_util.h"

extern char **environ;

#define REQUESTS "requests"
#define RESULTS "results"
#define REJECTS "dead-letters"
#define PARTITIONS 4
#define NOW "2027-05-01T12:00:00Z"

/* ---- fixture ---- */

typedef struct kt {
    char *work;
    pm_devbroker *broker;
    const char *bootstrap;
    char group[64];
    json_t *serials;     /* object: serial -> true, from the sample file */
} kt;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static json_t *serials_of_jsonl(const char *path)
{
    json_t *set = json_object();
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "open %s", path);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        cr_assert_not_null(r);
        json_object_set_new(set, json_string_value(json_object_get(r, "serial_number")), json_true());
        json_decref(r);
    }
    free(line);
    fclose(f);
    return set;
}

static void write_conf(kt *t, const char *name, const char *value_format, const char *extra)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", t->work, name);
    char schema[1024], templates[1024]; /* pmt_src() reuses one buffer */
    snprintf(schema, sizeof schema, "%s", pmt_src("schemas/pass_request.avsc"));
    snprintf(templates, sizeof templates, "%s", pmt_src("config/templates"));
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "input.type = kafka\n"
            "kafka.brokers = %s\n"
            "kafka.group_id = %s\n"
            "kafka.topic.requests = " REQUESTS "\n"
            "kafka.topic.results = " RESULTS "\n"
            "kafka.topic.rejects = " REJECTS "\n"
            "kafka.value_format = %s\n"
            "kafka.schema_ids = 1:%s\n"
            "kafka.exit_on_eof = true\n"
            "kafka.session.timeout.ms = 6000\n"
            "kafka.heartbeat.interval.ms = 300\n"
            "kafka.fetch.wait.max.ms = 10\n"
            "kafka.auto.commit.interval.ms = 200\n"
            "template.dir = %s\n"
            "sign.cert = %s/id/signer.pem\nsign.key = %s/id/signer.key\nsign.chain = %s/id/wwdr.pem\n"
            "barcode.secret_env = PM_TEST_NO_SUCH_VAR\nbarcode.secret_file = %s/secret\n"
            "store.dir = %s/store\n"
            "output.ledger = %s/ledger.jsonl.zst\noutput.rejects = %s/rejects.jsonl\n"
            "engine.workers = 2\nengine.queue_size = 64\nengine.progress_ms = 0\n"
            "engine.now = " NOW "\n%s",
            t->bootstrap, t->group, value_format, schema, templates, t->work, t->work, t->work, t->work, t->work, t->work,
            t->work, extra ? extra : "");
    fclose(f);
}

/* A work folder with an identity, a barcode secret, `count` sample records
 * (requests.jsonl and the same records as requests.avro) and a cluster. */
static void kt_setup(kt *t, const char *tag, int count)
{
    memset(t, 0, sizeof *t);
    t->work = pmt_tmpdir(tag);
    cr_assert_not_null(t->work);
    cr_assert_eq(pmt_sh("'%s' identity create '%s/id' >/dev/null", pmt_passmill(), t->work), 0);
    cr_assert_eq(pmt_sh("printf 'kafka-test-secret-0123456789abcdef' > '%s/secret'", t->work), 0);
    cr_assert_eq(pmt_sh("'%s' sample --count %d --seed 11 > '%s/requests.jsonl'", pmt_passmill(),
                        count, t->work), 0);
    cr_assert_eq(pmt_sh("'%s' sample --count %d --seed 11 --format avro > '%s/requests.avro'",
                        pmt_passmill(), count, t->work), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/requests.jsonl", t->work);
    t->serials = serials_of_jsonl(path);
    cr_assert_eq(json_object_size(t->serials), (size_t)count);

    pm_error err;
    cr_assert_eq(pm_devbroker_create(3, &t->broker, &err), 0, "%s", err.message);
    cr_assert_eq(pm_devbroker_create_topics(t->broker, REQUESTS "," RESULTS "," REJECTS,
                                            PARTITIONS, &err), 0, "%s", err.message);
    t->bootstrap = pm_devbroker_bootstrap(t->broker);
    snprintf(t->group, sizeof t->group, "passmill-%s", tag);
    write_conf(t, "run.conf", "avro", NULL);
}

static void kt_teardown(kt *t)
{
    pm_devbroker_destroy(t->broker);
    json_decref(t->serials);
    pmt_rmrf(t->work);
    free(t->work);
}

/* ---- producing and reading topics ---- */

static void produce_file(kt *t, const char *file, const char *format, int expect)
{
    int status;
    char *out = pmt_sh_out(&status, "'%s' produce -b '%s' -t " REQUESTS " --format %s '%s/%s'",
                           pmt_passmill(), t->bootstrap, format, t->work, file);
    char want[64];
    snprintf(want, sizeof want, "acknowledged=%d failed=0\n", expect);
    cr_assert_eq(status, 0, "produce: %s", out);
    cr_assert_str_eq(out, want);
    free(out);
}

static void dr_count(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    int *acked = opaque;
    if (!m->err)
        (*acked)++;
}

/* Produce raw values with keys to REQUESTS, spread round-robin over `parts` partitions. */
static void produce_raw(kt *t, const char *const *keys, const pm_buf *values, size_t n, int parts)
{
    char errstr[512];
    int acked = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", t->bootstrap, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof errstr);
    rd_kafka_conf_set_opaque(conf, &acked);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_count);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    cr_assert_not_null(rk, "%s", errstr);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(REQUESTS), RD_KAFKA_V_PARTITION((int32_t)(i % (size_t)parts)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_KEY(keys[i], strlen(keys[i])),
                                       RD_KAFKA_V_VALUE(values[i].data, values[i].len),
                                       RD_KAFKA_V_END), 0);
    cr_assert_eq(rd_kafka_flush(rk, 30000), 0);
    cr_assert_eq(acked, (int)n);
    rd_kafka_destroy(rk);
}

typedef struct kmsg {
    int32_t partition;
    int64_t offset;
    char *key;            /* NUL-terminated copy, NULL when no key */
    pm_buf value;
    json_t *headers;      /* object name -> string */
} kmsg;

typedef struct kmsgs {
    kmsg *v;
    size_t n;
} kmsgs;

static void kmsgs_free(kmsgs *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        pm_buf_free(&m->v[i].value);
        json_decref(m->v[i].headers);
    }
    free(m->v);
    m->v = NULL;
    m->n = 0;
}

static rd_kafka_t *plain_consumer(kt *t, const char *group, bool eof)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", t->bootstrap, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.partition.eof", eof ? "true" : "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    cr_assert_not_null(rk, "%s", errstr);
    return rk;
}

/* Every message of a topic, from the beginning of each partition to its end. */
static kmsgs read_topic(kt *t, const char *topic)
{
    rd_kafka_t *rk = plain_consumer(t, "passmill-test-reader", true);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    kmsgs out = {0};
    size_t cap = 0;
    int eofs = 0;
    time_t deadline = time(NULL) + 60;
    while (eofs < PARTITIONS) {
        cr_assert(time(NULL) < deadline, "reading %s timed out", topic);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eofs++;
        } else if (!m->err) {
            if (out.n == cap) {
                cap = cap ? cap * 2 : 256;
                out.v = realloc(out.v, cap * sizeof *out.v);
            }
            kmsg *k = &out.v[out.n++];
            memset(k, 0, sizeof *k);
            k->partition = m->partition;
            k->offset = m->offset;
            k->key = m->key ? strndup(m->key, m->key_len) : NULL;
            pm_buf_append(&k->value, m->payload ? m->payload : "", m->len);
            k->headers = json_object();
            rd_kafka_headers_t *h = NULL;
            if (rd_kafka_message_headers(m, &h) == 0) {
                const char *name;
                const void *val;
                size_t len;
                for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &len) == 0; i++)
                    json_object_set_new(k->headers, name, json_stringn(val, len));
            }
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

/* The group's committed offset of every REQUESTS partition equals its end. */
static void assert_committed_at_end(kt *t)
{
    rd_kafka_t *rk = plain_consumer(t, t->group, false);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, REQUESTS, p);
    cr_assert_eq(rd_kafka_committed(rk, parts, 20000), 0);
    int64_t total = 0;
    for (int p = 0; p < PARTITIONS; p++) {
        int64_t lo, hi;
        cr_assert_eq(rd_kafka_query_watermark_offsets(rk, REQUESTS, p, &lo, &hi, 20000), 0);
        cr_assert_eq(parts->elems[p].offset, hi, "partition %d: committed %lld, end %lld", p,
                     (long long)parts->elems[p].offset, (long long)hi);
        total += hi;
    }
    cr_assert_gt(total, 0);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
}

/* ---- passmill run children ---- */

static pid_t run_start(kt *t, const char *conf, const char *tag)
{
    char confpath[1024], out[1024], errp[1024];
    snprintf(confpath, sizeof confpath, "%s/%s", t->work, conf);
    snprintf(out, sizeof out, "%s/%s.out", t->work, tag);
    snprintf(errp, sizeof errp, "%s/%s.err", t->work, tag);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *argv[] = {(char *)pmt_passmill(), "run", "-c", confpath, NULL};
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, pmt_passmill(), &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static int run_wait(pid_t pid)
{
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *run_output(kt *t, const char *tag, const char *ext)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s", t->work, tag, ext);
    char *s = pmt_read_file(path, NULL);
    return s ? s : strdup("");
}

/* "in=N passes=P unchanged=0 rejects=R" -> numbers; returns 0 when the line is there. */
static int parse_summary(const char *out, long *in, long *passes, long *rejects)
{
    const char *s = strstr(out, "in=");
    return s && sscanf(s, "in=%ld passes=%ld unchanged=0 rejects=%ld", in, passes, rejects) == 3 ? 0 : -1;
}

/* ---- store checks ---- */

static size_t count_passes(kt *t)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/store/passes", t->work);
    DIR *d = opendir(path);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n;
}

/* The visible files of store/<dir> are exactly <serial><ext> for every serial. */
static void assert_store_dir_exact(kt *t, const char *dir, const char *ext)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/store/%s", t->work, dir);
    DIR *d = opendir(path);
    cr_assert_not_null(d, "%s", path);
    json_t *seen = json_object();
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue; /* ".", "..", and a killed writer's hidden .pm-tmp-* file */
        size_t n = strlen(e->d_name), el = strlen(ext);
        cr_assert(n > el && strcmp(e->d_name + n - el, ext) == 0, "unexpected file %s/%s", dir,
                  e->d_name);
        char serial[256];
        snprintf(serial, sizeof serial, "%.*s", (int)(n - el), e->d_name);
        cr_assert_not_null(json_object_get(t->serials, serial), "unknown serial %s", serial);
        json_object_set_new(seen, serial, json_true());
    }
    closedir(d);
    cr_assert_eq(json_object_size(seen), json_object_size(t->serials), "%s: %zu of %zu serials",
                 dir, json_object_size(seen), json_object_size(t->serials));
    json_decref(seen);
}

static void assert_store_complete_and_verified(kt *t)
{
    assert_store_dir_exact(t, "passes", ".pkpass");
    assert_store_dir_exact(t, "qr", ".png");
    int status;
    char *out = pmt_sh_out(&status,
                           "cd '%s/store/passes' && find . -maxdepth 1 -name '*.pkpass' -print0 | "
                           "xargs -0 '%s' verify --ca '%s/id/ca.pem' --quiet 2>&1",
                           t->work, pmt_passmill(), t->work);
    cr_assert_eq(status, 0, "verify: %.2000s", out);
    cr_assert_str_empty(out);
    free(out);
}

/* Results: every serial has a non-rejected result; duplicates (re-deliveries)
 * carry the same sha256 because the clock is fixed.  Returns the count. */
static size_t assert_results_cover_serials(kt *t, const kmsgs *results, size_t *rejected)
{
    json_t *sha = json_object();
    size_t passes = 0;
    *rejected = 0;
    for (size_t i = 0; i < results->n; i++) {
        const kmsg *m = &results->v[i];
        json_t *r = json_loadb((const char *)m->value.data, m->value.len, 0, NULL);
        cr_assert_not_null(r, "result %zu is not JSON", i);
        const char *status = json_string_value(json_object_get(r, "status"));
        cr_assert_not_null(status);
        if (strcmp(status, "rejected") == 0) {
            (*rejected)++;
            json_decref(r);
            continue;
        }
        const char *serial = json_string_value(json_object_get(r, "serial"));
        cr_assert_not_null(serial);
        cr_assert_str_eq(m->key, serial, "results are keyed by serial");
        cr_assert_not_null(json_object_get(t->serials, serial));
        const char *h = json_string_value(json_object_get(r, "sha256"));
        json_t *prev = json_object_get(sha, serial);
        if (prev)
            cr_assert_str_eq(json_string_value(prev), h, "%s re-delivered with other bytes", serial);
        else
            json_object_set_new(sha, serial, json_string(h));
        passes++;
        json_decref(r);
    }
    cr_assert_eq(json_object_size(sha), json_object_size(t->serials));
    json_decref(sha);
    return passes;
}

/* ---- tests ---- */

/* Frames of undecodable values: (key, bytes, expected reject code). */
typedef struct bad_value {
    const char *key;
    pm_buf value;
    const char *code;
    const char *field;
} bad_value;

Test(kafka, end_to_end_passes_results_and_dead_letters, .timeout = 120)
{
    enum { N = 300 };
    kt t;
    kt_setup(&t, "kafka-e2e", N);
    produce_file(&t, "requests.jsonl", "avro", N); /* JSON Lines converted to Avro */

    /* Undecodable values built from one good frame. */
    kmsgs req = read_topic(&t, REQUESTS);
    cr_assert_eq(req.n, (size_t)N);
    const pm_buf *good = &req.v[0].value;
    cr_assert(good->len > 40 && good->data[0] == 0);
    bad_value bad[4] = {
        /* frame + 7 bytes: the datum ends inside the first field */
        {"bad-truncated", PM_BUF_INIT, "avro.decode", "serial_number"},
        {"bad-magic", PM_BUF_INIT, "avro.magic", ""},
        {"bad-schema-id", PM_BUF_INIT, "avro.schema_id", ""},
        {"bad-empty", PM_BUF_INIT, "avro.magic", ""},
    };
    pm_buf_append(&bad[0].value, good->data, 12);
    pm_buf_append(&bad[1].value, good->data, good->len);
    bad[1].value.data[0] = 1;
    pm_buf_append(&bad[2].value, good->data, good->len);
    bad[2].value.data[4] = 99;
    const char *keys[4];
    pm_buf values[4];
    for (int i = 0; i < 4; i++) {
        keys[i] = bad[i].key;
        values[i] = bad[i].value;
    }
    produce_raw(&t, keys, values, 4, PARTITIONS);

    pid_t pid = run_start(&t, "run.conf", "run");
    int status = run_wait(pid);
    char *out = run_output(&t, "run", "out"), *err = run_output(&t, "run", "err");
    cr_assert_eq(status, 1, "exit 1 = finished with rejects; stderr: %s", err);
    cr_assert_str_eq(out, "in=304 passes=300 unchanged=0 rejects=4\n");
    free(out);
    free(err);

    assert_store_complete_and_verified(&t);
    assert_committed_at_end(&t);

    kmsgs results = read_topic(&t, RESULTS);
    size_t rejected;
    cr_assert_eq(assert_results_cover_serials(&t, &results, &rejected), (size_t)N);
    cr_assert_eq(rejected, 4);
    cr_assert_eq(results.n, (size_t)N + 4, "one result per outcome, no duplicates");

    /* Dead letters: original bytes, the reason and the origin in headers. */
    kmsgs dlq = read_topic(&t, REJECTS);
    kmsgs all = read_topic(&t, REQUESTS);
    cr_assert_eq(dlq.n, 4);
    for (int i = 0; i < 4; i++) {
        const kmsg *src = NULL, *dead = NULL;
        for (size_t j = 0; j < all.n; j++)
            if (all.v[j].key && strcmp(all.v[j].key, bad[i].key) == 0)
                src = &all.v[j];
        cr_assert_not_null(src);
        for (size_t j = 0; j < dlq.n; j++)
            if (dlq.v[j].value.len == bad[i].value.len &&
                (bad[i].value.len == 0 ||
                 memcmp(dlq.v[j].value.data, bad[i].value.data, bad[i].value.len) == 0))
                dead = &dlq.v[j];
        cr_assert_not_null(dead, "dead letter for %s with the original bytes", bad[i].key);
        json_t *h = dead->headers;
        cr_assert_str_eq(json_string_value(json_object_get(h, "passmill.error.code")), bad[i].code,
                         "%s", bad[i].key);
        cr_assert_str_eq(json_string_value(json_object_get(h, "passmill.error.field")),
                         bad[i].field);
        cr_assert_str_not_empty(json_string_value(json_object_get(h, "passmill.error.reason")));
        cr_assert_str_eq(json_string_value(json_object_get(h, "passmill.source.topic")), REQUESTS);
        char part[16], off[24];
        snprintf(part, sizeof part, "%d", (int)src->partition);
        snprintf(off, sizeof off, "%lld", (long long)src->offset);
        cr_assert_str_eq(json_string_value(json_object_get(h, "passmill.source.partition")), part);
        cr_assert_str_eq(json_string_value(json_object_get(h, "passmill.source.offset")), off);
        pm_buf_free(&bad[i].value);
    }
    kmsgs_free(&dlq);
    kmsgs_free(&all);
    kmsgs_free(&results);
    kmsgs_free(&req);
    kt_teardown(&t);
}

Test(kafka, json_values_and_bad_json_lines, .timeout = 120)
{
    enum { N = 100 };
    kt t;
    kt_setup(&t, "kafka-json", N);
    write_conf(&t, "run.conf", "json", NULL);
    produce_file(&t, "requests.avro", "json", N); /* Avro container -> JSON values */
    const char *keys[2] = {"bad-json-1", "bad-json-2"};
    pm_buf values[2] = {PM_BUF_INIT, PM_BUF_INIT};
    pm_buf_append_str(&values[0], "{\"serial_number\": ");
    pm_buf_append_str(&values[1], "not json at all");
    produce_raw(&t, keys, values, 2, PARTITIONS);

    int status = run_wait(run_start(&t, "run.conf", "run"));
    char *out = run_output(&t, "run", "out");
    cr_assert_eq(status, 1);
    cr_assert_str_eq(out, "in=102 passes=100 unchanged=0 rejects=2\n");
    free(out);
    assert_store_complete_and_verified(&t);
    assert_committed_at_end(&t);
    kmsgs dlq = read_topic(&t, REJECTS);
    cr_assert_eq(dlq.n, 2);
    for (size_t i = 0; i < dlq.n; i++) {
        cr_assert_str_eq(json_string_value(json_object_get(dlq.v[i].headers, "passmill.error.code")),
                         "json.syntax");
        cr_assert(pm_buf_cstr(&dlq.v[i].value) && (strcmp((char *)dlq.v[i].value.data, "not json at all") == 0 ||
                  strcmp((char *)dlq.v[i].value.data, "{\"serial_number\": ") == 0));
    }
    kmsgs_free(&dlq);
    pm_buf_free(&values[0]);
    pm_buf_free(&values[1]);
    kt_teardown(&t);
}

/* The sum of the group's committed offsets over the REQUESTS partitions. */
static int64_t committed_total(kt *t)
{
    rd_kafka_t *rk = plain_consumer(t, t->group, false);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, REQUESTS, p);
    cr_assert_eq(rd_kafka_committed(rk, parts, 20000), 0);
    int64_t total = 0;
    for (int p = 0; p < PARTITIONS; p++)
        total += parts->elems[p].offset > 0 ? parts->elems[p].offset : 0;
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
    return total;
}

Test(kafka, sigterm_commits_exactly_what_was_done, .timeout = 120)
{
    enum { N = 3000 };
    kt t;
    kt_setup(&t, "kafka-sigterm", N);
    write_conf(&t, "serve.conf", "avro", "kafka.exit_on_eof = false\n"); /* a service */
    produce_file(&t, "requests.avro", "avro", N);
    pid_t pid = run_start(&t, "serve.conf", "serve");
    while (count_passes(&t) < N / 4) {
        int st;
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "ended early");
        sleep_ms(5);
    }
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int status = run_wait(pid);
    char *out = run_output(&t, "serve", "out"), *err = run_output(&t, "serve", "err");
    long in1, passes1, rejects1;
    cr_assert_eq(parse_summary(out, &in1, &passes1, &rejects1), 0, "%s %s", out, err);
    cr_assert_eq(status, 0, "%s", err);
    cr_assert_eq(passes1, in1);
    cr_assert_lt(in1, N, "stopped before the end");
    /* Everything taken was finished and committed, nothing more. */
    cr_assert_eq(committed_total(&t), in1);
    free(out);
    free(err);

    /* A restart takes exactly the rest. */
    status = run_wait(run_start(&t, "run.conf", "rest"));
    out = run_output(&t, "rest", "out");
    long in2, passes2, rejects2;
    cr_assert_eq(parse_summary(out, &in2, &passes2, &rejects2), 0, "%s", out);
    cr_assert_eq(status, 0);
    cr_assert_eq(in2, N - in1);
    free(out);
    assert_store_complete_and_verified(&t);
    assert_committed_at_end(&t);
    kt_teardown(&t);
}

Test(kafka, kill_9_and_restart_loses_nothing, .timeout = 240)
{
    enum { N = 2000, KILLS = 3 };
    kt t;
    kt_setup(&t, "kafka-crash", N);
    produce_file(&t, "requests.avro", "avro", N);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int k = 0; k < KILLS; k++) {
        char tag[16];
        snprintf(tag, sizeof tag, "crash%d", k);
        pid_t pid = run_start(&t, "run.conf", tag);
        /* Kill at a random point while passes are being written: once the
         * store holds a random number of them between the k-th and the
         * (k+1)-th quarter of N. */
        size_t target = (size_t)N * (k + 1) / (KILLS + 1) + (size_t)(rand() % (N / (KILLS + 1)));
        for (;;) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                char *err = run_output(&t, tag, "err");
                cr_assert_fail("run %d ended before the kill (status %d): %s", k, st, err);
            }
            if (count_passes(&t) >= target)
                break;
            sleep_ms(5);
        }
        cr_assert_eq(kill(pid, SIGKILL), 0);
        cr_assert_eq(run_wait(pid), 128 + SIGKILL);
        cr_log_info("killed run %d with %zu passes in the store", k, count_passes(&t));
    }
    pid_t pid = run_start(&t, "run.conf", "final");
    int status = run_wait(pid);
    char *out = run_output(&t, "final", "out"), *err = run_output(&t, "final", "err");
    long in, passes, rejects;
    cr_assert_eq(parse_summary(out, &in, &passes, &rejects), 0, "out: %s err: %s", out, err);
    cr_assert_eq(status, 0, "%s", err);
    cr_assert_eq(rejects, 0);
    cr_assert_eq(in, passes);
    cr_log_info("after %d kills the last run had in=%ld of %d", KILLS, in, N);
    free(out);
    free(err);

    assert_store_complete_and_verified(&t);
    assert_committed_at_end(&t);
    kmsgs results = read_topic(&t, RESULTS);
    size_t rejected;
    cr_assert_geq(assert_results_cover_serials(&t, &results, &rejected), (size_t)N);
    cr_assert_eq(rejected, 0);
    kmsgs_free(&results);
    kt_teardown(&t);
}

/* The group's committed offset of each partition of REQUESTS. */
static void committed_offsets(kt *t, int64_t out[PARTITIONS])
{
    rd_kafka_t *rk = plain_consumer(t, t->group, false);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, REQUESTS, p);
    cr_assert_eq(rd_kafka_committed(rk, parts, 20000), 0);
    for (int p = 0; p < PARTITIONS; p++)
        out[p] = parts->elems[p].offset < 0 ? 0 : parts->elems[p].offset; /* none yet: 0 */
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
}

/* ---- kill -9 with a registry, on SQLite and on PostgreSQL ---- */

/*
 * PostgreSQL for suite kafka_pg, as in test_registry_run.c: the server
 * PASSMILL_REGISTRY_URL names, else one this runner starts with ops/pg-dev
 * in a private folder -- only when a kafka_pg case is to run (the filter
 * has disabled the others before PRE_ALL), since no other case needs it.
 */
static bool suite_will_run(struct criterion_suite_set *s)
{
    if (!s->tests)
        return false;
    FOREACH_SET(struct criterion_test *test, s->tests) {
        if (!test->data->disabled)
            return true;
    }
    return false;
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    bool wanted = false;
    FOREACH_SET(struct criterion_suite_set *s, set->suites) {
        if (strcmp(s->suite.name, "kafka_pg") == 0 && suite_will_run(s))
            wanted = true;
    }
    if (!wanted)
        return;
    pmt_pg_start("test_kafka");
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    pmt_pg_stop();
}

/* The kill test's registry: a SQLite file in the work folder, or a schema
 * of its own in the PostgreSQL database. */
typedef struct kreg {
    bool pg;
    char where[1200]; /* the SQLite file, or the URL with search_path set to the schema */
    char schema[64];  /* pg: the schema, "" once dropped */
} kreg;

/* File scope: the pg case's .fini drops the schema after a failed assertion too. */
static kreg kill_reg;

/* A libpq connection to url; the password as passmill reads it (never argv). */
static PGconn *pg_connect(const char *url)
{
    char *password = pmt_pg_password();
    cr_assert_not_null(password, "cannot read %s", getenv("PASSMILL_REGISTRY_PASSWORD_FILE"));
    const char *keys[] = {"dbname", "password", NULL};
    const char *vals[] = {url, password, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    free(password);
    cr_assert(PQstatus(c) == CONNECTION_OK, "PostgreSQL connection: %s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning")); /* no NOTICE of DROP ... IF EXISTS */
    return c;
}

static void pg_admin_sql(const char *sql)
{
    PGconn *c = pg_connect(getenv("PASSMILL_REGISTRY_URL"));
    PGresult *res = PQexec(c, sql);
    cr_assert(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
}

static void kreg_init(kreg *r, kt *t, bool pg)
{
    memset(r, 0, sizeof *r);
    r->pg = pg;
    if (!pg) {
        snprintf(r->where, sizeof r->where, "%s/registry.db", t->work);
        return;
    }
    const char *url = getenv("PASSMILL_REGISTRY_URL");
    cr_assert(url && *url, "no PostgreSQL server: ops/pg-dev start failed or PASSMILL_REGISTRY_URL unset");
    snprintf(r->schema, sizeof r->schema, "t_kafka_%d", (int)getpid());
    char sql[256];
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", r->schema, r->schema);
    pg_admin_sql(sql);
    cr_assert_eq(pmt_pg_schema_url(r->where, sizeof r->where, r->schema), 0);
}

static void kreg_drop(kreg *r)
{
    if (!r->pg || !r->schema[0])
        return;
    char sql[128];
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", r->schema);
    r->schema[0] = '\0'; /* once, even if this fails */
    pg_admin_sql(sql);
}

static void drop_kill_schema(void) { kreg_drop(&kill_reg); }

/* The run.conf lines that name the registry. */
static void kreg_conf(const kreg *r, char *out, size_t size)
{
    const char *pwfile = getenv("PASSMILL_REGISTRY_PASSWORD_FILE");
    if (!r->pg)
        snprintf(out, size, "registry.path = %s\n", r->where);
    else if (pwfile && *pwfile)
        snprintf(out, size, "registry.url = %s\nregistry.password_file = %s\n", r->where, pwfile);
    else /* the password, if any, in PASSMILL_REGISTRY_PASSWORD, passmill's default */
        snprintf(out, size, "registry.url = %s\n", r->where);
}

#define ORIGINS_SQL "SELECT origin FROM results UNION SELECT origin FROM rejects"

/* Every origin of a results or rejects row, as a set (object: origin -> true). */
static json_t *kreg_origins(const kreg *r)
{
    json_t *set = json_object();
    if (r->pg) {
        PGconn *c = pg_connect(r->where);
        PGresult *res = PQexec(c, ORIGINS_SQL);
        cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", ORIGINS_SQL, PQerrorMessage(c));
        for (int i = 0; i < PQntuples(res); i++)
            json_object_set_new(set, PQgetvalue(res, i, 0), json_true());
        PQclear(res);
        PQfinish(c);
        return set;
    }
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(r->where, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK, "%s: %s", r->where,
                 sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, ORIGINS_SQL, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_object_set_new(set, (const char *)sqlite3_column_text(st, 0), json_true());
    cr_assert_eq(rc, SQLITE_DONE, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return set;
}

/* Every offset below each partition's committed one has its registry row
 * (a results or rejects row with that origin); returns how many offsets. */
static int64_t assert_committed_offsets_recorded(kt *t, const kreg *r)
{
    int64_t c[PARTITIONS], total = 0;
    committed_offsets(t, c);
    json_t *have = kreg_origins(r);
    int64_t missing = 0;
    char first[256] = ""; /* the first few missing, for the message */
    for (int p = 0; p < PARTITIONS; p++) {
        total += c[p];
        for (int64_t o = 0; o < c[p]; o++) {
            char origin[64];
            snprintf(origin, sizeof origin, REQUESTS "[%d]@%lld", p, (long long)o);
            if (json_object_get(have, origin))
                continue;
            if (missing++ < 3)
                snprintf(first + strlen(first), sizeof first - strlen(first), " %s", origin);
        }
    }
    json_decref(have);
    cr_assert_eq(missing, 0, "%lld committed offsets (of %lld) without a registry row:%s", (long long)missing,
                 (long long)total, first);
    return total;
}

/*
 * kill -9 at random moments during a 20,000-record Kafka run with a
 * registry (5 times): after each kill every offset the group committed has
 * its registry row; after the run that finishes, registry rows and store
 * objects agree one to one (sha256), no temporary file is left, and a run
 * in a new group over the same topic reports every record unchanged.
 */
static void kill_9_with_a_registry(bool pg)
{
    const char *env = getenv("PM_TEST_KILL_RECORDS");
    const int n = env && *env ? atoi(env) : 20000;
    enum { KILLS = 5 };
    kt t;
    kt_setup(&t, pg ? "kafka-pg-crash" : "kafka-reg-crash", n);
    kreg_init(&kill_reg, &t, pg);
    char extra[3000];
    kreg_conf(&kill_reg, extra, sizeof extra);
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "store.fsync = false\n");
    write_conf(&t, "run.conf", "avro", extra);
    produce_file(&t, "requests.avro", "avro", n);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int k = 0; k < KILLS; k++) {
        char tag[16];
        snprintf(tag, sizeof tag, "crash%d", k);
        pid_t pid = run_start(&t, "run.conf", tag);
        /* A random moment while passes are being made: once the store holds
         * a random count between the k-th and (k+1)-th sixth of n. */
        size_t target = (size_t)n * (k + 1) / (KILLS + 1) + (size_t)(rand() % (n / (KILLS + 1)));
        for (;;) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                char *err = run_output(&t, tag, "err");
                cr_assert_fail("run %d ended before the kill (status %d): %s", k, st, err);
            }
            if (count_passes(&t) >= target)
                break;
            sleep_ms(5);
        }
        cr_assert_eq(kill(pid, SIGKILL), 0);
        cr_assert_eq(run_wait(pid), 128 + SIGKILL);
        int64_t committed = assert_committed_offsets_recorded(&t, &kill_reg);
        cr_log_info("killed run %d at %zu stored passes; %lld offsets committed, each with its row", k,
                    count_passes(&t), (long long)committed);
    }
    pid_t pid = run_start(&t, "run.conf", "final");
    int status = run_wait(pid);
    char *out = run_output(&t, "final", "out"), *err = run_output(&t, "final", "err");
    long in, passes, unchanged, rejects;
    cr_assert_eq(sscanf(out, "in=%ld passes=%ld unchanged=%ld rejects=%ld", &in, &passes, &unchanged, &rejects),
                 4, "out: %s err: %s", out, err);
    cr_assert_eq(status, 0, "%s", err);
    cr_assert_eq(rejects, 0);
    cr_assert_eq(in, passes + unchanged, "%s", out);
    free(out);
    free(err);
    assert_committed_at_end(&t);
    cr_assert_eq(assert_committed_offsets_recorded(&t, &kill_reg), n);
    char store[1100], count[32];
    snprintf(store, sizeof store, "%s/store", t.work);
    snprintf(count, sizeof count, "--count %d", n);
    cr_assert_eq(pmt_registry_check(&out, kill_reg.where, store, count), 0,
                 "registry rows and store objects disagree: %s", out);
    free(out);

    /* Resume is "run it again": a new group reads the topic from the start. */
    char again[sizeof t.group];
    snprintf(again, sizeof again, "%.50s-again", t.group);
    memcpy(t.group, again, sizeof t.group);
    write_conf(&t, "again.conf", "avro", extra);
    pid = run_start(&t, "again.conf", "again");
    status = run_wait(pid);
    out = run_output(&t, "again", "out");
    char want[128];
    snprintf(want, sizeof want, "in=%d passes=0 unchanged=%d rejects=0", n, n);
    cr_assert_eq(status, 0);
    cr_assert(strncmp(out, want, strlen(want)) == 0, "%s, expected %s", out, want);
    free(out);
    kreg_drop(&kill_reg);
    kt_teardown(&t);
}

Test(kafka, kill_9_with_a_registry_every_committed_offset_has_its_row, .timeout = 600)
{
    kill_9_with_a_registry(false);
}

Test(kafka_pg, kill_9_with_a_registry_every_committed_offset_has_its_row, .timeout = 600,
     .fini = drop_kill_schema)
{
    kill_9_with_a_registry(true);
}

Test(kafka, broker_faults_mid_run_lose_nothing, .timeout = 240)
{
    enum { N = 4000 };
    kt t;
    kt_setup(&t, "kafka-faults", N);
    /* A small prefetch, so the consumer keeps fetching through the faults. */
    write_conf(&t, "run.conf", "avro", "kafka.queued.max.messages.kbytes = 256\n");
    produce_file(&t, "requests.avro", "avro", N);
    rd_kafka_mock_cluster_t *mock = pm_devbroker_mock(t.broker);

    pid_t pid = run_start(&t, "run.conf", "run");
    while (count_passes(&t) < N / 8) {
        int st;
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "the run ended early: %s",
                     run_output(&t, "run", "err"));
        sleep_ms(5);
    }
    /* Produce (0) and OffsetCommit (8) requests fail for a while. */
    rd_kafka_mock_push_request_errors(mock, 0, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                      RD_KAFKA_RESP_ERR__TRANSPORT);
    rd_kafka_mock_push_request_errors(mock, 8, 3, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                                      RD_KAFKA_RESP_ERR__TRANSPORT);
    while (count_passes(&t) < N / 4)
        sleep_ms(5);
    /* Leaders move. */
    for (int p = 0; p < PARTITIONS; p++) {
        rd_kafka_mock_partition_set_leader(mock, REQUESTS, p, 1 + (p + 1) % 3);
        rd_kafka_mock_partition_set_leader(mock, RESULTS, p, 1 + (p + 2) % 3);
    }
    sleep_ms(300);
    /* Every broker down, then back. */
    rd_kafka_mock_broker_set_down(mock, -1);
    size_t before = count_passes(&t);
    sleep_ms(2000);
    cr_log_info("broker down from %zu passes in the store", before);
    rd_kafka_mock_broker_set_up(mock, -1);
    int st;
    cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "the faults hit a running consumer");

    int status = run_wait(pid);
    char *out = run_output(&t, "run", "out"), *err = run_output(&t, "run", "err");
    long in, passes, rejects;
    cr_assert_eq(parse_summary(out, &in, &passes, &rejects), 0, "out: %s err: %s", out, err);
    cr_assert_eq(status, 0, "%s", err);
    cr_assert_geq(in, N);
    cr_assert_eq(passes, in);
    cr_assert_eq(rejects, 0);
    cr_log_info("faults run: %s%s", out, err);
    free(out);
    free(err);

    assert_store_complete_and_verified(&t);
    assert_committed_at_end(&t);
    kmsgs results = read_topic(&t, RESULTS);
    size_t rejected;
    cr_assert_geq(assert_results_cover_serials(&t, &results, &rejected), (size_t)N);
    kmsgs_free(&results);
    kt_teardown(&t);
}

/*
 * The broker gone for good: --exit-on-eof ends the run within the bound
 * (kafka.shutdown_timeout_ms, 6 s here), exit 3, and a result that never
 * reached the broker is counted failed, not as a pass.
 */
Test(kafka, broker_gone_for_good_ends_the_run_in_bounded_time, .timeout = 240)
{
    enum { N = 3000 };
    kt t;
    kt_setup(&t, "kafka-gone", N);
    /* A small prefetch: records are still unread when the broker goes. */
    write_conf(&t, "run.conf", "avro",
               "kafka.shutdown_timeout_ms = 6000\nkafka.queued.max.messages.kbytes = 64\n");
    produce_file(&t, "requests.avro", "avro", N);
    rd_kafka_mock_cluster_t *mock = pm_devbroker_mock(t.broker);
    pid_t pid = run_start(&t, "run.conf", "run");
    while (count_passes(&t) < N / 4) {
        int st;
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "the run ended early: %s",
                     run_output(&t, "run", "err"));
        sleep_ms(5);
    }
    rd_kafka_mock_broker_set_down(mock, -1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int status = run_wait(pid);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    char *out = run_output(&t, "run", "out"), *err = run_output(&t, "run", "err");
    cr_log_info("broker gone: exited %d after %.1f s: %s", status, secs, out);
    /* The bound is 6 s (kafka.shutdown_timeout_ms) plus librdkafka noticing
     * that every broker is down and the exit itself: 6.7 s on a quiet
     * machine, 12.1 s with the test suites of another checkout running
     * beside it.  Before the bound it was message.timeout.ms, 5 minutes. */
    cr_assert_lt(secs, 20.0, "the run took %.1f s to stop with the broker gone: %s", secs, err);
    cr_assert_eq(status, 3, "%s %s", out, err);
    long in, passes, rejects, failed = 0;
    cr_assert_eq(parse_summary(out, &in, &passes, &rejects), 0, "out: %s err: %s", out, err);
    const char *f = strstr(out, "failed=");
    cr_assert_not_null(f, "undelivered results must show as failed: %s", out);
    failed = atol(f + 7);
    cr_assert_eq(in, passes + rejects + failed, "%s", out);
    cr_assert_gt(failed, 0, "%s", out);
    cr_assert(strstr(err, "no broker reachable"), "%s", err);
    cr_assert(strstr(err, "were not delivered"), "%s", err);
    free(out);
    free(err);

    /* Back up: every pass counted is in the results topic. */
    rd_kafka_mock_broker_set_up(mock, -1);
    kmsgs results = read_topic(&t, RESULTS);
    json_t *delivered = json_object();
    for (size_t i = 0; i < results.n; i++)
        if (results.v[i].key)
            json_object_set_new(delivered, results.v[i].key, json_true());
    cr_assert_geq(json_object_size(delivered), (size_t)passes,
                  "%zu results delivered but %ld passes counted", json_object_size(delivered), passes);
    cr_assert_leq(committed_total(&t), passes + rejects);
    json_decref(delivered);
    kmsgs_free(&results);
    kt_teardown(&t);
}

Test(kafka, second_consumer_joining_mid_run_loses_nothing, .timeout = 240)
{
    enum { N = 5000 };
    kt t;
    kt_setup(&t, "kafka-rebalance", N);
    /* One worker each, so the first member is still busy when the second
     * has joined (a join takes seconds on the mock broker). */
    write_conf(&t, "run.conf", "avro", "engine.workers = 1\n");
    produce_file(&t, "requests.avro", "avro", N);
    pid_t a = run_start(&t, "run.conf", "a");
    while (count_passes(&t) < N / 8) {
        int st;
        cr_assert_eq(waitpid(a, &st, WNOHANG), 0, "a ended early");
        sleep_ms(5);
    }
    pid_t b = run_start(&t, "run.conf", "b");
    int sa = run_wait(a), sb = run_wait(b);
    char *oa = run_output(&t, "a", "out"), *ob = run_output(&t, "b", "out");
    char *ea = run_output(&t, "a", "err"), *eb = run_output(&t, "b", "err");
    long ina, pa, ra, inb, pb, rb;
    cr_assert_eq(parse_summary(oa, &ina, &pa, &ra), 0, "a: %s %s", oa, ea);
    cr_assert_eq(parse_summary(ob, &inb, &pb, &rb), 0, "b: %s %s", ob, eb);
    cr_assert_eq(sa, 0, "%s", ea);
    cr_assert_eq(sb, 0, "%s", eb);
    cr_log_info("consumer a: in=%ld, consumer b: in=%ld\n--- a:\n%s--- b:\n%s", ina, inb, ea, eb);
    cr_assert_gt(ina, 0);
    cr_assert_gt(inb, 0, "the second member got partitions");
    cr_assert_geq(ina + inb, N);
    cr_assert_eq(pa + pb, ina + inb);
    free(oa);
    free(ob);
    free(ea);
    free(eb);
    assert_store_complete_and_verified(&t);
    assert_committed_at_end(&t);
    kt_teardown(&t);
}

/* The source alone: commits stop at a record that was not durable, and a
 * restart of the group re-delivers from exactly there.  Pausing under
 * sustained backpressure and resuming loses nothing. */
Test(kafka, source_commits_only_the_durable_prefix, .timeout = 120)
{
    enum { N = 10 };
    kt t;
    memset(&t, 0, sizeof t);
    t.work = pmt_tmpdir("kafka-source");
    pm_error err;
    cr_assert_eq(pm_devbroker_create(1, &t.broker, &err), 0);
    cr_assert_eq(pm_devbroker_create_topic(t.broker, REQUESTS, 1, &err), 0);
    t.bootstrap = pm_devbroker_bootstrap(t.broker);
    snprintf(t.group, sizeof t.group, "source-unit");
    const char *keys[N];
    pm_buf values[N];
    for (int i = 0; i < N; i++) {
        keys[i] = "k";
        pm_buf_init(&values[i]);
        pm_buf_printf(&values[i], "{\"n\": %d}", i);
    }
    produce_raw(&t, keys, values, N, 1);

    pm_config *cfg = pm_config_create();
    const char *pairs[] = {"kafka.group_id=source-unit", "kafka.topic.requests=" REQUESTS,
                           "kafka.value_format=json", "kafka.exit_on_eof=true",
                           "kafka.session.timeout.ms=6000", "kafka.fetch.wait.max.ms=10"};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        cr_assert_eq(pm_config_set_pair(cfg, pairs[i], &err), 0, "%s", err.message);
    cr_assert_eq(pm_config_set(cfg, "kafka.brokers", t.bootstrap, &err), 0);

    pm_source *s;
    cr_assert_eq(pm_source_kafka_open(cfg, &s, &err), 0, "%s", err.message);
    pm_job jobs[N];
    for (int i = 0; i < N; i++) {
        pm_job_init(&jobs[i]);
        if (i == 4) { /* sustained backpressure: partitions get paused, then resumed */
            s->ops->backpressure(s, true);
            sleep_ms(5500);
            s->ops->backpressure(s, false);
        }
        cr_assert_eq(s->ops->next(s, &jobs[i], &err), 1, "%s", err.message);
        cr_assert_eq(jobs[i].format, PM_INPUT_JSON);
        cr_assert_eq(jobs[i].origin.offset, i);
        cr_assert_eq(jobs[i].origin.partition, 0);
        cr_assert_str_eq(jobs[i].origin.source, REQUESTS);
        cr_assert_str_eq(pm_buf_cstr(&jobs[i].raw), pm_buf_cstr(&values[i]));
    }
    /* Out of order; offset 3 fails. */
    int order[N] = {5, 6, 1, 2, 0, 9, 3, 4, 8, 7};
    for (int i = 0; i < N; i++)
        s->ops->done(s, &jobs[order[i]].origin, jobs[order[i]].source_ref, order[i] != 3);
    pm_job extra;
    pm_job_init(&extra);
    cr_assert_eq(s->ops->next(s, &extra, &err), -1);
    cr_assert(strstr(err.message, REQUESTS "[0]@3"), "%s", err.message);
    s->ops->close(s);

    /* The group resumes at offset 3: the failed record and everything after. */
    rd_kafka_t *rk = plain_consumer(&t, "source-unit", false);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, REQUESTS, 0);
    cr_assert_eq(rd_kafka_committed(rk, parts, 20000), 0);
    cr_assert_eq(parts->elems[0].offset, 3);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);

    cr_assert_eq(pm_source_kafka_open(cfg, &s, &err), 0, "%s", err.message);
    int n = 0;
    int rc;
    while ((rc = s->ops->next(s, &extra, &err)) == 1) {
        cr_assert_eq(extra.origin.offset, 3 + n);
        s->ops->done(s, &extra.origin, extra.source_ref, true);
        pm_job_reset(&extra);
        n++;
    }
    cr_assert_eq(rc, 0, "%s", err.message);
    cr_assert_eq(n, N - 3);
    s->ops->close(s);

    pm_job_free(&extra);
    for (int i = 0; i < N; i++) {
        pm_job_free(&jobs[i]);
        pm_buf_free(&values[i]);
    }
    pm_config_destroy(cfg);
    pm_devbroker_destroy(t.broker);
    pmt_rmrf(t.work);
    free(t.work);
}

/* done() from several threads at once, out of order, while next() and
 * backpressure() run on this thread: every offset is committed at the end. */
typedef struct done_queue {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pm_job *jobs;
    size_t head, tail, cap;
    bool closed;
    pm_source *source;
} done_queue;

static void *done_worker(void *arg)
{
    done_queue *q = arg;
    unsigned seed = (unsigned)(uintptr_t)&seed;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->head == q->tail && !q->closed)
            pthread_cond_wait(&q->cond, &q->mu);
        if (q->head == q->tail) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        pm_job *job = &q->jobs[q->head++ % q->cap];
        pm_origin origin = job->origin;
        void *ref = job->source_ref;
        pthread_mutex_unlock(&q->mu);
        if (rand_r(&seed) % 4 == 0)
            sleep_ms(1);
        q->source->ops->done(q->source, &origin, ref, true);
    }
}

Test(kafka, source_done_from_many_threads, .timeout = 120)
{
    enum { N = 2000, THREADS = 4 };
    kt t;
    memset(&t, 0, sizeof t);
    pm_error err;
    cr_assert_eq(pm_devbroker_create(1, &t.broker, &err), 0);
    cr_assert_eq(pm_devbroker_create_topic(t.broker, REQUESTS, PARTITIONS, &err), 0);
    t.bootstrap = pm_devbroker_bootstrap(t.broker);
    snprintf(t.group, sizeof t.group, "source-threads");
    static const char *keys[N];
    static pm_buf values[N];
    for (int i = 0; i < N; i++) {
        keys[i] = "k";
        pm_buf_init(&values[i]);
        pm_buf_printf(&values[i], "{\"n\": %d}", i);
    }
    produce_raw(&t, keys, values, N, PARTITIONS);

    pm_config *cfg = pm_config_create();
    const char *pairs[] = {"kafka.group_id=source-threads", "kafka.topic.requests=" REQUESTS,
                           "kafka.value_format=json", "kafka.exit_on_eof=true",
                           "kafka.session.timeout.ms=6000", "kafka.fetch.wait.max.ms=10",
                           "kafka.auto.commit.interval.ms=50"};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        cr_assert_eq(pm_config_set_pair(cfg, pairs[i], &err), 0, "%s", err.message);
    cr_assert_eq(pm_config_set(cfg, "kafka.brokers", t.bootstrap, &err), 0);
    pm_source *s;
    cr_assert_eq(pm_source_kafka_open(cfg, &s, &err), 0, "%s", err.message);

    done_queue q = {.cap = N, .source = s};
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.cond, NULL);
    q.jobs = calloc(N, sizeof *q.jobs);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, done_worker, &q);
    int rc, n = 0;
    pm_job job;
    pm_job_init(&job);
    while ((rc = s->ops->next(s, &job, &err)) == 1) {
        pthread_mutex_lock(&q.mu);
        q.jobs[q.tail++ % q.cap] = job; /* shallow copy: origin and source_ref */
        pthread_cond_signal(&q.cond);
        pthread_mutex_unlock(&q.mu);
        pm_job_init(&job);
        if (++n % 100 == 0) {
            s->ops->backpressure(s, true);
            s->ops->backpressure(s, false);
        }
    }
    cr_assert_eq(rc, 0, "%s", err.message);
    cr_assert_eq(n, N);
    pthread_mutex_lock(&q.mu);
    q.closed = true;
    pthread_cond_broadcast(&q.cond);
    pthread_mutex_unlock(&q.mu);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    s->ops->close(s);
    for (int i = 0; i < N; i++)
        pm_job_free(&q.jobs[i]);
    free(q.jobs);
    pthread_mutex_destroy(&q.mu);
    pthread_cond_destroy(&q.cond);
    assert_committed_at_end(&t);
    for (int i = 0; i < N; i++)
        pm_buf_free(&values[i]);
    pm_config_destroy(cfg);
    pm_devbroker_destroy(t.broker);
}

/* ---- issue 14: bad input and rough edges ---- */

/* A record that fails decoding keeps the serial its JSON names, on Kafka as in the
 * rejects file; an Avro value read as JSON says so. */
Test(kafka, undecodable_values_keep_their_serial_and_avro_read_as_json_is_named, .timeout = 120)
{
    enum { N = 4 };
    kt t;
    kt_setup(&t, "kafka-rough", N);
    write_conf(&t, "run.conf", "json", NULL);
    produce_file(&t, "requests.jsonl", "json", N);
    const char *keys[2] = {"k-schema", "k-avro"};
    pm_buf values[2] = {PM_BUF_INIT, PM_BUF_INIT};
    pm_buf_append_str(&values[0], "{\"serial_number\": \"S-READABLE-1\"}"); /* schema.missing */
    pm_buf_append(&values[1], "\x00\x00\x00\x00\x01\x0cS-AVRO", 12);
    produce_raw(&t, keys, values, 2, PARTITIONS);

    int status = run_wait(run_start(&t, "run.conf", "run"));
    char *out = run_output(&t, "run", "out");
    cr_assert_eq(status, 1);
    cr_assert_str_eq(out, "in=6 passes=4 unchanged=0 rejects=2\n");
    free(out);

    kmsgs results = read_topic(&t, RESULTS), dlq = read_topic(&t, REJECTS);
    int seen = 0;
    for (size_t i = 0; i < results.n; i++) {
        json_t *r = json_loadb((const char *)results.v[i].value.data, results.v[i].value.len, 0, NULL);
        cr_assert_not_null(r);
        const char *code = json_string_value(json_object_get(r, "code"));
        if (code && strcmp(code, "schema.missing") == 0) {
            cr_assert_str_eq(json_string_value(json_object_get(r, "serial")), "S-READABLE-1");
            cr_assert_str_eq(results.v[i].key, "S-READABLE-1");
            seen |= 1;
        } else if (code && strcmp(code, "json.syntax") == 0) {
            cr_assert(json_is_null(json_object_get(r, "serial")));
            cr_assert_null(results.v[i].key);
            const char *reason = json_string_value(json_object_get(r, "reason"));
            cr_assert(strstr(reason, "Confluent-framed Avro") &&
                      strstr(reason, "kafka.value_format = avro"), "%s", reason);
            seen |= 2;
        }
        json_decref(r);
    }
    cr_assert_eq(seen, 3, "both rejects on the results topic");
    cr_assert_eq(dlq.n, 2);
    for (size_t i = 0; i < dlq.n; i++)
        if (dlq.v[i].value.len && dlq.v[i].value.data[0] == '{')
            cr_assert_str_eq(dlq.v[i].key, "S-READABLE-1", "the dead letter is keyed too");
    /* The rejects file reports the same serial. */
    cr_assert_eq(pmt_sh("grep -c '\"serial\":\"S-READABLE-1\"' '%s/rejects.jsonl' | grep -qx 1",
                        t.work), 0);
    kmsgs_free(&results);
    kmsgs_free(&dlq);
    pm_buf_free(&values[0]);
    pm_buf_free(&values[1]);
    kt_teardown(&t);
}

/* `passmill produce` to a broker that is not there retried for minutes. */
Test(kafka, produce_gives_up_on_an_unreachable_broker, .timeout = 60)
{
    char *work = pmt_tmpdir("kafka-unreachable");
    cr_assert_eq(pmt_sh("'%s' sample --count 3 --seed 1 > '%s/in.jsonl'", pmt_passmill(), work), 0);
    int status;
    time_t t0 = time(NULL);
    char *out = pmt_sh_out(&status, "'%s' produce -b 127.0.0.1:1 -t t --timeout 2 '%s/in.jsonl' "
                           "2>'%s/err'", pmt_passmill(), work, work);
    time_t took = time(NULL) - t0;
    char path[1024];
    snprintf(path, sizeof path, "%s/err", work);
    char *err = pmt_read_file(path, NULL);
    cr_assert_eq(status, 3, "%s%s", out, err);
    cr_assert_str_eq(out, "acknowledged=0 failed=3\n");
    cr_assert_leq(took, 12, "gave up after %lld s", (long long)took);
    cr_assert(strstr(err, "no broker at 127.0.0.1:1 acknowledged any message within 2 s") &&
              strstr(err, "Connection refused"), "%s", err);
    free(out);
    free(err);
    out = pmt_sh_out(&status, "'%s' produce --help", pmt_passmill());
    cr_assert(strstr(out, "--timeout S") && strstr(out, "default 30"), "%s", out);
    free(out);
    pmt_rmrf(work);
    free(work);
}

/* Kafka credentials came only from -X, i.e. argv. */
Test(kafka, secrets_come_from_the_environment_or_a_file)
{
    char *work = pmt_tmpdir("kafka-secrets");
    char file[1024];
    snprintf(file, sizeof file, "%s/pw", work);
    cr_assert_eq(pmt_write_file(file, "from-file\n", 10), 0);
    setenv("PM_TEST_KAFKA_PW", "from-env", 1);
    struct { pm_kv kv; const char *prop, *want, *error; } cases[] = {
        {{"sasl.password_env", "PM_TEST_KAFKA_PW"}, "sasl.password", "from-env", NULL},
        {{"ssl.key.password_file", file}, "ssl.key.password", "from-file", NULL},
        {{"sasl.password", "literal"}, NULL, NULL, "sasl.password_env = VARIABLE"},
        {{"sasl.password_env", "PM_TEST_NO_SUCH_VAR"}, NULL, NULL, "PM_TEST_NO_SUCH_VAR, which is not set"},
        {{"sasl.password_file", "/nonexistent/pw"}, NULL, NULL, "cannot open '/nonexistent/pw'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pm_error err;
        pm_error_clear(&err);
        rd_kafka_conf_t *conf = pm_kafka_conf_new(NULL, "127.0.0.1:1", &cases[i].kv, 1, NULL, &err);
        if (cases[i].error) {
            cr_assert_null(conf, "case %zu accepted", i);
            cr_assert(strstr(err.message, cases[i].error), "case %zu: %s", i, err.message);
            cr_assert_null(strstr(err.message, "literal"), "the value is echoed: %s", err.message);
            continue;
        }
        cr_assert_not_null(conf, "case %zu: %s", i, err.message);
        char value[64];
        size_t len = sizeof value;
        cr_assert_eq(rd_kafka_conf_get(conf, cases[i].prop, value, &len), RD_KAFKA_CONF_OK);
        cr_assert_str_eq(value, cases[i].want);
        rd_kafka_conf_destroy(conf);
    }
    /* The config refuses the secret itself, file or -X alike. */
    pm_config *cfg = pm_config_create();
    pm_error err;
    cr_assert_eq(pm_config_set_pair(cfg, "kafka.sasl.password=x", &err), -1);
    cr_assert(strstr(err.message, "kafka.sasl.password_file = PATH"), "%s", err.message);
    cr_assert_eq(pm_config_set_pair(cfg, "kafka.sasl.password_env=PM_TEST_KAFKA_PW", &err), 0);
    pm_config_destroy(cfg);
    unsetenv("PM_TEST_KAFKA_PW");
    pmt_rmrf(work);
    free(work);
}
