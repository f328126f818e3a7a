/*
 * kafka_conf.h - building librdkafka configurations the passmill way.
 *
 * Shared by the Kafka source, the Kafka outcome and `passmill produce`.
 * Properties are applied in three layers: passmill's defaults for that
 * client, then the user's (config keys `kafka.<property>` or -X), then the
 * few properties passmill must own for correctness (e.g. manual offset
 * commits), which override the user.  Errors name the property.
 *
 * Secrets (pm_config_kafka_secret: sasl.password, ssl.key.password, ...)
 * are never taken as values, which would put them in
 * argv or a config file: the user's "<secret>_env = VARIABLE" or
 * "<secret>_file = PATH" (content, trailing newlines removed) sets them, and
 * the plain property is refused with a message saying so.
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

/*
 * PM_KAFKA_PAYLOAD_READS_BEGIN() / _END(): bracket a copy out of memory that
 * librdkafka owns (a consumed message's payload), in ThreadSanitizer builds
 * only; nothing elsewhere.
 *
 * Why (the race report seen about one stress_kafka run in thirty: a write by
 * `free` in librdkafka's rdk:broker thread against our earlier read of the
 * payload in kafka_next): a fetched message's payload points into the fetch
 * response buffer, which the consumer's message and the broker thread each
 * hold a reference to.  Our copy ends before rd_kafka_message_destroy()
 * drops our reference; the broker thread frees the buffer when it drops the
 * last one.  That hand-off is librdkafka's reference count, atomics compiled
 * without TSan, so TSan sees no order between the copy and the free.  The
 * ASan build runs the same code under test_kafka and would report any read
 * after the free as heap-use-after-free; it reports none.
 *
 * Only the reads are ignored, only in this thread, only for the copy: the
 * writes into our own buffer (and its realloc) are still checked.
 */
#ifdef __SANITIZE_THREAD__
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define PM_KAFKA_PAYLOAD_READS_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define PM_KAFKA_PAYLOAD_READS_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define PM_KAFKA_PAYLOAD_READS_BEGIN() ((void)0)
#define PM_KAFKA_PAYLOAD_READS_END() ((void)0)
#endif

#endif
