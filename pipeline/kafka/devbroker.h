/*
 * devbroker.h - an embedded Kafka-protocol broker for development and tests.
 *
 * Built on librdkafka's mock cluster (rdkafka_mock.h): N brokers listening
 * on ephemeral 127.0.0.1 ports that speak the real Kafka protocol to any
 * client (produce, fetch, consumer groups, offset commits, the idempotent
 * producer, compression).  It keeps data in memory only and drops a
 * partition's oldest batches beyond about 5 MB, so spread data over several
 * partitions and compress it.  Transactions are not supported.
 *
 * `passmill devbroker` runs one until SIGTERM/SIGINT; tests embed one
 * in-process and inject faults through pm_devbroker_mock() with the
 * rd_kafka_mock_* functions (broker down/up, leader changes, request
 * errors).
 */
#ifndef PM_DEVBROKER_H
#define PM_DEVBROKER_H

#include <stdbool.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "core/error.h"

typedef struct pm_devbroker pm_devbroker;

/* Start a cluster of n_brokers (1..16) brokers. Free with pm_devbroker_destroy(). */
int pm_devbroker_create(int n_brokers, pm_devbroker **out, pm_error *err);
void pm_devbroker_destroy(pm_devbroker *b);

/* Create a topic with `partitions` partitions, replicated on up to 3 brokers. */
int pm_devbroker_create_topic(pm_devbroker *b, const char *topic, int partitions,
                              pm_error *err);
/* Create each topic of a comma-separated list ("a,b,c"). */
int pm_devbroker_create_topics(pm_devbroker *b, const char *csv, int partitions,
                               pm_error *err);

/* The bootstrap.servers list ("127.0.0.1:PORT,..."); borrowed. */
const char *pm_devbroker_bootstrap(const pm_devbroker *b);
int pm_devbroker_broker_count(const pm_devbroker *b);

/* The underlying mock cluster, for fault injection (borrowed). */
rd_kafka_mock_cluster_t *pm_devbroker_mock(pm_devbroker *b);

/*
 * Write text to path atomically: a temporary file in the same folder,
 * fsync, rename.  A reader polling for path sees all of it or nothing.
 */
int pm_write_file_atomic(const char *path, const char *text, pm_error *err);

#endif
