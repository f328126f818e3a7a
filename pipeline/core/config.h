/*
 * config.h - passmill's configuration: one struct, one table of keys.
 *
 * File format: one `key = value` per line; `#` starts a comment line; blank
 * lines are ignored; whitespace around key and value is trimmed; a value may
 * be wrapped in double quotes.  Every key is listed in one table in config.c
 * (pm_config_keys) with its type, default and documentation: an unknown key
 * is an error naming the file and line.  `-X key=value` on the command line
 * overrides the file.  Keys starting with "kafka." are passed through to
 * librdkafka unchanged (minus the prefix), like kcat's -X.
 *
 * Relative paths (keys of type PM_CFG_PATH or PM_CFG_ID_PATHS, and the
 * librdkafka file properties kafka.ssl.*.location and
 * kafka.sasl.kerberos.keytab) are relative to the folder of the config file
 * that sets them, so `run -c /etc/passmill/x.conf` works from any folder.
 * Defaults and values given with -X / pm_config_set() are used as given,
 * i.e. relative to the working directory, as a user typing them expects.
 * input.path "-" (stdin) and empty values are never resolved.
 * Secrets are never config values: the config names an environment variable
 * or a file that holds them.  A Kafka secret (pm_config_kafka_secret) given
 * as kafka.<secret> is refused; kafka.<secret>_env and kafka.<secret>_file
 * are passed through and resolved by pipeline/kafka/kafka_conf.c.
 */
#ifndef PM_CONFIG_H
#define PM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

typedef struct pm_kv {
    char *key;
    char *value;
} pm_kv;

typedef struct pm_config {
    /* input */
    char *input_type;         /* "file" or "kafka" */
    char *input_path;         /* file source: path, "-" for stdin */
    char *input_format;       /* "auto", "jsonl", "avro" */

    /* templates, signing, barcodes */
    char *template_dir;       /* folder holding one folder per template id */
    char *sign_cert;          /* PEM signer certificate */
    char *sign_key;           /* PEM private key */
    char *sign_chain;         /* PEM WWDR intermediate (and more) */
    char *sign_p12;           /* PKCS#12 with key, cert, chain (instead of PEMs) */
    char *sign_passphrase_env;  /* env var holding the key/p12 passphrase */
    char *sign_passphrase_file; /* file holding the passphrase */
    char *barcode_secret_env;   /* env var holding the autogenerate HMAC key */
    char *barcode_secret_file;  /* file holding the autogenerate HMAC key */

    /* outputs */
    char *store_type;         /* "local" or "s3" */
    char *store_dir;          /* local store root */
    bool store_fsync;         /* fsync objects (batched per directory) */
    char *store_layout;       /* "full" or "split" (stores/store.h) */
    char *rejects_path;       /* JSON Lines rejects file */
    char *ledger_path;        /* zstd JSON Lines results ledger */

    /* registry */
    char *registry_path;      /* SQLite file; "" = none unless registry_url */
    char *registry_url;       /* PostgreSQL conninfo, no password */
    char *registry_password_env;
    char *registry_password_file;

    /* engine */
    int64_t workers;          /* 0 = number of online CPUs */
    int64_t queue_size;       /* jobs in flight between source and workers */
    char *now;                /* fixed clock, RFC 3339, "" = real clock */
    int64_t progress_ms;      /* stderr progress interval, 0 = off */

    /* S3 store */
    char *s3_endpoint;
    char *s3_region;
    char *s3_bucket;
    char *s3_prefix;
    bool s3_path_style;
    char *s3_credentials_file;
    char *s3_profile;
    int64_t s3_presign_expiry;
    char *s3_cache_control;
    int64_t s3_max_inflight;
    int64_t s3_max_retries;
    int64_t s3_timeout_ms;

    /* Kafka */
    char *kafka_brokers;      /* "bootstrap.servers" shortcut */
    char *kafka_group_id;
    char *kafka_topic_requests;
    char *kafka_topic_results;
    char *kafka_topic_rejects;
    char *kafka_value_format; /* "avro" (Confluent wire format) or "json" */
    char *kafka_schema_ids;   /* "id:schemas/file.avsc,..." */
    char *kafka_schema_registry_url; /* "http://host:8081", "" = none */
    char *kafka_results_format; /* "json" or "avro" */
    bool exit_on_eof;
    int64_t kafka_shutdown_ms; /* bound on stopping with the broker gone */

    /* web service (passmill serve, docs/web-service.md) */
    char *service_listen;      /* HOST:PORT */
    char *service_url;         /* public base URL: webServiceURL and ticket links */
    bool service_allow_http;   /* development only: Wallet takes http with "Allow HTTP Services" */
    char *service_link_secret_file; /* HMAC key of ticket links */
    int64_t service_threads;   /* MHD thread pool size; 0 = online CPUs */
    int64_t service_timeout_s; /* idle / slow connection timeout */
    int64_t service_max_connections;
    int64_t service_link_expiry_s; /* default lifetime of `passmill link` */
    /* APNs push (docs/push.md) */
    bool push_enabled;        /* run/serve drain the outbox continuously */
    char *push_apns_url;
    char *push_ca_file;       /* extra CA bundle for the APNs host, "" = the system's */
    int64_t push_connections;
    int64_t push_streams;
    int64_t push_batch;
    int64_t push_lease;       /* seconds a claimed push is kept from other senders */
    int64_t push_backoff_initial;
    int64_t push_backoff_max;
    int64_t push_poll_ms;
    int64_t push_timeout_ms;

    /* kafka.* pass-through properties, in file order */
    pm_kv *kafka_props;
    size_t kafka_props_len;
} pm_config;

typedef enum pm_config_type {
    PM_CFG_STRING,
    PM_CFG_INT,
    PM_CFG_BOOL,
    PM_CFG_PATH,     /* a string naming a file or folder */
    PM_CFG_ID_PATHS  /* a string "id:path[,id:path...]" (kafka.schema_ids) */
} pm_config_type;

typedef struct pm_config_key {
    const char *name;
    pm_config_type type;
    size_t offset;            /* into pm_config */
    const char *default_value;
    const char *doc;
} pm_config_key;

extern const pm_config_key pm_config_keys[];
extern const size_t pm_config_keys_len;

/* A config with every default applied. Free with pm_config_destroy(). */
pm_config *pm_config_create(void);
void pm_config_destroy(pm_config *cfg);

/* Apply a file. Errors name the file and line. Relative paths in it are
 * resolved against the file's folder (see above). */
int pm_config_load_file(pm_config *cfg, const char *path, pm_error *err);
/* Apply one "key=value" (from -X); paths are used as given. */
int pm_config_set_pair(pm_config *cfg, const char *pair, pm_error *err);
int pm_config_set(pm_config *cfg, const char *key, const char *value, pm_error *err);

/* True for the librdkafka properties whose value is a credential (sasl.password, ...). */
bool pm_config_kafka_secret(const char *prop);

/* Print the key table (for `passmill run --help` and docs). */
void pm_config_print_keys(FILE *out);

#endif
