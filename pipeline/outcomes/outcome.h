/*
 * outcome.h - where results and rejects are reported.
 *
 * Every record that enters ends in exactly one call: pass() after its
 * artefacts are in the store, reject() for a bad record, fail() when the
 * system could not process it (it is then neither stored nor committed).
 * Implementations: the results ledger + rejects file (outcome_files.c) and
 * the Kafka results/dead-letter topics (outcome_kafka.c).  Calls come from
 * worker threads concurrently; implementations serialise as they need.
 *
 * A result (one per outcome) is a JSON object:
 *   {"serial", "outcome" ("pass" or "unchanged"), "action", "status",
 *    "keys": {"pkpass", "qr"}, "sha256",
 *    "template_id", "template_version", "urls"?, "metadata"?, "origin"}
 * A reject line: {"serial", "code", "field", "reason", "origin", "record"}
 * where "record" is the original input (a JSON object for JSON input, the
 * bytes base64 for binary input as "record_base64").
 */
#ifndef PM_OUTCOME_H
#define PM_OUTCOME_H

#include <stdbool.h>

#include <jansson.h>

#include "core/config.h"
#include "core/error.h"
#include "engine/job.h"

typedef struct pm_outcome pm_outcome;

/*
 * A record's completion token.  The engine creates one per record and hands
 * it to every outcome.  An outcome that confirms asynchronously (a Kafka
 * delivery report) calls pm_completion_hold() before returning and
 * pm_completion_release() once the outcome is durable (ok=true) or has
 * failed (ok=false).  When the last reference is released the engine tells
 * the source the record is done (durable only if every holder said ok).
 * Synchronous outcomes ignore the token.
 */
typedef struct pm_completion pm_completion;
void pm_completion_hold(pm_completion *c);
void pm_completion_release(pm_completion *c, bool ok);

typedef struct pm_outcome_ops {
    const char *name;
    /* result: built by pm_outcome_result_json; borrowed. */
    int (*pass)(pm_outcome *o, const pm_job *job, json_t *result,
                pm_completion *c, pm_error *err);
    int (*reject)(pm_outcome *o, const pm_job *job, pm_completion *c, pm_error *err);
    /*
     * The system could not process the record (store or crypto failure;
     * job->err says why).  Files outcome: written to the rejects file with
     * its system error code so nothing is silently lost.  A Kafka outcome
     * ignores it (the offset is not committed; the record is re-delivered).
     * May be NULL.
     */
    int (*fail)(pm_outcome *o, const pm_job *job, pm_error *err);
    /* Flush buffered output to durable storage (end of run, or periodically). */
    int (*flush)(pm_outcome *o, pm_error *err);
    void (*close)(pm_outcome *o);
} pm_outcome_ops;

struct pm_outcome {
    const pm_outcome_ops *ops;
};

/* The Kafka outcome: results topic and dead-letter topic (outcome_kafka.c). */
int pm_outcome_kafka_open(const pm_config *cfg, pm_outcome **out, pm_error *err);

/* The files outcome: ledger (zstd JSONL) and rejects (JSONL). */
int pm_outcome_files_open(const char *ledger_path, const char *rejects_path,
                          pm_outcome **out, pm_error *err);
void pm_outcome_close(pm_outcome *o);

/* The JSON result for a finished pass (new reference, caller decrefs). */
json_t *pm_outcome_result_json(const pm_job *job, const char *pkpass_key,
                               const char *qr_key, const char *pkpass_url,
                               const char *qr_url);
/* The JSON reject line (new reference). */
json_t *pm_outcome_reject_json(const pm_job *job);

/*
 * The serial a reject is reported under, the same for every outcome:
 * job->serial, else the "serial_number" string of a JSON record that failed
 * decoding (a schema error, say), else NULL.  *orig gets the original record
 * parsed when the input was JSON (NULL otherwise); the serial may point into
 * it, so json_decref(*orig) only after the serial's last use.
 */
const char *pm_outcome_reject_serial(const pm_job *job, json_t **orig);

#endif
