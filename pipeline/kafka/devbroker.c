#include "kafka/devbroker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct pm_devbroker {
    rd_kafka_t *rk;                 /* bookkeeping handle the mock cluster needs */
    rd_kafka_mock_cluster_t *mock;
    int n_brokers;
};

enum { PM_DEVBROKER_MAX_BROKERS = 16, PM_DEVBROKER_MAX_PARTITIONS = 1024 };

int pm_devbroker_create(int n_brokers, pm_devbroker **out, pm_error *err)
{
    *out = NULL;
    if (n_brokers < 1 || n_brokers > PM_DEVBROKER_MAX_BROKERS)
        return pm_error_set(err, PM_ERR_CONFIG, "devbroker: brokers must be 1..%d, got %d",
                            PM_DEVBROKER_MAX_BROKERS, n_brokers);
    pm_devbroker *b = calloc(1, sizeof *b);
    if (!b)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The handle only hosts the cluster and never connects anywhere: keep
     * its "no bootstrap.servers" notice quiet. */
    if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        free(b);
        return pm_error_set(err, PM_ERR_INTERNAL, "devbroker: %s", errstr);
    }
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!b->rk) {
        rd_kafka_conf_destroy(conf);
        free(b);
        return pm_error_set(err, PM_ERR_INTERNAL, "devbroker: creating the host handle: %s",
                            errstr);
    }
    b->mock = rd_kafka_mock_cluster_new(b->rk, n_brokers);
    if (!b->mock) {
        rd_kafka_destroy(b->rk);
        free(b);
        return pm_error_set(err, PM_ERR_IO, "devbroker: could not start the mock cluster "
                            "(listening on 127.0.0.1 failed?)");
    }
    b->n_brokers = n_brokers;
    *out = b;
    return 0;
}

void pm_devbroker_destroy(pm_devbroker *b)
{
    if (!b)
        return;
    rd_kafka_mock_cluster_destroy(b->mock);
    rd_kafka_destroy(b->rk);
    free(b);
}

int pm_devbroker_create_topic(pm_devbroker *b, const char *topic, int partitions, pm_error *err)
{
    if (!topic || !*topic || strlen(topic) > 249)
        return pm_error_set(err, PM_ERR_CONFIG, "devbroker: topic name must be 1..249 characters");
    if (partitions < 1 || partitions > PM_DEVBROKER_MAX_PARTITIONS)
        return pm_error_set(err, PM_ERR_CONFIG, "devbroker: partitions must be 1..%d, got %d",
                            PM_DEVBROKER_MAX_PARTITIONS, partitions);
    int replicas = b->n_brokers < 3 ? b->n_brokers : 3;
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(b->mock, topic, partitions, replicas);
    if (e)
        return pm_error_set(err, PM_ERR_IO, "devbroker: creating topic '%s': %s", topic,
                            rd_kafka_err2str(e));
    return 0;
}

int pm_devbroker_create_topics(pm_devbroker *b, const char *csv, int partitions, pm_error *err)
{
    char *copy = strdup(csv ? csv : "");
    if (!copy)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    int rc = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        size_t n = strlen(t);
        while (n && t[n - 1] == ' ')
            t[--n] = '\0';
        if (n)
            rc = pm_devbroker_create_topic(b, t, partitions, err);
    }
    free(copy);
    return rc;
}

const char *pm_devbroker_bootstrap(const pm_devbroker *b)
{
    return rd_kafka_mock_cluster_bootstraps(b->mock);
}

int pm_devbroker_broker_count(const pm_devbroker *b)
{
    return b->n_brokers;
}

rd_kafka_mock_cluster_t *pm_devbroker_mock(pm_devbroker *b)
{
    return b->mock;
}

int pm_write_file_atomic(const char *path, const char *text, pm_error *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        pm_error_set(err, PM_ERR_IO, "creating a temporary file next to '%s': %s", path,
                     strerror(errno));
        free(tmp);
        return -1;
    }
    size_t len = strlen(text), off = 0;
    int rc = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = -1;
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0 && (fchmod(fd, 0644) != 0 || fsync(fd) != 0))
        rc = -1;
    if (close(fd) != 0)
        rc = -1;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1;
    if (rc != 0) {
        pm_error_set(err, PM_ERR_IO, "writing '%s': %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}
