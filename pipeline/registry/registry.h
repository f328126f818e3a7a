/*
 * registry.h - every pass passmill issued, and what happened to each record.
 *
 * The registry is the record of the factory: one row per pass (its request,
 * template version, status, content hash, object keys, the .pkpass sha256,
 * its authenticationToken and a monotonic update tag), one row per outcome
 * of every run (results), one row per reject or failure, one row per run.
 * Schema and columns: docs/registry.md.
 *
 * Two backends behind one ops table: SQLite (registry_sqlite.c: one file,
 * WAL, the embedded default) and PostgreSQL (registry_pg.c: several
 * processes share it).  Both keep the same schema and a schema version; an
 * older schema is migrated when opened, a newer one is refused.
 *
 * Threads.  A pm_registry is opened once by the main thread.  Writes
 * (begin_run, apply, end_run) come from one thread at a time: the engine's
 * durability thread.  Reads come from worker threads, each through its own
 * pm_registry_reader (reader_open/reader_close), so no handle is shared
 * between threads.  `passmill serve` takes service readers (service_open)
 * from a pool, one per request in flight: they also write devices and
 * registrations, each in its own transaction on its own connection.
 *
 * Durability.  apply() writes one batch of finished records in one
 * transaction and returns only once it is committed (synchronous commit):
 * a record is done when its artefacts are durable in the store and its
 * batch's apply() returned 0.
 */
#ifndef PM_REGISTRY_H
#define PM_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/error.h"
#include "engine/job.h"

/* Bump with every schema change; registry_*.c migrate older versions. */
#define PM_REGISTRY_SCHEMA_VERSION 3

typedef struct pm_registry pm_registry;
typedef struct pm_registry_reader pm_registry_reader;

/* One pass as the registry holds it (what the pipeline needs of it). */
typedef struct pm_registry_pass {
    char status[16];               /* "active", "voided", "expired", "redeemed" */
    char content_hash[65];         /* hex SHA-256, see pm_registry_content_hash() */
    char pkpass_sha256[65];        /* hex */
    char auth_token[PM_AUTH_TOKEN_LEN + 1];
    int64_t update_tag;
    int64_t created_at;            /* first issue, unix seconds (kept by every update) */
    json_t *record;                /* owned by the caller once returned; may be NULL */
} pm_registry_pass;

/* Filters for queries; NULL / 0 members do not filter. */
typedef struct pm_registry_filter {
    const char *event_id;
    const char *group_id;
    const char *run_id;
    int64_t since;                 /* unix seconds; 0 = any time */
} pm_registry_filter;

/* Counts by status (passes) for `passmill stats`. */
typedef struct pm_registry_stats {
    uint64_t active, voided, expired, redeemed;
    uint64_t rejects;              /* reject/failure rows matching the filter */
} pm_registry_stats;

/* What the web service needs of a pass (pm_registry_ops.pass_info). */
typedef struct pm_registry_service_pass {
    char status[16];
    char auth_token[PM_AUTH_TOKEN_LEN + 1];
    char pkpass_key[256];
    char qr_key[256];
    int64_t updated_at;            /* unix seconds: Last-Modified */
    int64_t update_tag;
} pm_registry_service_pass;

/* The web service's gauges (/metrics, /healthz). */
typedef struct pm_registry_service_stats {
    uint64_t devices, registrations;
    uint64_t outbox_queued, outbox_failed;  /* push_outbox rows by state */
} pm_registry_service_stats;

/* Called once per serial of serials_since(); a non-zero return stops. */
typedef int (*pm_registry_serial_fn)(void *arg, const char *serial);

/*
 * Pushes (docs/push.md).  apply() queues one push_outbox row per device
 * registered for a serial whose pass changed (PM_OUTCOME_PASS), in the same
 * transaction.  A sender claims due rows (claiming pushes their
 * next_attempt_at to the lease's end, so a sender that dies leaves them due
 * again then: at-least-once), sends them, and settles each in one
 * transaction per batch.  Several senders may share one outbox: PostgreSQL
 * claims with FOR UPDATE SKIP LOCKED, SQLite under its write lock.
 */
#define PM_PUSH_TOKEN_MAX 200
#define PM_PUSH_ID_MAX 256

typedef struct pm_push_item {
    int64_t id;                           /* push_outbox.id */
    char device_id[PM_PUSH_ID_MAX];
    char push_token[PM_PUSH_TOKEN_MAX + 1];
    char pass_type_id[PM_PUSH_ID_MAX];    /* the APNs topic */
    char serial[PM_PUSH_ID_MAX];
    int attempts;                         /* including this one */
} pm_push_item;

typedef enum pm_push_verdict {
    PM_PUSH_SENT,      /* APNs accepted it: the row is deleted */
    PM_PUSH_RETRY,     /* 429, 5xx, no answer: due again at retry_at */
    PM_PUSH_FAILED,    /* another 4xx: kept with state 'failed' */
    PM_PUSH_GONE,      /* 410: the device's registrations for the topic, the
                        * device when none is left, and its pushes go */
} pm_push_verdict;

typedef struct pm_push_result {
    pm_push_verdict verdict;
    int status;                           /* HTTP status, 0 = no answer */
    char reason[96];                      /* APNs' reason, or the transport error */
    int64_t retry_at;                     /* PM_PUSH_RETRY: unix seconds */
} pm_push_result;

/* The outbox now and the counters so far (counters rows push_*). */
typedef struct pm_push_status {
    uint64_t due, waiting, failed;        /* queued and due / queued later / failed rows */
    uint64_t sent, failed_total, retried, gone;   /* counters */
} pm_push_status;

/* Called once per exported row; a non-zero return stops the export. */
typedef int (*pm_registry_row_fn)(void *arg, json_t *row);

/* Which passes a lifecycle command (void, reissue, ...) selects; NULL
 * members do not filter, all NULL selects every pass. */
typedef struct pm_registry_selection {
    const char *event_id;
    const char *group_id;          /* passes in this pass group (pass_groups) */
    const char *template_id;
} pm_registry_selection;

/* One pass row of a scan; the strings live until the callback returns. */
typedef struct pm_registry_row {
    const char *serial, *status, *template_id, *template_version, *content_hash;
    const char *record;            /* the stored canonical record (compact, keys sorted) */
} pm_registry_row;

/* Called once per scanned row; a non-zero return stops the scan. */
typedef int (*pm_registry_scan_fn)(void *arg, const pm_registry_row *row);

typedef struct pm_registry_ops {
    const char *name;
    /* A run starts: its row in runs(run_id, started, command). */
    int (*begin_run)(pm_registry *r, const char *run_id, const char *command, pm_error *err);
    /*
     * One batch of finished jobs in one transaction.  Per job, by
     * job->outcome: PM_OUTCOME_PASS upserts the pass row (a new update tag,
     * its pass groups) and adds a results row; PM_OUTCOME_UNCHANGED adds a
     * results row only; PM_OUTCOME_REJECT and PM_OUTCOME_FAILED add a
     * rejects row.  Returns once committed; on error nothing of the batch is.
     */
    int (*apply)(pm_registry *r, const char *run_id, pm_job *const *jobs, size_t n, pm_error *err);
    /* The run's counts and end time. */
    int (*end_run)(pm_registry *r, const char *run_id, const uint64_t counts[PM_OUTCOME_COUNT],
                   pm_error *err);

    /* A reader for one thread; closed with reader_close. */
    int (*reader_open)(pm_registry *r, pm_registry_reader **out, pm_error *err);
    void (*reader_close)(pm_registry_reader *rd);
    /* 1 found (out filled), 0 not found, -1 error. */
    int (*lookup)(pm_registry_reader *rd, const char *serial, bool with_record,
                  pm_registry_pass *out, pm_error *err);

    /*
     * The web service (passmill serve).  service_open makes a reader that may
     * also write devices and registrations, for one serve thread (its own
     * connection: SQLite read-write, PostgreSQL a connection of its own, so
     * several serve processes share one PostgreSQL registry).  Every other
     * op below takes such a reader; lookup works on it too.
     */
    int (*service_open)(pm_registry *r, pm_registry_reader **out, pm_error *err);
    /* 1 found (out filled), 0 not found, -1 error. */
    int (*pass_info)(pm_registry_reader *rd, const char *serial, pm_registry_service_pass *out,
                     pm_error *err);
    /* Device device_id (push token push_token, replaced when it changed)
     * holds pass_type_id/serial, in one transaction: 1 a new registration,
     * 0 it was already registered, -1 error.  The serial must exist. */
    int (*register_device)(pm_registry_reader *rd, const char *device_id, const char *push_token,
                           const char *pass_type_id, const char *serial, int64_t now,
                           pm_error *err);
    /* 1 removed, 0 there was none, -1 error.  A device left without
     * registrations is removed with it (Apple: stop sending it pushes). */
    int (*unregister_device)(pm_registry_reader *rd, const char *device_id,
                             const char *pass_type_id, const char *serial, pm_error *err);
    /* The serials device_id holds of pass_type_id whose update_tag is above
     * since (0: all), each to fn in tag order; *last_tag = the highest tag
     * seen (since when none).  Returns the count, -1 on error. */
    long (*serials_since)(pm_registry_reader *rd, const char *device_id, const char *pass_type_id,
                          int64_t since, pm_registry_serial_fn fn, void *arg, int64_t *last_tag,
                          pm_error *err);
    /* Counts for /metrics; doubles as the /healthz probe. */
    int (*service_stats)(pm_registry_reader *rd, pm_registry_service_stats *out, pm_error *err);

    /*
     * Lifecycle commands and reissue (the registry as a source).
     * One page of the passes sel selects whose serial sorts after `after`
     * ("" = from the first), in serial order, at most limit rows: fn per
     * row.  Returns the number of rows delivered (< limit: the end), -1 on
     * error.  Paging by serial keeps memory bounded and lets a scan go on
     * while the same run updates the rows it already passed.
     */
    int (*scan)(pm_registry_reader *rd, const pm_registry_selection *sel, const char *after,
                unsigned limit, pm_registry_scan_fn fn, void *arg, pm_error *err);
    /* How many passes sel selects. */
    int (*count)(pm_registry_reader *rd, const pm_registry_selection *sel, uint64_t *out,
                 pm_error *err);
    /* `passmill templates`: one row per (template_id, template_version) in
     * use, {"template_id", "template_version", "passes"}, ordered by both. */
    int (*template_versions)(pm_registry *r, pm_registry_row_fn fn, void *arg, pm_error *err);

    /* `passmill show`: the whole row as JSON (new reference), NULL + err->code
     * PM_OK when not found, NULL + error otherwise. */
    json_t *(*show)(pm_registry *r, const char *serial, pm_error *err);
    int (*stats)(pm_registry *r, const pm_registry_filter *f, pm_registry_stats *out, pm_error *err);
    /* `passmill export`: results then rejects matching f, oldest first. */
    int (*export_rows)(pm_registry *r, const pm_registry_filter *f, pm_registry_row_fn fn,
                       void *arg, pm_error *err);

    /* Claim up to max due pushes (state queued, next_attempt_at <= now):
     * attempts + 1, next_attempt_at = lease_until; *n of them into items. */
    int (*push_claim)(pm_registry *r, int64_t now, int64_t lease_until, pm_push_item *items,
                      size_t max, size_t *n, pm_error *err);
    /* Settle n claimed pushes by their results, and add to the counters, in one transaction. */
    int (*push_settle)(pm_registry *r, const pm_push_item *items, const pm_push_result *res,
                       size_t n, pm_error *err);
    int (*push_status)(pm_registry *r, int64_t now, pm_push_status *out, pm_error *err);
    void (*close)(pm_registry *r);
} pm_registry_ops;

struct pm_registry {
    const pm_registry_ops *ops;
};

/* A reader starts with its backend's ops, so it can be used and closed alone. */
struct pm_registry_reader {
    const pm_registry_ops *ops;
};

static inline int pm_registry_lookup(pm_registry_reader *rd, const char *serial, bool with_record,
                                     pm_registry_pass *out, pm_error *err)
{
    return rd->ops->lookup(rd, serial, with_record, out, err);
}

static inline void pm_registry_reader_close(pm_registry_reader *rd)
{
    if (rd)
        rd->ops->reader_close(rd);
}

/*
 * Open the registry cfg names: registry.url (postgresql://..., password
 * from registry.password_env / registry.password_file) or registry.path
 * (SQLite).  *out = NULL and 0 when neither is set (no registry).
 */
int pm_registry_open(const pm_config *cfg, pm_registry **out, pm_error *err);
void pm_registry_close(pm_registry *r);

int pm_registry_sqlite_open(const char *path, pm_registry **out, pm_error *err);
int pm_registry_pg_open(const char *conninfo, const char *password, pm_registry **out,
                        pm_error *err);

/* A new run id: UTC time and 8 random hex digits, "20261201T214500Z-1a2b3c4d". */
void pm_registry_run_id(char out[PM_RUN_ID_LEN + 1]);
/* A new authenticationToken: 32 random hex digits (Apple: at least 16 characters). */
int pm_registry_new_token(char out[PM_AUTH_TOKEN_LEN + 1], pm_error *err);

/*
 * The content hash: hex SHA-256 of everything that decides the pass bytes
 * except the signing time: the normalized record without its "action"
 * (keys sorted, compact), the status, the template version and the signer
 * certificate's SHA-256.  Two requests with the same hash make the same pass.
 * canonical (reset first) receives the record as the registry stores it:
 * compact JSON with sorted keys, action included, NUL-terminated.  Fields added to the
 * schema later (sharing_prohibited, strip_image) are left out while null,
 * so passes stored before them keep their hash.
 */
int pm_registry_content_hash(const json_t *record, const char *status,
                             const char *template_version, const uint8_t signer_sha256[32],
                             pm_buf *canonical, char out[65], pm_error *err);

/*
 * The same hash from the record's canonical text (as the registry stores
 * it: pm_registry_content_hash's canonical), without parsing it: what a
 * reissue compares with the stored content_hash to skip a pass unread.
 */
int pm_registry_content_hash_text(const char *canonical, size_t len, const char *status,
                                  const char *template_version, const uint8_t signer_sha256[32],
                                  char out[65], pm_error *err);

/*
 * What one thread reuses across passes for the two functions above and
 * pm_registry_new_token(): a SHA-256 context on a digest fetched once, and
 * random bytes drawn from OpenSSL's generator a block at a time.  Per pass,
 * OpenSSL 3's implicit digest fetch and its 16-byte draws cost more than
 * the hash itself (docs/benchmarks.md, issue 10).  Same results as the
 * functions above; one thread at a time.  The block of random bytes is
 * cleansed on destroy; passmill does not fork with a hasher alive.
 */
typedef struct pm_registry_hasher pm_registry_hasher;

int pm_registry_hasher_create(pm_registry_hasher **out, pm_error *err);
void pm_registry_hasher_destroy(pm_registry_hasher *h); /* NULL is a no-op */
int pm_registry_hasher_content_hash(pm_registry_hasher *h, const json_t *record, const char *status,
                                    const char *template_version, const uint8_t signer_sha256[32],
                                    pm_buf *canonical, char out[65], pm_error *err);
int pm_registry_hasher_content_hash_text(pm_registry_hasher *h, const char *canonical, size_t len,
                                         const char *status, const char *template_version,
                                         const uint8_t signer_sha256[32], char out[65], pm_error *err);
int pm_registry_hasher_new_token(pm_registry_hasher *h, char out[PM_AUTH_TOKEN_LEN + 1],
                                 pm_error *err);

/* The status of a job's outcome, as stored: "pass", "unchanged", "reject", "failed". */
const char *pm_outcome_kind_name(pm_outcome_kind k);

#endif
