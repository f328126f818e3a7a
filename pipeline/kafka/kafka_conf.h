/*
 * kafka_conf.h - building librdkafka configurations the passmill way.
 *
 * Shared by the Kafka source, the Kafka outcome and `passmill produce`.
 * Properties are applied in three layers: passmill's defaults for that
 * client, then the user's (config keys `kafka.<property>` or -X), then the
 * few properties passmill must own for correctness (e.g. manual offset
 * commits), which override the user.  Errors name the property.
 *
 * One property namespace serves the consumer and the producer, so a
 * consumer-only property given to the producer (or the reverse) is expected:
 * the log callback drops librdkafka's "will be ignored" notice for those and
 * prefixes every other line with "passmill: kafka".
 */
#ifndef PM_KAFKA_CONF_H
#define PM_KAFKA_CONF_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "core/config.h"
#include "core/error.h"

/* Set one property; on failure err names it and says why. */
int pm_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, pm_error *err);

/*
 * A new configuration: `defaults` (NULL-terminated key, value, key, value,
 * ...; may be NULL), then bootstrap.servers = brokers (when non-empty), then
 * the user's props, then `forced` (like defaults).  NULL on error.
 */
rd_kafka_conf_t *pm_kafka_conf_new(const char *const *defaults, const char *brokers,
                                   const pm_kv *props, size_t n_props,
                                   const char *const *forced, pm_error *err);

/* The user's value of a property, or NULL. */
const char *pm_kafka_prop(const pm_kv *props, size_t n_props, const char *key);

#endif
