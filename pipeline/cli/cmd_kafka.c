/*
 * cmd_kafka.c - `passmill devbroker` and `passmill produce`.
 *
 * devbroker: an embedded Kafka-protocol broker (pipeline/kafka/devbroker.h) for
 * demos and tests, until SIGTERM/SIGINT.
 * produce: load pass requests from a JSON Lines or Avro container file into
 * a topic, as JSON or in the Confluent wire format, with an idempotent
 * producer; prints how many the broker acknowledged.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <avro.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "cli/commands.h"
#include "core/config.h"
#include "kafka/devbroker.h"
#include "kafka/kafka_conf.h"
#include "record/schema.h"
#include "sources/source.h"

static int parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* ---- devbroker ---- */

static void devbroker_usage(FILE *out)
{
    fprintf(out,
            "usage: passmill devbroker [--partitions N] [--topics a,b,c] [--brokers N]\n"
            "                          [--bootstrap-file F]\n\n"
            "Runs a local Kafka-protocol broker cluster (librdkafka's mock cluster) on\n"
            "127.0.0.1 ephemeral ports until SIGTERM or SIGINT.  It creates the topics,\n"
            "then prints its bootstrap address (host:port,...) on standard output and\n"
            "writes it to F atomically (removed again on exit).  For demos and tests only:\n"
            "data is kept in memory and a partition keeps only about its newest 5 MB, so\n"
            "use several partitions and compression; transactions are not supported.\n\n"
            "options:\n"
            "  -p, --partitions N      partitions per topic (default 4)\n"
            "  -t, --topics LIST       topics to create (default pass-requests,pass-results,\n"
            "                          pass-rejects)\n"
            "      --brokers N         brokers in the cluster (default 3, 1..16)\n"
            "  -f, --bootstrap-file F  write the bootstrap address to F\n"
            "  -h, --help              show this help\n\n"
            "exit status: 0 stopped by a signal, 2 usage error, 3 could not start.\n");
}

int cmd_devbroker(int argc, char **argv)
{
    enum { OPT_BROKERS = 256 };
    static const struct option opts[] = {
        {"partitions", required_argument, NULL, 'p'}, {"topics", required_argument, NULL, 't'},
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"bootstrap-file", required_argument, NULL, 'f'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long partitions = 4, brokers = 3;
    const char *topics = "pass-requests,pass-results,pass-rejects", *file = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:t:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (parse_int(optarg, 1, 1024, &partitions) != 0) {
                fprintf(stderr, "passmill devbroker: --partitions expects 1..1024, found '%s'\n", optarg);
                return PM_EXIT_USAGE;
            }
            break;
        case OPT_BROKERS:
            if (parse_int(optarg, 1, 16, &brokers) != 0) {
                fprintf(stderr, "passmill devbroker: --brokers expects 1..16, found '%s'\n", optarg);
                return PM_EXIT_USAGE;
            }
            break;
        case 't': topics = optarg; break;
        case 'f': file = optarg; break;
        case 'h': devbroker_usage(stdout); return PM_EXIT_OK;
        default: devbroker_usage(stderr); return PM_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "passmill devbroker: unexpected argument '%s'\n", argv[optind]);
        return PM_EXIT_USAGE;
    }

    /* Block the stop signals before librdkafka starts its threads, so they
     * all inherit the mask and sigwait() below receives them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    pm_error err;
    pm_error_clear(&err);
    pm_devbroker *b = NULL;
    if (pm_devbroker_create((int)brokers, &b, &err) != 0 ||
        pm_devbroker_create_topics(b, topics, (int)partitions, &err) != 0) {
        fprintf(stderr, "passmill devbroker: %s\n", err.message);
        pm_devbroker_destroy(b);
        return err.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
    }
    const char *bootstrap = pm_devbroker_bootstrap(b);
    if (file) {
        char *line = NULL;
        if (asprintf(&line, "%s\n", bootstrap) < 0 || pm_write_file_atomic(file, line, &err) != 0) {
            fprintf(stderr, "passmill devbroker: %s\n", line ? err.message : "out of memory");
            free(line);
            pm_devbroker_destroy(b);
            return PM_EXIT_FAILURE;
        }
        free(line);
    }
    printf("%s\n", bootstrap);
    fflush(stdout);
    fprintf(stderr, "passmill devbroker: %ld broker(s) on %s, topics %s with %ld partition(s)\n",
            brokers, bootstrap, topics, partitions);
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "passmill devbroker: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    if (file)
        unlink(file);
    pm_devbroker_destroy(b);
    return PM_EXIT_OK;
}

/* ---- produce ---- */

static void produce_usage(FILE *out)
{
    fprintf(out,
            "usage: passmill produce -b BROKERS -t TOPIC [--format avro|json] [--schema-id N]\n"
            "                        [-X property=value ...] [FILE]\n\n"
            "Loads pass requests from FILE (JSON Lines or an Avro Object Container File,\n"
            "e.g. from `passmill sample`; standard input when absent or -) into TOPIC, one\n"
            "message per record, key = serial_number, with an idempotent producer (zstd).\n"
            "Prints `acknowledged=N failed=M` once every message is acknowledged or failed.\n\n"
            "options:\n"
            "  -b, --brokers LIST    bootstrap servers host:port[,host:port...]\n"
            "  -t, --topic TOPIC     destination topic\n"
            "      --format F        avro: Confluent wire format (magic 0, 4-byte big-endian\n"
            "                        schema id, Avro binary datum; default); json: the JSON\n"
            "                        object (a JSON Lines line is sent unchanged)\n"
            "      --schema-id N     schema id in the avro frame (default 1)\n"
            "      --timeout S       give up on a message no broker acknowledged within S\n"
            "                        seconds (default 30; sets message.timeout.ms)\n"
            "  -X property=value     any librdkafka producer property (repeatable); secrets\n"
            "                        such as sasl.password only as sasl.password_env=VAR\n"
            "                        or sasl.password_file=PATH\n"
            "  -h, --help            show this help\n\n"
            "A JSON line that is not a valid pass request cannot be framed as Avro and\n"
            "counts as failed; with --format json it is sent as it is (no key).\n"
            "exit status: 0 all acknowledged, 2 usage error, 3 something failed.\n");
}

typedef struct producer {
    rd_kafka_t *rk;
    rd_kafka_topic_t *topic;
    bool avro;
    uint32_t schema_id;
    avro_value_iface_t *iface;
    avro_value_t value;          /* reused for JSON -> Avro */
    pm_buf out;                  /* the message value being built */
    uint64_t acked, failed, unconvertible;
    char first_failure[256];
    char broker_error[256];      /* the last client-level error (broker unreachable...) */
} producer;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    producer *p = opaque;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        p->acked++;
        return;
    }
    if (p->failed++ == 0)
        snprintf(p->first_failure, sizeof p->first_failure, "%s", rd_kafka_err2str(m->err));
}

/* Kept for the final message: why nothing was acknowledged. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)err;
    producer *p = opaque;
    snprintf(p->broker_error, sizeof p->broker_error, "%s", reason);
}

/* The frame header: magic byte 0 and the schema id, big-endian. */
static int frame_header(producer *p)
{
    uint8_t h[5] = {0, (uint8_t)(p->schema_id >> 24), (uint8_t)(p->schema_id >> 16),
                    (uint8_t)(p->schema_id >> 8), (uint8_t)p->schema_id};
    pm_buf_reset(&p->out);
    return pm_buf_append(&p->out, h, sizeof h);
}

/* A normalized or raw JSON record -> Avro datum appended to p->out. */
static int append_avro_of_json(producer *p, json_t *record, pm_error *err)
{
    if (pm_schema_json_to_avro(record, &p->value, err) != 0)
        return -1;
    size_t size = 0;
    if (avro_value_sizeof(&p->value, &size) != 0 || pm_buf_reserve(&p->out, size) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "avro: cannot size the datum: %s", avro_strerror());
    avro_writer_t w = avro_writer_memory((char *)p->out.data + p->out.len, (int64_t)size);
    int rc = w ? avro_value_write(w, &p->value) : -1;
    if (w)
        avro_writer_free(w);
    if (rc != 0)
        return pm_error_set(err, PM_ERR_INTERNAL, "avro: cannot write the datum: %s", avro_strerror());
    p->out.len += size;
    return 0;
}

static const char *serial_of(json_t *record)
{
    json_t *s = json_is_object(record) ? json_object_get(record, "serial_number") : NULL;
    return json_is_string(s) ? json_string_value(s) : NULL;
}

/*
 * One input record -> the message value in p->out and its key (a string
 * inside *tree, which the caller frees).  A reject-level problem returns -1.
 */
static int convert(producer *p, const pm_job *job, json_t **tree, const char **key, pm_error *err)
{
    *tree = NULL;
    *key = NULL;
    if (job->format == PM_INPUT_AVRO) {
        size_t used = 0;
        if (pm_schema_avro_decode(job->raw.data, job->raw.len, &used, tree, err) != 0)
            return -1;
        *key = serial_of(*tree);
        if (p->avro) {
            if (frame_header(p) != 0 || pm_buf_append(&p->out, job->raw.data, job->raw.len) != 0)
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            return 0;
        }
        char *text = json_dumps(*tree, JSON_COMPACT | JSON_PRESERVE_ORDER);
        pm_buf_reset(&p->out);
        int rc = text ? pm_buf_append_str(&p->out, text) : -1;
        free(text);
        return rc == 0 ? 0 : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    /* JSON Lines */
    *tree = json_loadb((const char *)job->raw.data, job->raw.len, 0, NULL);
    *key = serial_of(*tree);
    if (!p->avro) {
        pm_buf_reset(&p->out);
        return pm_buf_append(&p->out, job->raw.data, job->raw.len) == 0
                   ? 0 : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    if (!*tree)
        return pm_reject(err, "json.syntax", "", "expected a JSON object");
    if (frame_header(p) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    return append_avro_of_json(p, *tree, err);
}

static int send_one(producer *p, const char *key, pm_error *err)
{
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            p->rk, RD_KAFKA_V_RKT(p->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE(p->out.data, p->out.len),
            RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_poll(p->rk, 0);
            return 0;
        }
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return pm_error_set(err, PM_ERR_IO, "producing to %s: %s",
                                rd_kafka_topic_name(p->topic), rd_kafka_err2str(e));
        rd_kafka_poll(p->rk, 10); /* serve delivery reports until there is room */
    }
}

static int produce_all(producer *p, pm_source *src, pm_error *err)
{
    pm_job job;
    pm_job_init(&job);
    int rc = 0;
    for (;;) {
        pm_job_reset(&job);
        int n = src->ops->next(src, &job, err);
        if (n <= 0) {
            rc = n;
            break;
        }
        json_t *tree;
        const char *key;
        pm_error cerr;
        pm_error_clear(&cerr);
        if (convert(p, &job, &tree, &key, &cerr) != 0) {
            char where[320];
            pm_origin_format(&job.origin, where, sizeof where);
            fprintf(stderr, "passmill produce: %s: not sent: %s%s%s\n", where, cerr.message,
                    cerr.field[0] ? " at " : "", cerr.field);
            json_decref(tree);
            p->unconvertible++;
            if (cerr.code != PM_ERR_REJECT) {
                *err = cerr;
                rc = -1;
                break;
            }
            continue;
        }
        rc = send_one(p, key, err);
        json_decref(tree);
        if (rc != 0)
            break;
    }
    pm_job_free(&job);
    return rc;
}

static int producer_open(producer *p, const char *brokers, const char *topic,
                         const pm_kv *props, size_t n_props, long timeout_s, pm_error *err)
{
    static const char *const defaults[] = {
        "client.id", "passmill-produce",
        "compression.type", "zstd",
        "linger.ms", "20",
        NULL,
    };
    /* librdkafka retries an unreachable broker for 5 minutes by default. */
    char timeout_ms[24];
    snprintf(timeout_ms, sizeof timeout_ms, "%ld", timeout_s * 1000);
    const char *const forced[] = {
        "enable.idempotence", "true",
        "acks", "all",
        "message.timeout.ms", timeout_ms,
        NULL,
    };
    rd_kafka_conf_t *conf = pm_kafka_conf_new(defaults, brokers, props, n_props, forced, err);
    if (!conf)
        return -1;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    char errstr[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        return pm_error_set(err, PM_ERR_CONFIG, "kafka producer: %s", errstr);
    }
    p->topic = rd_kafka_topic_new(p->rk, topic, NULL);
    if (!p->topic)
        return pm_error_set(err, PM_ERR_CONFIG, "topic '%s': %s", topic,
                            rd_kafka_err2str(rd_kafka_last_error()));
    if (p->avro) {
        p->iface = avro_generic_class_from_schema(pm_schema_pass_request());
        if (!p->iface || avro_generic_value_new(p->iface, &p->value) != 0)
            return pm_error_set(err, PM_ERR_INTERNAL, "avro: %s", avro_strerror());
    }
    return 0;
}

static void producer_close(producer *p)
{
    if (p->iface) {
        avro_value_decref(&p->value);
        avro_value_iface_decref(p->iface);
    }
    if (p->topic)
        rd_kafka_topic_destroy(p->topic);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    pm_buf_free(&p->out);
}

/* -X property=value into a kv list (pointers into argv, not copied). */
static int add_prop(pm_kv *props, size_t *n, char *arg)
{
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return -1;
    *eq = '\0';
    props[*n].key = arg;
    props[*n].value = eq + 1;
    (*n)++;
    return 0;
}

int cmd_produce(int argc, char **argv)
{
    enum { OPT_FORMAT = 256, OPT_SCHEMA_ID, OPT_TIMEOUT };
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'}, {"topic", required_argument, NULL, 't'},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"schema-id", required_argument, NULL, OPT_SCHEMA_ID},
        {"timeout", required_argument, NULL, OPT_TIMEOUT}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *brokers = NULL, *topic = NULL, *format = "avro";
    long schema_id = 1, timeout_s = 30;
    pm_kv *props = calloc((size_t)argc + 1, sizeof *props);
    size_t n_props = 0;
    if (!props)
        return PM_EXIT_FAILURE;
    int c, status = PM_EXIT_USAGE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "b:t:X:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b': brokers = optarg; break;
        case 't': topic = optarg; break;
        case OPT_FORMAT: format = optarg; break;
        case OPT_SCHEMA_ID:
            if (parse_int(optarg, 0, INT32_MAX, &schema_id) != 0) {
                fprintf(stderr, "passmill produce: --schema-id expects 0..%d, found '%s'\n",
                        INT32_MAX, optarg);
                goto out;
            }
            break;
        case OPT_TIMEOUT:
            if (parse_int(optarg, 1, 3600, &timeout_s) != 0) {
                fprintf(stderr, "passmill produce: --timeout expects 1..3600 seconds, found '%s'\n",
                        optarg);
                goto out;
            }
            break;
        case 'X':
            if (add_prop(props, &n_props, optarg) != 0) {
                fprintf(stderr, "passmill produce: -X expects property=value\n");
                goto out;
            }
            break;
        case 'h': produce_usage(stdout); status = PM_EXIT_OK; goto out;
        default: produce_usage(stderr); goto out;
        }
    }
    if (!brokers || !*brokers || !topic || !*topic) {
        fprintf(stderr, "passmill produce: -b BROKERS and -t TOPIC are required\n");
        goto out;
    }
    if (strcmp(format, "avro") != 0 && strcmp(format, "json") != 0) {
        fprintf(stderr, "passmill produce: --format must be avro or json, found '%s'\n", format);
        goto out;
    }
    if (argc - optind > 1) {
        fprintf(stderr, "passmill produce: one input file at most\n");
        goto out;
    }
    const char *path = optind < argc ? argv[optind] : "-";

    pm_error err;
    pm_error_clear(&err);
    producer p = {0};
    p.avro = strcmp(format, "avro") == 0;
    p.schema_id = (uint32_t)schema_id;
    pm_source *src = NULL;
    int rc = pm_schema_init(&err);
    if (rc == 0)
        rc = pm_source_file_open(path, "auto", &src, &err);
    if (rc == 0)
        rc = producer_open(&p, brokers, topic, props, n_props, timeout_s, &err);
    if (rc != 0) {
        fprintf(stderr, "passmill produce: %s\n", err.message);
        status = err.code == PM_ERR_CONFIG || err.code == PM_ERR_FORMAT ? PM_EXIT_USAGE
                                                                        : PM_EXIT_FAILURE;
        pm_source_close(src);
        producer_close(&p);
        goto out;
    }
    rc = produce_all(&p, src, &err);
    if (rc != 0)
        fprintf(stderr, "passmill produce: %s\n", err.message);
    /* Every message is acknowledged or has failed by message.timeout.ms; a margin on top. */
    rd_kafka_resp_err_t fe = rd_kafka_flush(p.rk, (int)(timeout_s * 1000 + 5000));
    uint64_t unsent = (uint64_t)rd_kafka_outq_len(p.rk);
    printf("acknowledged=%llu failed=%llu\n", (unsigned long long)p.acked,
           (unsigned long long)(p.failed + p.unconvertible + unsent));
    fflush(stdout);
    if (p.failed && !p.acked)
        fprintf(stderr, "passmill produce: no broker at %s acknowledged any message within "
                "%ld s (%s%s%s); is the broker running and reachable?\n", brokers, timeout_s,
                p.first_failure, p.broker_error[0] ? "; last broker error: " : "", p.broker_error);
    else if (p.failed)
        fprintf(stderr, "passmill produce: %llu message(s) not acknowledged; first: %s\n",
                (unsigned long long)p.failed, p.first_failure);
    if (fe)
        fprintf(stderr, "passmill produce: flush: %s\n", rd_kafka_err2str(fe));
    status = rc == 0 && !p.failed && !p.unconvertible && !unsent ? PM_EXIT_OK : PM_EXIT_FAILURE;
    pm_source_close(src);
    producer_close(&p);
out:
    free(props);
    return status;
}
