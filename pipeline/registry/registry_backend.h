/*
 * registry_backend.h - what the registry backends share (registry_sqlite.c,
 * registry_pg.c); not for the registry's users.
 *
 * The rows passmill prints (show, export) have one shape whatever the
 * backend: a backend selects the columns in the order below and hands the
 * row to a builder through a pm_registry_cols, a small cursor over one row
 * of its own result type.
 */
#ifndef PM_REGISTRY_BACKEND_H
#define PM_REGISTRY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "engine/job.h"

/*
 * Schema steps the same on both backends (each backend's schema_steps[]
 * lists its own and these): NULL-terminated SQL statements.
 */
extern const char *const pm_registry_schema_v3[];

/* Column lists of the rows the builders read, in the order they read them. */
#define PM_REGISTRY_SHOW_COLUMNS                                                                  \
    "serial, status, template_id, template_version, event_id, record, content_hash,"             \
    " pkpass_sha256, pkpass_key, qr_key, update_tag, created_at, updated_at, run_id, origin"
#define PM_REGISTRY_RESULT_COLUMNS                                                                \
    "run_id, serial, outcome, action, status, template_id, template_version, pkpass_sha256,"     \
    " pkpass_key, qr_key, origin, at"
#define PM_REGISTRY_REJECT_COLUMNS                                                                \
    "run_id, serial, code, field, reason, record, record_base64, origin, at"

/* One row of a backend's result: column i as JSON (a new reference: null,
 * an integer for integer columns, else a string), as an integer, as text
 * (NULL for SQL NULL). */
typedef struct pm_registry_cols {
    json_t *(*json)(void *row, int i);
    int64_t (*integer)(void *row, int i);
    const char *(*text)(void *row, int i);
    void *row;
} pm_registry_cols;

/* New references; NULL when out of memory.  show's row lacks pass_group_ids
 * (another query): the caller adds it. */
json_t *pm_registry_show_row(const pm_registry_cols *c);
json_t *pm_registry_result_row(const pm_registry_cols *c);
json_t *pm_registry_reject_row(const pm_registry_cols *c);

/*
 * The text a pass row stores as its record: the fingerprint stage's
 * canonical text (job->record_json), or, for a job made another way, the
 * same canonical text written now into scratch (the caller frees it with
 * pm_buf_free).  NUL-terminated; NULL with err set when it cannot be written.
 */
const char *pm_registry_row_record(const pm_job *job, pm_buf *scratch, pm_error *err);

/* The record's string member name, or NULL; its event.event_id, or NULL. */
const char *pm_registry_record_text(const pm_job *job, const char *name);
const char *pm_registry_event_id(const pm_job *job);

#endif
