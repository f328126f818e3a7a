/*
 * registry_sqlite.c - the registry in one SQLite file (Debian's libsqlite3).
 *
 * WAL journal with synchronous=FULL: a committed batch is on disk when
 * apply() returns, and worker threads read (each on its own read-only
 * connection) while the durability thread writes.  Tables and columns:
 * docs/registry.md; the DDL below is the same as the PostgreSQL backend's
 * but for the types SQLite spells differently.
 */
#include "registry/registry.h"
#include "registry/registry_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "core/buf.h"
#include "outcomes/outcome.h"
#include "stores/store.h"
#include "wallet/template.h"

/* Wait this long for a lock another connection holds (another process, or a
 * checkpoint) before calling the registry unavailable. */
#define BUSY_TIMEOUT_MS 30000

typedef struct sqlite_registry {
    pm_registry base;
    sqlite3 *db;            /* the writer connection (durability thread) */
    char *path;
    sqlite3_stmt *upsert, *del_groups, *add_group, *add_result, *add_reject, *get_tag, *set_tag;
} sqlite_registry;

typedef struct sqlite_reader {
    pm_registry_reader base;
    sqlite3 *db;
    sqlite3_stmt *lookup;
} sqlite_reader;

static const pm_registry_ops sqlite_ops;

static const char *const schema_v1[] = {
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('update_tag', 0)",
    "CREATE TABLE runs ("
    " run_id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at INTEGER NOT NULL,"
    " finished_at INTEGER, passes INTEGER, unchanged INTEGER, rejects INTEGER, failed INTEGER)",
    "CREATE TABLE passes ("
    " serial TEXT PRIMARY KEY, template_id TEXT NOT NULL, template_version TEXT NOT NULL,"
    " event_id TEXT,"
    " status TEXT NOT NULL CHECK (status IN ('active', 'voided', 'expired', 'redeemed')),"
    " record TEXT NOT NULL, content_hash TEXT NOT NULL, pkpass_sha256 TEXT NOT NULL,"
    " pkpass_key TEXT NOT NULL, qr_key TEXT NOT NULL, auth_token TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, update_tag INTEGER NOT NULL,"
    " run_id TEXT NOT NULL, origin TEXT NOT NULL)",
    "CREATE INDEX passes_event ON passes (event_id)",
    "CREATE INDEX passes_update_tag ON passes (update_tag)",
    "CREATE TABLE pass_groups ("
    " serial TEXT NOT NULL REFERENCES passes (serial) ON DELETE CASCADE,"
    " group_id TEXT NOT NULL, PRIMARY KEY (serial, group_id))",
    "CREATE INDEX pass_groups_group ON pass_groups (group_id)",
    "CREATE TABLE results ("
    " id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, serial TEXT NOT NULL,"
    " outcome TEXT NOT NULL CHECK (outcome IN ('pass', 'unchanged')), action TEXT,"
    " status TEXT NOT NULL, template_id TEXT, template_version TEXT, pkpass_sha256 TEXT,"
    " pkpass_key TEXT, qr_key TEXT, origin TEXT NOT NULL, at INTEGER NOT NULL)",
    "CREATE INDEX results_run ON results (run_id)",
    "CREATE INDEX results_at ON results (at)",
    "CREATE TABLE rejects ("
    " id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, serial TEXT, code TEXT NOT NULL,"
    " field TEXT NOT NULL, reason TEXT NOT NULL, record TEXT, record_base64 TEXT,"
    " origin TEXT NOT NULL, at INTEGER NOT NULL)",
    "CREATE INDEX rejects_run ON rejects (run_id)",
    "CREATE INDEX rejects_at ON rejects (at)",
    NULL,
};

static int db_error(pm_error *err, sqlite3 *db, const char *what)
{
    return pm_error_set(err, PM_ERR_IO, "registry: %s: %s", what, sqlite3_errmsg(db));
}

static int exec(sqlite3 *db, const char *sql, pm_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        pm_error_set(err, PM_ERR_IO, "registry: %s: %s", sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, pm_error *err)
{
    if (sqlite3_prepare_v2(db, sql, -1, out, NULL) != SQLITE_OK)
        return db_error(err, db, "prepare");
    return 0;
}

/* Bind a C string, NULL as SQL NULL.  SQLITE_TRANSIENT: copied at once. */
static int bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

/* Step a statement that returns no row, then reset it for the next use. */
static int step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, pm_error *err)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return db_error(err, db, what);
    return 0;
}

/* The schema version in the file: 0 when the file is new (no tables). */
static int schema_version(sqlite3 *db, int *version, pm_error *err)
{
    sqlite3_stmt *st;
    *version = 0;
    if (prepare(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                &st, err) != 0)
        return -1;
    int have = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (!have)
        return 0;
    if (prepare(db, "SELECT max(version) FROM schema_version", &st, err) != 0)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

/* Create or migrate the schema in one transaction; refuse a newer one. */
static int ensure_schema(sqlite_registry *r, pm_error *err)
{
    if (exec(r->db, "BEGIN IMMEDIATE", err) != 0)
        return -1;
    int version;
    if (schema_version(r->db, &version, err) != 0)
        goto fail;
    if (version > PM_REGISTRY_SCHEMA_VERSION) {
        pm_error_set(err, PM_ERR_CONFIG,
                     "registry '%s' has schema version %d, newer than this passmill's %d: "
                     "upgrade passmill", r->path, version, PM_REGISTRY_SCHEMA_VERSION);
        goto fail;
    }
    if (version == 0) {
        for (size_t i = 0; schema_v1[i]; i++)
            if (exec(r->db, schema_v1[i], err) != 0)
                goto fail;
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO schema_version (version) VALUES (%d)",
                 PM_REGISTRY_SCHEMA_VERSION);
        if (exec(r->db, sql, err) != 0)
            goto fail;
    }
    /* Migrations from version N to N+1 go here, each in this transaction. */
    return exec(r->db, "COMMIT", err);
fail:
    sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static int open_db(const char *path, int flags, sqlite3 **out, pm_error *err)
{
    *out = NULL;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        pm_error_set(err, PM_ERR_IO, "registry '%s': %s", path,
                     db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    *out = db;
    return 0;
}

/* ---- writes (durability thread) ---- */

static int sqlite_begin_run(pm_registry *base, const char *run_id, const char *command, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    sqlite3_stmt *st;
    if (prepare(r->db, "INSERT INTO runs (run_id, command, started_at) VALUES (?, ?, ?)", &st, err) != 0)
        return -1;
    bind_text(st, 1, run_id);
    bind_text(st, 2, command);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
    int rc = step_done(r->db, st, "insert run", err);
    sqlite3_finalize(st);
    return rc;
}

static int sqlite_end_run(pm_registry *base, const char *run_id,
                          const uint64_t counts[PM_OUTCOME_COUNT], pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    sqlite3_stmt *st;
    if (prepare(r->db, "UPDATE runs SET finished_at = ?, passes = ?, unchanged = ?, rejects = ?,"
                       " failed = ? WHERE run_id = ?", &st, err) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
    sqlite3_bind_int64(st, 2, (sqlite3_int64)counts[PM_OUTCOME_PASS]);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)counts[PM_OUTCOME_UNCHANGED]);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)counts[PM_OUTCOME_REJECT]);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)counts[PM_OUTCOME_FAILED]);
    bind_text(st, 6, run_id);
    int rc = step_done(r->db, st, "update run", err);
    sqlite3_finalize(st);
    return rc;
}

/* 0 written, 1 not written because the row is no longer the one the pass was
 * built on (job->expect_tag), -1 error. */
static int apply_pass(sqlite_registry *r, const char *run_id, const pm_job *job, int64_t tag,
                      const char *origin, pm_error *err)
{
    char sha[65], pkpass_key[128], qr_key[128];
    pm_hex_encode(job->pkpass_sha256, sizeof job->pkpass_sha256, sha);
    pm_store_pass_keys(job->serial, pkpass_key, sizeof pkpass_key, qr_key, sizeof qr_key);
    /* The fingerprint stage leaves the canonical text in the job; a job made
     * another way gets it here. */
    char *dumped = job->record_json.len ? NULL : json_dumps(job->record, JSON_COMPACT | JSON_SORT_KEYS);
    if (!job->record_json.len && !dumped)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory for the registry row of %s", job->serial);
    sqlite3_stmt *st = r->upsert;
    bind_text(st, 1, job->serial);
    bind_text(st, 2, pm_registry_record_text(job, "template_id"));
    bind_text(st, 3, job->tmpl ? job->tmpl->version : "");
    bind_text(st, 4, pm_registry_event_id(job));
    bind_text(st, 5, job->status ? job->status : "active");
    if (dumped)
        sqlite3_bind_text(st, 6, dumped, -1, free);
    else /* the job outlives the statement's step */
        sqlite3_bind_text(st, 6, (const char *)job->record_json.data, (int)job->record_json.len,
                          SQLITE_STATIC);
    bind_text(st, 7, job->content_hash);
    bind_text(st, 8, sha);
    bind_text(st, 9, pkpass_key);
    bind_text(st, 10, qr_key);
    bind_text(st, 11, job->auth_token);
    sqlite3_bind_int64(st, 12, job->now);
    sqlite3_bind_int64(st, 13, tag);
    bind_text(st, 14, run_id);
    bind_text(st, 15, origin);
    sqlite3_bind_int64(st, 16, job->expect_tag);
    if (step_done(r->db, st, "upsert pass", err) != 0)
        return -1;
    if (sqlite3_changes(r->db) == 0)
        return 1; /* the row changed since the lookup: the caller sends the job back */
    bind_text(r->del_groups, 1, job->serial);
    if (step_done(r->db, r->del_groups, "delete pass groups", err) != 0)
        return -1;
    json_t *groups = json_object_get(job->record, "pass_group_ids");
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g) {
        bind_text(r->add_group, 1, job->serial);
        bind_text(r->add_group, 2, json_string_value(g));
        if (step_done(r->db, r->add_group, "insert pass group", err) != 0)
            return -1;
    }
    return 0;
}

static int apply_result(sqlite_registry *r, const char *run_id, const pm_job *job,
                        const char *origin, pm_error *err)
{
    char sha[65], pkpass_key[128], qr_key[128];
    if (job->outcome == PM_OUTCOME_UNCHANGED)
        snprintf(sha, sizeof sha, "%s", job->prior_sha256);
    else
        pm_hex_encode(job->pkpass_sha256, sizeof job->pkpass_sha256, sha);
    pm_store_pass_keys(job->serial, pkpass_key, sizeof pkpass_key, qr_key, sizeof qr_key);
    sqlite3_stmt *st = r->add_result;
    bind_text(st, 1, run_id);
    bind_text(st, 2, job->serial);
    bind_text(st, 3, pm_outcome_kind_name(job->outcome));
    bind_text(st, 4, pm_registry_record_text(job, "action"));
    bind_text(st, 5, job->status ? job->status : "active");
    bind_text(st, 6, pm_registry_record_text(job, "template_id"));
    bind_text(st, 7, job->tmpl ? job->tmpl->version : NULL);
    bind_text(st, 8, sha);
    bind_text(st, 9, pkpass_key);
    bind_text(st, 10, qr_key);
    bind_text(st, 11, origin);
    sqlite3_bind_int64(st, 12, job->now);
    return step_done(r->db, st, "insert result", err);
}

static int apply_reject(sqlite_registry *r, const char *run_id, const pm_job *job,
                        const char *origin, pm_error *err)
{
    json_t *line = pm_outcome_reject_json(job);
    if (!line)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory for a reject row");
    json_t *rec = json_object_get(line, "record");
    char *record = rec ? json_dumps(rec, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    sqlite3_stmt *st = r->add_reject;
    bind_text(st, 1, run_id);
    bind_text(st, 2, json_string_value(json_object_get(line, "serial")));
    bind_text(st, 3, json_string_value(json_object_get(line, "code")));
    bind_text(st, 4, job->err.field);
    bind_text(st, 5, job->err.message);
    if (record)
        sqlite3_bind_text(st, 6, record, -1, free);
    else
        sqlite3_bind_null(st, 6);
    bind_text(st, 7, json_string_value(json_object_get(line, "record_base64")));
    bind_text(st, 8, origin);
    sqlite3_bind_int64(st, 9, job->now);
    int rc = step_done(r->db, st, "insert reject", err);
    json_decref(line);
    return rc;
}

static int sqlite_apply(pm_registry *base, const char *run_id, pm_job *const *jobs, size_t n,
                        pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    if (n == 0)
        return 0;
    if (exec(r->db, "BEGIN IMMEDIATE", err) != 0)
        return -1;
    int64_t tag = 0;
    if (sqlite3_step(r->get_tag) == SQLITE_ROW)
        tag = sqlite3_column_int64(r->get_tag, 0);
    sqlite3_reset(r->get_tag);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        pm_job *job = jobs[i];
        char origin[320];
        pm_origin_format(&job->origin, origin, sizeof origin);
        job->conflict = false;
        switch (job->outcome) {
        case PM_OUTCOME_PASS:
            rc = apply_pass(r, run_id, job, ++tag, origin, err);
            if (rc == 1) { /* nothing of it written; the engine makes it again */
                job->conflict = true;
                tag--;
                rc = 0;
            } else if (rc == 0) {
                rc = apply_result(r, run_id, job, origin, err);
            }
            break;
        case PM_OUTCOME_UNCHANGED:
            rc = apply_result(r, run_id, job, origin, err);
            break;
        case PM_OUTCOME_REJECT:
        case PM_OUTCOME_FAILED:
            rc = apply_reject(r, run_id, job, origin, err);
            break;
        default:
            rc = pm_error_set(err, PM_ERR_INTERNAL, "registry: job without an outcome");
        }
    }
    if (rc == 0) {
        sqlite3_bind_int64(r->set_tag, 1, tag);
        rc = step_done(r->db, r->set_tag, "update the update tag", err);
    }
    if (rc == 0 && exec(r->db, "COMMIT", err) == 0)
        return 0;
    sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ---- reads (one reader per worker thread) ---- */

static int sqlite_reader_open(pm_registry *base, pm_registry_reader **out, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    *out = NULL;
    sqlite_reader *rd = calloc(1, sizeof *rd);
    if (!rd)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    rd->base.ops = &sqlite_ops;
    if (open_db(r->path, SQLITE_OPEN_READONLY, &rd->db, err) != 0 ||
        prepare(rd->db, "SELECT status, content_hash, pkpass_sha256, auth_token, update_tag, record"
                        " FROM passes WHERE serial = ?", &rd->lookup, err) != 0) {
        sqlite3_close(rd->db);
        free(rd);
        return -1;
    }
    *out = &rd->base;
    return 0;
}

static void sqlite_reader_close(pm_registry_reader *base)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    if (!rd)
        return;
    sqlite3_finalize(rd->lookup);
    sqlite3_close(rd->db);
    free(rd);
}

static void copy_col(sqlite3_stmt *st, int col, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(out, cap, "%s", t ? (const char *)t : "");
}

static int sqlite_lookup(pm_registry_reader *base, const char *serial, bool with_record,
                         pm_registry_pass *out, pm_error *err)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    memset(out, 0, sizeof *out);
    bind_text(rd->lookup, 1, serial);
    int rc = sqlite3_step(rd->lookup);
    int found = 0;
    if (rc == SQLITE_ROW) {
        copy_col(rd->lookup, 0, out->status, sizeof out->status);
        copy_col(rd->lookup, 1, out->content_hash, sizeof out->content_hash);
        copy_col(rd->lookup, 2, out->pkpass_sha256, sizeof out->pkpass_sha256);
        copy_col(rd->lookup, 3, out->auth_token, sizeof out->auth_token);
        out->update_tag = sqlite3_column_int64(rd->lookup, 4);
        if (with_record) {
            const char *text = (const char *)sqlite3_column_text(rd->lookup, 5);
            out->record = text ? json_loads(text, 0, NULL) : NULL;
        }
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = db_error(err, sqlite3_db_handle(rd->lookup), "lookup");
    }
    sqlite3_reset(rd->lookup);
    sqlite3_clear_bindings(rd->lookup);
    return found;
}

/* ---- queries (main thread, writer connection) ---- */

static json_t *col_json(sqlite3_stmt *st, int col)
{
    switch (sqlite3_column_type(st, col)) {
    case SQLITE_NULL: return json_null();
    case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(st, col));
    default: return json_string((const char *)sqlite3_column_text(st, col));
    }
}

/* The row builders' cursor over the statement's current row. */
static json_t *cols_json(void *st, int i) { return col_json(st, i); }
static int64_t cols_integer(void *st, int i) { return sqlite3_column_int64(st, i); }
static const char *cols_text(void *st, int i) { return (const char *)sqlite3_column_text(st, i); }

static pm_registry_cols cols_of(sqlite3_stmt *st)
{
    return (pm_registry_cols){cols_json, cols_integer, cols_text, st};
}

static json_t *sqlite_show(pm_registry *base, const char *serial, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    pm_error_clear(err);
    sqlite3_stmt *st;
    if (prepare(r->db, "SELECT " PM_REGISTRY_SHOW_COLUMNS " FROM passes WHERE serial = ?", &st, err) != 0)
        return NULL;
    bind_text(st, 1, serial);
    json_t *row = NULL;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        pm_registry_cols c = cols_of(st);
        if (!(row = pm_registry_show_row(&c)))
            pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    } else if (rc != SQLITE_DONE) {
        db_error(err, r->db, "show");
    }
    sqlite3_finalize(st);
    if (row) {
        json_t *groups = json_array();
        if (prepare(r->db, "SELECT group_id FROM pass_groups WHERE serial = ? ORDER BY group_id",
                    &st, err) == 0) {
            bind_text(st, 1, serial);
            while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(groups, col_json(st, 0));
            sqlite3_finalize(st);
        }
        json_object_set_new(row, "pass_group_ids", groups);
    }
    return row;
}

/* " AND ..." clauses of a filter; binds in the same order (bind_filter). */
static void filter_sql(const pm_registry_filter *f, const char *serial_col, const char *time_col,
                       bool passes_table, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    if (f->event_id && passes_table)
        n += (size_t)snprintf(out + n, cap - n, " AND event_id = ?");
    else if (f->event_id)
        n += (size_t)snprintf(out + n, cap - n,
                              " AND %s IN (SELECT serial FROM passes WHERE event_id = ?)", serial_col);
    if (f->group_id && n < cap)
        n += (size_t)snprintf(out + n, cap - n,
                              " AND %s IN (SELECT serial FROM pass_groups WHERE group_id = ?)", serial_col);
    if (f->run_id && !passes_table && n < cap)
        n += (size_t)snprintf(out + n, cap - n, " AND run_id = ?");
    if (f->since && time_col && n < cap)
        snprintf(out + n, cap - n, " AND %s >= ?", time_col);
}

static void bind_filter(sqlite3_stmt *st, const pm_registry_filter *f, bool passes_table, bool with_time)
{
    int i = 1;
    if (f->event_id)
        bind_text(st, i++, f->event_id);
    if (f->group_id)
        bind_text(st, i++, f->group_id);
    if (f->run_id && !passes_table)
        bind_text(st, i++, f->run_id);
    if (f->since && with_time)
        sqlite3_bind_int64(st, i, f->since);
}

static int sqlite_stats(pm_registry *base, const pm_registry_filter *f, pm_registry_stats *out,
                        pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    memset(out, 0, sizeof *out);
    char where[512], sql[768];
    filter_sql(f, "serial", NULL, true, where, sizeof where);
    snprintf(sql, sizeof sql, "SELECT status, count(*) FROM passes WHERE 1 = 1%s GROUP BY status", where);
    sqlite3_stmt *st;
    if (prepare(r->db, sql, &st, err) != 0)
        return -1;
    bind_filter(st, f, true, false);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 0);
        uint64_t c = (uint64_t)sqlite3_column_int64(st, 1);
        if (strcmp(s, "active") == 0) out->active = c;
        else if (strcmp(s, "voided") == 0) out->voided = c;
        else if (strcmp(s, "expired") == 0) out->expired = c;
        else if (strcmp(s, "redeemed") == 0) out->redeemed = c;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_error(err, r->db, "stats");
    filter_sql(f, "serial", NULL, false, where, sizeof where);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM rejects WHERE 1 = 1%s", where);
    if (prepare(r->db, sql, &st, err) != 0)
        return -1;
    bind_filter(st, f, false, false);
    if (sqlite3_step(st) == SQLITE_ROW)
        out->rejects = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return 0;
}

static int sqlite_export(pm_registry *base, const pm_registry_filter *f, pm_registry_row_fn fn,
                         void *arg, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    char where[512], sql[1024];
    sqlite3_stmt *st;
    int stop = 0, rc;

    filter_sql(f, "serial", "at", false, where, sizeof where);
    snprintf(sql, sizeof sql,
             "SELECT " PM_REGISTRY_RESULT_COLUMNS " FROM results WHERE 1 = 1%s ORDER BY id", where);
    if (prepare(r->db, sql, &st, err) != 0)
        return -1;
    bind_filter(st, f, false, true);
    pm_registry_cols c = cols_of(st);
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = pm_registry_result_row(&c);
        stop = !row || fn(arg, row) != 0;
        json_decref(row);
    }
    sqlite3_finalize(st);
    if (stop)
        return 0;
    if (rc != SQLITE_DONE)
        return db_error(err, r->db, "export results");

    snprintf(sql, sizeof sql,
             "SELECT " PM_REGISTRY_REJECT_COLUMNS " FROM rejects WHERE 1 = 1%s ORDER BY id", where);
    if (prepare(r->db, sql, &st, err) != 0)
        return -1;
    bind_filter(st, f, false, true);
    c = cols_of(st);
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = pm_registry_reject_row(&c);
        stop = !row || fn(arg, row) != 0;
        json_decref(row);
    }
    sqlite3_finalize(st);
    if (!stop && rc != SQLITE_DONE)
        return db_error(err, r->db, "export rejects");
    return 0;
}

static void sqlite_close(pm_registry *base)
{
    sqlite_registry *r = (sqlite_registry *)base;
    sqlite3_stmt *sts[] = {r->upsert, r->del_groups, r->add_group, r->add_result,
                           r->add_reject, r->get_tag, r->set_tag};
    for (size_t i = 0; i < sizeof sts / sizeof sts[0]; i++)
        sqlite3_finalize(sts[i]);
    sqlite3_close(r->db);
    free(r->path);
    free(r);
}

static const pm_registry_ops sqlite_ops = {
    .name = "sqlite",
    .begin_run = sqlite_begin_run,
    .apply = sqlite_apply,
    .end_run = sqlite_end_run,
    .reader_open = sqlite_reader_open,
    .reader_close = sqlite_reader_close,
    .lookup = sqlite_lookup,
    .show = sqlite_show,
    .stats = sqlite_stats,
    .export_rows = sqlite_export,
    .close = sqlite_close,
};

int pm_registry_sqlite_open(const char *path, pm_registry **out, pm_error *err)
{
    *out = NULL;
    sqlite_registry *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    r->base.ops = &sqlite_ops;
    if (open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &r->db, err) != 0)
        goto fail;
    /* WAL: readers never block the writer; FULL: a commit is on disk when
     * COMMIT returns, which is what "done" means here. */
    if (exec(r->db, "PRAGMA journal_mode = WAL", err) != 0 ||
        exec(r->db, "PRAGMA synchronous = FULL", err) != 0 ||
        exec(r->db, "PRAGMA foreign_keys = ON", err) != 0 || ensure_schema(r, err) != 0)
        goto fail;
    if (prepare(r->db,
                "INSERT INTO passes (serial, template_id, template_version, event_id, status, record,"
                " content_hash, pkpass_sha256, pkpass_key, qr_key, auth_token, created_at, updated_at,"
                " update_tag, run_id, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
                " ?12, ?12, ?13, ?14, ?15)"
                " ON CONFLICT (serial) DO UPDATE SET template_id = excluded.template_id,"
                " template_version = excluded.template_version, event_id = excluded.event_id,"
                " status = excluded.status, record = excluded.record,"
                " content_hash = excluded.content_hash, pkpass_sha256 = excluded.pkpass_sha256,"
                " pkpass_key = excluded.pkpass_key, qr_key = excluded.qr_key,"
                " updated_at = excluded.updated_at, update_tag = excluded.update_tag,"
                " run_id = excluded.run_id, origin = excluded.origin"
                /* only over the row the pass was built on (job.h: expect_tag) */
                " WHERE ?16 = 0 OR passes.update_tag = ?16",
                &r->upsert, err) != 0 ||
        prepare(r->db, "DELETE FROM pass_groups WHERE serial = ?", &r->del_groups, err) != 0 ||
        prepare(r->db, "INSERT OR IGNORE INTO pass_groups (serial, group_id) VALUES (?, ?)",
                &r->add_group, err) != 0 ||
        prepare(r->db,
                "INSERT INTO results (run_id, serial, outcome, action, status, template_id,"
                " template_version, pkpass_sha256, pkpass_key, qr_key, origin, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", &r->add_result, err) != 0 ||
        prepare(r->db,
                "INSERT INTO rejects (run_id, serial, code, field, reason, record, record_base64,"
                " origin, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", &r->add_reject, err) != 0 ||
        prepare(r->db, "SELECT value FROM counters WHERE name = 'update_tag'", &r->get_tag, err) != 0 ||
        prepare(r->db, "UPDATE counters SET value = ? WHERE name = 'update_tag'", &r->set_tag, err) != 0)
        goto fail;
    *out = &r->base;
    return 0;
fail:
    sqlite_close(&r->base);
    return -1;
}
