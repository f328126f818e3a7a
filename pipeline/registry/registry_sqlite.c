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
    sqlite3_stmt *any_registration, *queue_pushes;
} sqlite_registry;

typedef struct sqlite_reader {
    pm_registry_reader base;
    sqlite3 *db;
    sqlite3_stmt *lookup;
    /* service readers only (service_open), else NULL */
    sqlite3_stmt *info, *dev_upsert, *reg_add, *reg_del, *dev_gc, *since, *stats;
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

/*
 * Version 2: the Apple Wallet web service and its pushes.  devices and
 * registrations are what devices told `serve` (Apple's register /
 * unregister endpoints); push_outbox holds one row per push still to send,
 * written in the same transaction as the pass change that needs it, and
 * deleted once APNs accepted it (or the device is gone).
 */
static const char *const schema_v2[] = {
    "CREATE TABLE devices ("
    " device_id TEXT PRIMARY KEY, push_token TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
    "CREATE TABLE registrations ("
    " device_id TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,"
    " pass_type_id TEXT NOT NULL,"
    " serial TEXT NOT NULL REFERENCES passes (serial) ON DELETE CASCADE,"
    " created_at INTEGER NOT NULL, PRIMARY KEY (device_id, pass_type_id, serial))",
    "CREATE INDEX registrations_serial ON registrations (serial)",
    "CREATE TABLE push_outbox ("
    " id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, push_token TEXT NOT NULL,"
    " pass_type_id TEXT NOT NULL, serial TEXT NOT NULL, update_tag INTEGER NOT NULL,"
    " queued_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_at INTEGER NOT NULL,"
    " state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'failed')),"
    " last_status INTEGER, last_reason TEXT)",
    "CREATE INDEX push_outbox_due ON push_outbox (state, next_attempt_at, id)",
    NULL,
};

/* schema_steps[v] takes a registry from version v to v + 1. */
static const char *const *const schema_steps[] = {schema_v1, schema_v2, pm_registry_schema_v3};
_Static_assert(sizeof schema_steps / sizeof schema_steps[0] == PM_REGISTRY_SCHEMA_VERSION,
               "one schema step per version");

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

/*
 * The same without the copy, for the writer's per-pass statements (a
 * copy and a free per value were a tenth of apply()'s instructions): s
 * must stay valid until step_done(), which clears the bindings.
 */
static int bind_static(sqlite3_stmt *st, int i, const char *s)
{
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
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
    /* Version 0 is a new file: every step from the first.  Each step and its
     * version row are in this one transaction, so a crash leaves the old
     * schema or the new, never half. */
    for (int v = version; v < PM_REGISTRY_SCHEMA_VERSION; v++) {
        for (size_t i = 0; schema_steps[v][i]; i++)
            if (exec(r->db, schema_steps[v][i], err) != 0)
                goto fail;
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO schema_version (version) VALUES (%d)", v + 1);
        if (exec(r->db, sql, err) != 0)
            goto fail;
    }
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
    pm_buf scratch = PM_BUF_INIT;
    const char *record = pm_registry_row_record(job, &scratch, err);
    if (!record)
        return -1;
    sqlite3_stmt *st = r->upsert;
    bind_static(st, 1, job->serial);
    bind_static(st, 2, pm_registry_record_text(job, "template_id"));
    bind_static(st, 3, job->tmpl ? job->tmpl->version : "");
    bind_static(st, 4, pm_registry_event_id(job));
    bind_static(st, 5, job->status ? job->status : "active");
    bind_static(st, 6, record);
    bind_static(st, 7, job->content_hash);
    bind_static(st, 8, sha);
    bind_static(st, 9, pkpass_key);
    bind_static(st, 10, qr_key);
    bind_static(st, 11, job->auth_token);
    sqlite3_bind_int64(st, 12, job->now);
    sqlite3_bind_int64(st, 13, tag);
    bind_static(st, 14, run_id);
    bind_static(st, 15, origin);
    sqlite3_bind_int64(st, 16, job->expect_tag);
    int stepped = step_done(r->db, st, "upsert pass", err);
    pm_buf_free(&scratch); /* the bindings are cleared */
    if (stepped != 0)
        return -1;
    if (sqlite3_changes(r->db) == 0)
        return 1; /* the row changed since the lookup: the caller sends the job back */
    /* A row just inserted (expected absent) has no groups yet: passes rows
     * are never deleted, and pass_groups rows need theirs (foreign key). */
    if (job->expect_tag != PM_TAG_ABSENT) {
        bind_static(r->del_groups, 1, job->serial);
        if (step_done(r->db, r->del_groups, "delete pass groups", err) != 0)
            return -1;
    }
    json_t *groups = json_object_get(job->record, "pass_group_ids");
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g) {
        bind_static(r->add_group, 1, job->serial);
        bind_static(r->add_group, 2, json_string_value(g));
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
    bind_static(st, 1, run_id);
    bind_static(st, 2, job->serial);
    bind_static(st, 3, pm_outcome_kind_name(job->outcome));
    bind_static(st, 4, pm_registry_record_text(job, "action"));
    bind_static(st, 5, job->status ? job->status : "active");
    bind_static(st, 6, pm_registry_record_text(job, "template_id"));
    bind_static(st, 7, job->tmpl ? job->tmpl->version : NULL);
    bind_static(st, 8, sha);
    bind_static(st, 9, pkpass_key);
    bind_static(st, 10, qr_key);
    bind_static(st, 11, origin);
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
    /* One probe per batch: with no registration at all (a registry that
     * serves no devices) a pass change costs no outbox statement. */
    bool pushes = sqlite3_step(r->any_registration) == SQLITE_ROW &&
                  sqlite3_column_int(r->any_registration, 0) != 0;
    sqlite3_reset(r->any_registration);
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
                if (rc == 0 && pushes) {
                    sqlite3_bind_int64(r->queue_pushes, 1, tag);
                    sqlite3_bind_int64(r->queue_pushes, 2, (sqlite3_int64)time(NULL));
                    bind_static(r->queue_pushes, 3, job->serial);
                    rc = step_done(r->db, r->queue_pushes, "queue pushes", err);
                }
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
        prepare(rd->db, "SELECT status, content_hash, pkpass_sha256, auth_token, update_tag, record,"
                        " created_at FROM passes WHERE serial = ?", &rd->lookup, err) != 0) {
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
    sqlite3_stmt *sts[] = {rd->info, rd->dev_upsert, rd->reg_add, rd->reg_del, rd->dev_gc,
                           rd->since, rd->stats};
    for (size_t i = 0; i < sizeof sts / sizeof sts[0]; i++)
        sqlite3_finalize(sts[i]);
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
        out->created_at = sqlite3_column_int64(rd->lookup, 6);
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

/* ---- the web service (one service reader per serve thread) ---- */

static int sqlite_service_open(pm_registry *base, pm_registry_reader **out, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    *out = NULL;
    sqlite_reader *rd = calloc(1, sizeof *rd);
    if (!rd)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    rd->base.ops = &sqlite_ops;
    /* Read-write: registrations are written by serve's threads, each on its
     * own connection; WAL and the busy timeout order them with run's writer. */
    if (open_db(r->path, SQLITE_OPEN_READWRITE, &rd->db, err) != 0 ||
        exec(rd->db, "PRAGMA foreign_keys = ON", err) != 0 ||
        prepare(rd->db, "SELECT status, content_hash, pkpass_sha256, auth_token, update_tag, record"
                        " FROM passes WHERE serial = ?", &rd->lookup, err) != 0 ||
        prepare(rd->db, "SELECT status, auth_token, pkpass_key, qr_key, updated_at, update_tag"
                        " FROM passes WHERE serial = ?", &rd->info, err) != 0 ||
        prepare(rd->db, "INSERT INTO devices (device_id, push_token, created_at, updated_at)"
                        " VALUES (?1, ?2, ?3, ?3) ON CONFLICT (device_id) DO UPDATE SET"
                        " push_token = excluded.push_token, updated_at = excluded.updated_at"
                        " WHERE push_token <> excluded.push_token", &rd->dev_upsert, err) != 0 ||
        prepare(rd->db, "INSERT OR IGNORE INTO registrations (device_id, pass_type_id, serial,"
                        " created_at) VALUES (?, ?, ?, ?)", &rd->reg_add, err) != 0 ||
        prepare(rd->db, "DELETE FROM registrations WHERE device_id = ? AND pass_type_id = ?"
                        " AND serial = ?", &rd->reg_del, err) != 0 ||
        prepare(rd->db, "DELETE FROM devices WHERE device_id = ?1 AND NOT EXISTS"
                        " (SELECT 1 FROM registrations WHERE device_id = ?1)", &rd->dev_gc, err) != 0 ||
        prepare(rd->db, "SELECT p.serial, p.update_tag FROM registrations g"
                        " JOIN passes p ON p.serial = g.serial WHERE g.device_id = ?"
                        " AND g.pass_type_id = ? AND p.update_tag > ? ORDER BY p.update_tag",
                &rd->since, err) != 0 ||
        prepare(rd->db, "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM registrations),"
                        " (SELECT count(*) FROM push_outbox WHERE state = 'queued'),"
                        " (SELECT count(*) FROM push_outbox WHERE state = 'failed')",
                &rd->stats, err) != 0) {
        sqlite_reader_close(&rd->base);
        return -1;
    }
    *out = &rd->base;
    return 0;
}

static int sqlite_pass_info(pm_registry_reader *base, const char *serial,
                            pm_registry_service_pass *out, pm_error *err)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    memset(out, 0, sizeof *out);
    bind_text(rd->info, 1, serial);
    int rc = sqlite3_step(rd->info), found = 0;
    if (rc == SQLITE_ROW) {
        copy_col(rd->info, 0, out->status, sizeof out->status);
        copy_col(rd->info, 1, out->auth_token, sizeof out->auth_token);
        copy_col(rd->info, 2, out->pkpass_key, sizeof out->pkpass_key);
        copy_col(rd->info, 3, out->qr_key, sizeof out->qr_key);
        out->updated_at = sqlite3_column_int64(rd->info, 4);
        out->update_tag = sqlite3_column_int64(rd->info, 5);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = db_error(err, rd->db, "pass info");
    }
    sqlite3_reset(rd->info);
    sqlite3_clear_bindings(rd->info);
    return found;
}

static int sqlite_register_device(pm_registry_reader *base, const char *device_id,
                                  const char *push_token, const char *pass_type_id,
                                  const char *serial, int64_t now, pm_error *err)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    if (exec(rd->db, "BEGIN IMMEDIATE", err) != 0)
        return -1;
    bind_text(rd->dev_upsert, 1, device_id);
    bind_text(rd->dev_upsert, 2, push_token);
    sqlite3_bind_int64(rd->dev_upsert, 3, now);
    if (step_done(rd->db, rd->dev_upsert, "register device", err) != 0)
        goto fail;
    bind_text(rd->reg_add, 1, device_id);
    bind_text(rd->reg_add, 2, pass_type_id);
    bind_text(rd->reg_add, 3, serial);
    sqlite3_bind_int64(rd->reg_add, 4, now);
    if (step_done(rd->db, rd->reg_add, "register pass", err) != 0)
        goto fail;
    int added = sqlite3_changes(rd->db) > 0;
    if (exec(rd->db, "COMMIT", err) != 0)
        goto fail;
    return added;
fail:
    sqlite3_exec(rd->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static int sqlite_unregister_device(pm_registry_reader *base, const char *device_id,
                                    const char *pass_type_id, const char *serial, pm_error *err)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    if (exec(rd->db, "BEGIN IMMEDIATE", err) != 0)
        return -1;
    bind_text(rd->reg_del, 1, device_id);
    bind_text(rd->reg_del, 2, pass_type_id);
    bind_text(rd->reg_del, 3, serial);
    if (step_done(rd->db, rd->reg_del, "unregister pass", err) != 0)
        goto fail;
    int removed = sqlite3_changes(rd->db) > 0;
    bind_text(rd->dev_gc, 1, device_id);
    if (step_done(rd->db, rd->dev_gc, "remove device", err) != 0 || exec(rd->db, "COMMIT", err) != 0)
        goto fail;
    return removed;
fail:
    sqlite3_exec(rd->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static long sqlite_serials_since(pm_registry_reader *base, const char *device_id,
                                 const char *pass_type_id, int64_t since,
                                 pm_registry_serial_fn fn, void *arg, int64_t *last_tag,
                                 pm_error *err)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    *last_tag = since;
    bind_text(rd->since, 1, device_id);
    bind_text(rd->since, 2, pass_type_id);
    sqlite3_bind_int64(rd->since, 3, since);
    long n = 0;
    int rc;
    while ((rc = sqlite3_step(rd->since)) == SQLITE_ROW) {
        n++;
        *last_tag = sqlite3_column_int64(rd->since, 1);
        if (fn(arg, (const char *)sqlite3_column_text(rd->since, 0)) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE)
        n = db_error(err, rd->db, "serials since");
    sqlite3_reset(rd->since);
    sqlite3_clear_bindings(rd->since);
    return n;
}

static int sqlite_service_stats(pm_registry_reader *base, pm_registry_service_stats *out,
                                pm_error *err)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    memset(out, 0, sizeof *out);
    int rc = sqlite3_step(rd->stats);
    if (rc == SQLITE_ROW) {
        out->devices = (uint64_t)sqlite3_column_int64(rd->stats, 0);
        out->registrations = (uint64_t)sqlite3_column_int64(rd->stats, 1);
        out->outbox_queued = (uint64_t)sqlite3_column_int64(rd->stats, 2);
        out->outbox_failed = (uint64_t)sqlite3_column_int64(rd->stats, 3);
    }
    sqlite3_reset(rd->stats);
    return rc == SQLITE_ROW ? 0 : db_error(err, rd->db, "service stats");
}

/* " AND ..." clauses of a selection, parameters ?2 (event), ?3 (group),
 * ?4 (template): a missing one is left out so the indexes still serve. */
static void selection_sql(const pm_registry_selection *sel, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s", sel->event_id ? " AND event_id = ?2" : "",
             sel->group_id ? " AND serial IN (SELECT serial FROM pass_groups WHERE group_id = ?3)" : "",
             sel->template_id ? " AND template_id = ?4" : "");
}

static void bind_selection(sqlite3_stmt *st, const pm_registry_selection *sel)
{
    if (sel->event_id)
        bind_text(st, 2, sel->event_id);
    if (sel->group_id)
        bind_text(st, 3, sel->group_id);
    if (sel->template_id)
        bind_text(st, 4, sel->template_id);
}

static int sqlite_scan(pm_registry_reader *base, const pm_registry_selection *sel, const char *after,
                       unsigned limit, pm_registry_scan_fn fn, void *arg, pm_error *err)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    char where[256], sql[640];
    selection_sql(sel, where, sizeof where);
    snprintf(sql, sizeof sql,
             "SELECT serial, status, template_id, template_version, content_hash, record"
             " FROM passes WHERE serial > ?1%s ORDER BY serial LIMIT ?5", where);
    sqlite3_stmt *st;
    if (prepare(rd->db, sql, &st, err) != 0)
        return -1;
    bind_text(st, 1, after ? after : "");
    bind_selection(st, sel);
    sqlite3_bind_int64(st, 5, limit);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        pm_registry_row row = {
            (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
            (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3),
            (const char *)sqlite3_column_text(st, 4), (const char *)sqlite3_column_text(st, 5),
        };
        n++;
        if (fn(arg, &row) != 0)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        n = db_error(err, rd->db, "scan");
    sqlite3_finalize(st);
    return n;
}

static int sqlite_count(pm_registry_reader *base, const pm_registry_selection *sel, uint64_t *out,
                        pm_error *err)
{
    sqlite_reader *rd = (sqlite_reader *)base;
    char where[256], sql[512];
    selection_sql(sel, where, sizeof where);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM passes WHERE serial > ?1%s", where);
    sqlite3_stmt *st;
    if (prepare(rd->db, sql, &st, err) != 0)
        return -1;
    bind_text(st, 1, "");
    bind_selection(st, sel);
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : db_error(err, rd->db, "count");
}

/* ---- queries (main thread, writer connection) ---- */

static int sqlite_template_versions(pm_registry *base, pm_registry_row_fn fn, void *arg, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    sqlite3_stmt *st;
    if (prepare(r->db, "SELECT template_id, template_version, count(*) FROM passes"
                       " GROUP BY template_id, template_version ORDER BY template_id, template_version",
                &st, err) != 0)
        return -1;
    int rc, stop = 0;
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = json_pack("{s:s, s:s, s:I}", "template_id", sqlite3_column_text(st, 0),
                                "template_version", sqlite3_column_text(st, 1),
                                "passes", (json_int_t)sqlite3_column_int64(st, 2));
        stop = row ? fn(arg, row) : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        json_decref(row);
    }
    if (!stop && rc != SQLITE_DONE)
        stop = db_error(err, r->db, "templates");
    sqlite3_finalize(st);
    return stop ? -1 : 0;
}

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


/* ---- pushes (a sender's own registry handle) ---- */

/* One outbox row per device registered for the serial (the queue_pushes
 * statement): ?1 update tag, ?2 now, ?3 serial. */
#define PUSH_QUEUE_SQL                                                                          \
    "INSERT INTO push_outbox (device_id, push_token, pass_type_id, serial, update_tag,"        \
    " queued_at, next_attempt_at)"                                                              \
    " SELECT g.device_id, d.push_token, g.pass_type_id, g.serial, ?1, ?2, ?2"                   \
    " FROM registrations g JOIN devices d ON d.device_id = g.device_id WHERE g.serial = ?3"

static void copy_text(sqlite3_stmt *st, int col, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(out, cap, "%s", t ? (const char *)t : "");
}

static int sqlite_push_claim(pm_registry *base, int64_t now, int64_t lease_until, pm_push_item *items,
                             size_t max, size_t *n, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    *n = 0;
    sqlite3_stmt *st;
    /* One statement is atomic under SQLite's write lock: two senders never
     * claim the same row. */
    if (prepare(r->db,
                "UPDATE push_outbox SET attempts = attempts + 1, next_attempt_at = ?1"
                " WHERE id IN (SELECT id FROM push_outbox WHERE state = 'queued'"
                " AND next_attempt_at <= ?2 ORDER BY next_attempt_at, id LIMIT ?3)"
                " RETURNING id, device_id, push_token, pass_type_id, serial, attempts",
                &st, err) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, lease_until);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)max);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
        pm_push_item *it = &items[(*n)++];
        it->id = sqlite3_column_int64(st, 0);
        copy_text(st, 1, it->device_id, sizeof it->device_id);
        copy_text(st, 2, it->push_token, sizeof it->push_token);
        copy_text(st, 3, it->pass_type_id, sizeof it->pass_type_id);
        copy_text(st, 4, it->serial, sizeof it->serial);
        it->attempts = sqlite3_column_int(st, 5);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        *n = 0;
        return db_error(err, r->db, "claim pushes");
    }
    return 0;
}

static int sqlite_push_settle(pm_registry *base, const pm_push_item *items, const pm_push_result *res,
                              size_t n, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    if (n == 0)
        return 0;
    static const char *const sql[] = {
        "DELETE FROM push_outbox WHERE id = ?1",
        "UPDATE push_outbox SET next_attempt_at = ?2, last_status = ?3, last_reason = ?4 WHERE id = ?1",
        "UPDATE push_outbox SET state = 'failed', last_status = ?3, last_reason = ?4 WHERE id = ?1",
        /* 410: the token is no longer valid for the topic.  Only while the
         * device still has that token: one it sent since is not gone. */
        "DELETE FROM registrations WHERE device_id = ?5 AND pass_type_id = ?6"
        " AND device_id IN (SELECT device_id FROM devices WHERE push_token = ?7)",
        "DELETE FROM devices WHERE device_id = ?5 AND push_token = ?7"
        " AND NOT EXISTS (SELECT 1 FROM registrations WHERE device_id = ?5)",
        "DELETE FROM push_outbox WHERE id = ?1 OR (device_id = ?5 AND push_token = ?7"
        " AND pass_type_id = ?6 AND state = 'queued')",
        "INSERT INTO counters (name, value) VALUES (?1, ?2)"
        " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
    };
    enum { N_SQL = sizeof sql / sizeof sql[0] };
    sqlite3_stmt *st[N_SQL] = {0};
    int rc = -1;
    if (exec(r->db, "BEGIN IMMEDIATE", err) != 0)
        return -1;
    for (size_t i = 0; i < N_SQL; i++)
        if (prepare(r->db, sql[i], &st[i], err) != 0)
            goto out;
    uint64_t counts[4] = {0};
    for (size_t i = 0; i < n; i++) {
        const pm_push_item *it = &items[i];
        const pm_push_result *pr = &res[i];
        int first = 0, last = 0;
        switch (pr->verdict) {
        case PM_PUSH_SENT: first = last = 0; break;
        case PM_PUSH_RETRY: first = last = 1; break;
        case PM_PUSH_FAILED: first = last = 2; break;
        case PM_PUSH_GONE: first = 3; last = 5; break;
        }
        counts[pr->verdict]++;
        for (int k = first; k <= last; k++) {
            sqlite3_stmt *s = st[k];
            int np = sqlite3_bind_parameter_count(s);
            for (int p = 1; p <= np; p++) {
                const char *name = sqlite3_bind_parameter_name(s, p);
                int which = name ? atoi(name + 1) : p;
                switch (which) {
                case 1: sqlite3_bind_int64(s, p, it->id); break;
                case 2: sqlite3_bind_int64(s, p, pr->retry_at); break;
                case 3: sqlite3_bind_int(s, p, pr->status); break;
                case 4: bind_text(s, p, pr->reason); break;
                case 5: bind_text(s, p, it->device_id); break;
                case 6: bind_text(s, p, it->pass_type_id); break;
                case 7: bind_text(s, p, it->push_token); break;
                }
            }
            if (step_done(r->db, s, "settle a push", err) != 0)
                goto out;
        }
    }
    static const char *const counter[4] = {"push_sent", "push_retried", "push_failed", "push_gone"};
    for (int k = 0; k < 4; k++) {
        if (!counts[k])
            continue;
        bind_text(st[N_SQL - 1], 1, counter[k]);
        sqlite3_bind_int64(st[N_SQL - 1], 2, (sqlite3_int64)counts[k]);
        if (step_done(r->db, st[N_SQL - 1], "push counters", err) != 0)
            goto out;
    }
    rc = exec(r->db, "COMMIT", err);
out:
    for (size_t i = 0; i < N_SQL; i++)
        sqlite3_finalize(st[i]);
    if (rc != 0)
        sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int sqlite_push_status(pm_registry *base, int64_t now, pm_push_status *out, pm_error *err)
{
    sqlite_registry *r = (sqlite_registry *)base;
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    if (prepare(r->db,
                "SELECT coalesce(sum(state = 'queued' AND next_attempt_at <= ?1), 0),"
                " coalesce(sum(state = 'queued' AND next_attempt_at > ?1), 0),"
                " coalesce(sum(state = 'failed'), 0),"
                " (SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'push_sent'),"
                " (SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'push_failed'),"
                " (SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'push_retried'),"
                " (SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'push_gone')"
                " FROM push_outbox", &st, err) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, now);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        uint64_t *f[] = {&out->due, &out->waiting, &out->failed, &out->sent, &out->failed_total,
                         &out->retried, &out->gone};
        for (int i = 0; i < 7; i++)
            *f[i] = (uint64_t)sqlite3_column_int64(st, i);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : db_error(err, r->db, "push status");
}

static void sqlite_close(pm_registry *base)
{
    sqlite_registry *r = (sqlite_registry *)base;
    sqlite3_stmt *sts[] = {r->upsert, r->del_groups, r->add_group, r->add_result,
                           r->add_reject, r->get_tag, r->set_tag, r->any_registration,
                           r->queue_pushes};
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
    .service_open = sqlite_service_open,
    .pass_info = sqlite_pass_info,
    .register_device = sqlite_register_device,
    .unregister_device = sqlite_unregister_device,
    .serials_since = sqlite_serials_since,
    .service_stats = sqlite_service_stats,
    .scan = sqlite_scan,
    .count = sqlite_count,
    .template_versions = sqlite_template_versions,
    .show = sqlite_show,
    .stats = sqlite_stats,
    .export_rows = sqlite_export,
    .push_claim = sqlite_push_claim,
    .push_settle = sqlite_push_settle,
    .push_status = sqlite_push_status,
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
        prepare(r->db, "UPDATE counters SET value = ? WHERE name = 'update_tag'", &r->set_tag, err) != 0 ||
        prepare(r->db, "SELECT EXISTS (SELECT 1 FROM registrations)", &r->any_registration, err) != 0 ||
        prepare(r->db, PUSH_QUEUE_SQL, &r->queue_pushes, err) != 0)
        goto fail;
    *out = &r->base;
    return 0;
fail:
    sqlite_close(&r->base);
    return -1;
}
