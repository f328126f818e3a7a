/*
 * job.h - one record's trip through the pipeline.
 *
 * A source fills the input part, each stage reads what earlier stages wrote
 * and writes its own part, the engine stores the artefacts and reports the
 * outcome.  Jobs are owned by the engine and reused: pm_job_reset() keeps
 * buffer capacity so the hot path does not allocate per pass.
 *
 * Who writes what (every other stage only reads):
 *   source    : format, raw, origin, source_ref, writer; and err when the
 *               source itself rejects the record (a corrupt container
 *               block): the stages are then skipped
 *   decode    : record, serial, patch
 *   merge     : record (from patch and the registry)
 *   validate  : tmpl, status
 *   fingerprint: content_hash, record_json, auth_token, unchanged, prior_sha256,
 *               issued_at
 *               expect_tag (merge sets it first for a change by serial)
 *   barcode   : barcode_message, barcodes, qr_png
 *   manifest  : pass_json, manifest_json
 *   sign      : signature
 *   bundle    : pkpass, pkpass_sha256
 *   engine    : seq, err, now, outcome, attempts
 *   registry  : conflict (apply(): the row changed since the lookup)
 */
#ifndef PM_JOB_H
#define PM_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/error.h"

struct pm_template;
struct pm_schema_writer;

/* How job->raw is encoded. */
typedef enum pm_input_format {
    PM_INPUT_JSON = 0,   /* one JSON object (a JSON Lines line) */
    PM_INPUT_AVRO,       /* Avro binary datum of job->writer (NULL: schemas/pass_request.avsc) */
    PM_INPUT_CONFLUENT   /* magic 0, 4-byte big-endian schema id, Avro binary datum */
} pm_input_format;

/* How a record ended (one of these per record that entered). */
typedef enum pm_outcome_kind {
    PM_OUTCOME_PASS = 0,    /* a pass was made and stored */
    PM_OUTCOME_UNCHANGED,   /* the registry already holds this exact pass */
    PM_OUTCOME_REJECT,      /* a bad record: job->err says why */
    PM_OUTCOME_FAILED,      /* the system could not finish it: job->err says why */
    PM_OUTCOME_COUNT
} pm_outcome_kind;

#define PM_AUTH_TOKEN_LEN 32   /* hex digits of an authenticationToken */
#define PM_RUN_ID_LEN 25       /* "20261201T214500Z-1a2b3c4d" */

/* job->expect_tag: 0 = no lookup was made (apply writes unconditionally);
 * PM_TAG_ABSENT = the lookup found no row; > 0 = the row's update_tag then. */
#define PM_TAG_ABSENT (-1)

/* Where a record came from, for rejects, results and commits. */
typedef struct pm_origin {
    char source[256];   /* input file path or Kafka topic */
    int32_t partition;  /* Kafka partition, -1 for files */
    int64_t offset;     /* Kafka offset, or 1-based line/record number in a file */
} pm_origin;

typedef struct pm_job {
    uint64_t seq;                 /* engine: 0-based arrival order */
    int64_t now;                  /* engine: the clock for this pass (unix seconds) */

    pm_input_format format;       /* source */
    pm_buf raw;                   /* source: original bytes, never modified */
    pm_origin origin;             /* source */
    void *source_ref;             /* source: opaque, handed back on completion */
    const struct pm_schema_writer *writer; /* source: PM_INPUT_AVRO's writer schema,
                                     borrowed (the source outlives its records) */

    json_t *record;               /* decode: owned; normalized, see stages/decode.h */
    const char *serial;           /* decode: points into record (or patch), NULL before */
    json_t *patch;                /* decode: owned; a partial request (see stages/decode.h), else NULL */

    const struct pm_template *tmpl; /* validate: the record's template (borrowed) */
    const char *status;           /* validate: "active", "voided", "expired", "redeemed" */

    char content_hash[65];        /* fingerprint: hex SHA-256, see registry.h */
    pm_buf record_json;           /* fingerprint: the record as the registry stores it
                                     (canonical JSON, NUL-terminated; empty without registry) */
    char auth_token[PM_AUTH_TOKEN_LEN + 1]; /* fingerprint: the pass's token ("" without registry) */
    char prior_sha256[65];        /* fingerprint: the registry's .pkpass sha256 when unchanged */
    bool unchanged;               /* fingerprint: the registry holds this exact pass; stop here */
    int64_t issued_at;            /* fingerprint: the pass's first issue (unix seconds, the
                                     registry's created_at); 0: unknown, use now */
    int64_t expect_tag;           /* merge/fingerprint: the pass row's update_tag at lookup
                                     (PM_TAG_ABSENT above); apply() writes only if unchanged since */
    bool conflict;                /* registry: apply() found the row changed since the lookup
                                     (another process): nothing of this job was written */
    unsigned attempts;            /* engine: times the job was sent back after a conflict */

    pm_buf barcode_message;       /* barcode: final message (autogenerate resolved) */
    json_t *barcodes;             /* barcode: owned JSON object merged into pass.json:
                                     {"barcodes": [...], "barcode": {...} (legacy, absent for CODE128)} */
    pm_buf qr_png;                /* barcode: QR PNG of the message */

    pm_buf pass_json;             /* manifest */
    pm_buf manifest_json;         /* manifest */
    pm_buf signature;             /* sign: DER PKCS#7 detached over manifest_json */
    pm_buf pkpass;                /* bundle: the zip */
    uint8_t pkpass_sha256[32];    /* bundle */

    pm_error err;                 /* outcome when a stage fails */
    pm_outcome_kind outcome;      /* engine: how the record ended, set before reporting */
} pm_job;

void pm_job_init(pm_job *job);
/* Drop per-record state (JSON trees), keep buffer capacity. */
void pm_job_reset(pm_job *job);
/* Back to the state decode left (input, record or patch kept), for another
 * pass through the stages after a registry conflict; attempts is kept. */
void pm_job_restage(pm_job *job);
/* Free everything the job owns. */
void pm_job_free(pm_job *job);

/* "FILE:LINE" or "topic[partition]@offset" into out, for messages. */
void pm_origin_format(const pm_origin *o, char *out, size_t outlen);

#endif
