#include "kafka_conf.h"

#include <stdio.h>
#include <string.h>

int pm_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, pm_error *err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        /* The value is not echoed: it may be a credential (sasl.password). */
        return pm_error_set(err, PM_ERR_CONFIG, "kafka.%s: %s", key, errstr);
    return 0;
}

static int set_pairs(rd_kafka_conf_t *conf, const char *const *pairs, pm_error *err)
{
    for (size_t i = 0; pairs && pairs[i]; i += 2)
        if (pm_kafka_conf_set(conf, pairs[i], pairs[i + 1], err) != 0)
            return -1;
    return 0;
}

/*
 * librdkafka's log lines go to stderr with a passmill prefix.  The notice
 * that a consumer property is ignored by a producer (or the reverse) is
 * dropped: passmill gives both clients the one kafka.* namespace on purpose.
 */
static void log_line(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "will be ignored by this"))
        return;
    fprintf(stderr, "passmill: kafka: %s: %s\n", fac, buf);
}

rd_kafka_conf_t *pm_kafka_conf_new(const char *const *defaults, const char *brokers,
                                   const pm_kv *props, size_t n_props,
                                   const char *const *forced, pm_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_line);
    int rc = set_pairs(conf, defaults, err);
    if (rc == 0 && brokers && *brokers)
        rc = pm_kafka_conf_set(conf, "bootstrap.servers", brokers, err);
    for (size_t i = 0; rc == 0 && i < n_props; i++)
        rc = pm_kafka_conf_set(conf, props[i].key, props[i].value, err);
    if (rc == 0)
        rc = set_pairs(conf, forced, err);
    if (rc == 0) {
        size_t len = 0; /* the size with its NUL, asked without a buffer */
        if (rd_kafka_conf_get(conf, "bootstrap.servers", NULL, &len) != RD_KAFKA_CONF_OK ||
            len <= 1)
            rc = pm_error_set(err, PM_ERR_CONFIG,
                              "no Kafka brokers: set kafka.brokers (host:port[,host:port...])");
    }
    if (rc != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

const char *pm_kafka_prop(const pm_kv *props, size_t n_props, const char *key)
{
    for (size_t i = 0; i < n_props; i++)
        if (strcmp(props[i].key, key) == 0)
            return props[i].value;
    return NULL;
}
