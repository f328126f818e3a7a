/*
 * registry_pg.c - the registry on PostgreSQL (Debian's libpq).
 *
 * Same tables, columns, constraints and indexes as registry_sqlite.c (types
 * spelled the PostgreSQL way: BIGINT, TEXT, BIGSERIAL), so several passmill
 * processes can share one registry.  What they share is serialised by the
 * database:
 *   - schema creation/migration holds a transaction-level advisory lock, so
 *     two processes starting at once do not both create the tables;
 *   - apply() locks the update_tag counter row (SELECT ... FOR UPDATE) first
 *     thing in its transaction, so batches of different processes commit one
 *     after another and update tags increase in commit order.
 *
 * Every statement is prepared or parameterised: record text never becomes
 * SQL.  The writer connection belongs to the thread that writes (the
 * durability thread; the main thread before and after the run); each reader
 * has its own connection.  A connection found broken is reset (and its
 * statements prepared again) before its next use.  Commits are synchronous:
 * apply() refuses synchronous_commit = off for its session.
 *
 * The password goes to libpq as the "password" keyword of
 * PQconnectdbParams; it is never put into a connection string, an error
 * message or a log line.
 */
#include "registry/registry.h"
#include "registry/registry_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "core/buf.h"
#include "core/utf8.h"
#include "outcomes/outcome.h"
#include "stores/store.h"
#include "wallet/template.h"

/* pg_advisory_xact_lock key for the schema check: "pmreg" in ASCII. */
#define SCHEMA_LOCK_KEY "482872550759"
/* PostgreSQL type OIDs (catalog/pg_type_d.h, server headers not needed). */
#define INT8OID 20
#define INT4OID 23

typedef struct pg_registry {
    pm_registry base;
    PGconn *conn;           /* the writer connection */
    char *conninfo;
    char *password;         /* kept for readers' connections; cleansed on close */
} pg_registry;

typedef struct pg_reader {
    pm_registry_reader base;
    PGconn *conn;
    bool service;           /* opened by service_open: its statements too */
} pg_reader;

static const pm_registry_ops pg_ops;

static const char *const schema_v1[] = {
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('update_tag', 0)",
    "CREATE TABLE runs ("
    " run_id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at BIGINT NOT NULL,"
    " finished_at BIGINT, passes BIGINT, unchanged BIGINT, rejects BIGINT, failed BIGINT)",
    "CREATE TABLE passes ("
    " serial TEXT PRIMARY KEY, template_id TEXT NOT NULL, template_version TEXT NOT NULL,"
    " event_id TEXT,"
    " status TEXT NOT NULL CHECK (status IN ('active', 'voided', 'expired', 'redeemed')),"
    " record TEXT NOT NULL, content_hash TEXT NOT NULL, pkpass_sha256 TEXT NOT NULL,"
    " pkpass_key TEXT NOT NULL, qr_key TEXT NOT NULL, auth_token TEXT NOT NULL,"
    " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, update_tag BIGINT NOT NULL,"
    " run_id TEXT NOT NULL, origin TEXT NOT NULL)",
    "CREATE INDEX passes_event ON passes (event_id)",
    "CREATE INDEX passes_update_tag ON passes (update_tag)",
    "CREATE TABLE pass_groups ("
    " serial TEXT NOT NULL REFERENCES passes (serial) ON DELETE CASCADE,"
    " group_id TEXT NOT NULL, PRIMARY KEY (serial, group_id))",
    "CREATE INDEX pass_groups_group ON pass_groups (group_id)",
    "CREATE TABLE results ("
    " id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, serial TEXT NOT NULL,"
    " outcome TEXT NOT NULL CHECK (outcome IN ('pass', 'unchanged')), action TEXT,"
    " status TEXT NOT NULL, template_id TEXT, template_version TEXT, pkpass_sha256 TEXT,"
    " pkpass_key TEXT, qr_key TEXT, origin TEXT NOT NULL, at BIGINT NOT NULL)",
    "CREATE INDEX results_run ON results (run_id)",
    "CREATE INDEX results_at ON results (at)",
    "CREATE TABLE rejects ("
    " id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, serial TEXT, code TEXT NOT NULL,"
    " field TEXT NOT NULL, reason TEXT NOT NULL, record TEXT, record_base64 TEXT,"
    " origin TEXT NOT NULL, at BIGINT NOT NULL)",
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
    " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE TABLE registrations ("
    " device_id TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,"
    " pass_type_id TEXT NOT NULL,"
    " serial TEXT NOT NULL REFERENCES passes (serial) ON DELETE CASCADE,"
    " created_at BIGINT NOT NULL, PRIMARY KEY (device_id, pass_type_id, serial))",
    "CREATE INDEX registrations_serial ON registrations (serial)",
    "CREATE TABLE push_outbox ("
    " id BIGSERIAL PRIMARY KEY, device_id TEXT NOT NULL, push_token TEXT NOT NULL,"
    " pass_type_id TEXT NOT NULL, serial TEXT NOT NULL, update_tag BIGINT NOT NULL,"
    " queued_at BIGINT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_at BIGINT NOT NULL,"
    " state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'failed')),"
    " last_status INTEGER, last_reason TEXT)",
    "CREATE INDEX push_outbox_due ON push_outbox (state, next_attempt_at, id)",
    NULL,
};

/* schema_steps[v] takes a registry from version v to v + 1. */
static const char *const *const schema_steps[] = {schema_v1, schema_v2, pm_registry_schema_v3};
_Static_assert(sizeof schema_steps / sizeof schema_steps[0] == PM_REGISTRY_SCHEMA_VERSION,
               "one schema step per version");

/* The writer's prepared statements: name, SQL. */
static const char *const writer_statements[][2] = {
    {"upsert",
     "INSERT INTO passes (serial, template_id, template_version, event_id, status, record,"
     " content_hash, pkpass_sha256, pkpass_key, qr_key, auth_token, created_at, updated_at,"
     " update_tag, run_id, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
     " $12::bigint, $12::bigint, $13::bigint, $14, $15)"
     " ON CONFLICT (serial) DO UPDATE SET template_id = excluded.template_id,"
     " template_version = excluded.template_version, event_id = excluded.event_id,"
     " status = excluded.status, record = excluded.record,"
     " content_hash = excluded.content_hash, pkpass_sha256 = excluded.pkpass_sha256,"
     " pkpass_key = excluded.pkpass_key, qr_key = excluded.qr_key,"
     " updated_at = excluded.updated_at, update_tag = excluded.update_tag,"
     " run_id = excluded.run_id, origin = excluded.origin"
     /* only over the row the pass was built on (job.h: expect_tag); apply()
      * checked it first, under the counter lock, so this never skips */
     " WHERE $16::bigint = 0 OR passes.update_tag = $16::bigint"},
    {"check_tag", "SELECT update_tag FROM passes WHERE serial = $1"},
    {"del_groups", "DELETE FROM pass_groups WHERE serial = $1"},
    {"add_group",
     "INSERT INTO pass_groups (serial, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"},
    {"add_result",
     "INSERT INTO results (run_id, serial, outcome, action, status, template_id,"
     " template_version, pkpass_sha256, pkpass_key, qr_key, origin, at)"
     " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::bigint)"},
    {"add_reject",
     "INSERT INTO rejects (run_id, serial, code, field, reason, record, record_base64,"
     " origin, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::bigint)"},
    /* FOR UPDATE: the lock that orders batches of every process sharing the registry. */
    {"get_tag", "SELECT value FROM counters WHERE name = 'update_tag' FOR UPDATE"},
    {"set_tag", "UPDATE counters SET value = $1::bigint WHERE name = 'update_tag'"},
    {"any_registration", "SELECT EXISTS (SELECT 1 FROM registrations)"},
    /* One outbox row per device registered for the serial: $1 tag, $2 now, $3 serial. */
    {"queue_pushes",
     "INSERT INTO push_outbox (device_id, push_token, pass_type_id, serial, update_tag,"
     " queued_at, next_attempt_at)"
     " SELECT g.device_id, d.push_token, g.pass_type_id, g.serial, $1::bigint, $2::bigint, $2::bigint"
     " FROM registrations g JOIN devices d ON d.device_id = g.device_id WHERE g.serial = $3"},
};

static const char *const reader_statements[][2] = {
    {"lookup", "SELECT status, content_hash, pkpass_sha256, auth_token, update_tag, record,"
               " created_at FROM passes WHERE serial = $1"},
};

/* A serve thread's reader: the lookup and the web service's statements. */
static const char *const service_statements[][2] = {
    {"info", "SELECT status, auth_token, pkpass_key, qr_key, updated_at, update_tag"
             " FROM passes WHERE serial = $1"},
    /* The push token is replaced when the device sends a new one. */
    {"dev_upsert", "INSERT INTO devices (device_id, push_token, created_at, updated_at)"
                   " VALUES ($1, $2, $3::bigint, $3::bigint) ON CONFLICT (device_id) DO UPDATE SET"
                   " push_token = excluded.push_token, updated_at = excluded.updated_at"
                   " WHERE devices.push_token <> excluded.push_token"},
    {"reg_add", "INSERT INTO registrations (device_id, pass_type_id, serial, created_at)"
                " VALUES ($1, $2, $3, $4::bigint) ON CONFLICT DO NOTHING"},
    {"reg_del", "DELETE FROM registrations WHERE device_id = $1 AND pass_type_id = $2"
                " AND serial = $3"},
    {"dev_gc", "DELETE FROM devices WHERE device_id = $1 AND NOT EXISTS"
               " (SELECT 1 FROM registrations WHERE device_id = $1)"},
    {"since", "SELECT p.serial, p.update_tag FROM registrations g JOIN passes p ON p.serial = g.serial"
              " WHERE g.device_id = $1 AND g.pass_type_id = $2 AND p.update_tag > $3::bigint"
              " ORDER BY p.update_tag"},
    {"svc_stats", "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM registrations),"
                  " (SELECT count(*) FROM push_outbox WHERE state = 'queued'),"
                  " (SELECT count(*) FROM push_outbox WHERE state = 'failed')"},
};

/* ---- small helpers ---- */

/* "registry: WHAT: <libpq's message>", its trailing newline dropped. */
static int pg_fail(pm_error *err, PGconn *conn, const PGresult *res, const char *what)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg)
        msg = conn ? PQerrorMessage(conn) : "out of memory";
    int len = (int)strcspn(msg, "\n");
    while (len > 0 && (msg[len - 1] == ' ' || msg[len - 1] == '\r'))
        len--;
    return pm_error_set(err, PM_ERR_IO, "registry: %s: %.*s", what, len, msg);
}

/* Run a statement without parameters; 0 when it succeeded. */
static int pg_exec(PGconn *conn, const char *sql, const char *what, pm_error *err)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = pg_fail(err, conn, res, what);
    PQclear(res);
    return rc;
}

static void rollback(PGconn *conn)
{
    PQclear(PQexec(conn, "ROLLBACK"));
}

/* Run a prepared statement; the result (caller clears) or NULL + err. */
static PGresult *run_prepared(PGconn *conn, const char *name, int n, const char *const *params,
                              const char *what, pm_error *err)
{
    PGresult *res = PQexecPrepared(conn, name, n, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        pg_fail(err, conn, res, what);
        PQclear(res);
        return NULL;
    }
    return res;
}

static int prepare_all(PGconn *conn, const char *const (*sts)[2], size_t n, pm_error *err)
{
    for (size_t i = 0; i < n; i++) {
        PGresult *res = PQprepare(conn, sts[i][0], sts[i][1], 0, NULL);
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            pg_fail(err, conn, res, "prepare");
        PQclear(res);
        if (!ok)
            return -1;
    }
    return 0;
}

/*
 * s itself when valid UTF-8, else a copy in tmp (cap bytes) with every byte
 * >= 0x80 as '?'.  PostgreSQL refuses invalid text in a UTF8 database, which
 * would fail a whole batch; reject messages and file names may quote raw
 * input bytes, so those are cleaned before they are sent.
 */
static const char *utf8_clean(const char *s, char *tmp, size_t cap)
{
    if (!s || pm_utf8_valid((const unsigned char *)s, strlen(s)))
        return s;
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        tmp[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
    tmp[i] = '\0';
    return tmp;
}

/*
 * Connect with the user's conninfo (URI or key=value, expanded by libpq)
 * and the password as its own keyword, after dbname so it wins.
 */
static PGconn *pg_connect(const char *conninfo, const char *password, pm_error *err)
{
    const char *keys[4] = {"dbname", "application_name", NULL, NULL};
    const char *vals[4] = {conninfo, "passmill", NULL, NULL};
    if (password && *password) {
        keys[2] = "password";
        vals[2] = password;
    }
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        pg_fail(err, conn, NULL, "connect");
        PQfinish(conn);
        return NULL;
    }
    /* Quiet NOTICEs ("relation already exists" etc.) are not the user's business. */
    if (pg_exec(conn, "SET client_min_messages = warning", "set client_min_messages", err) != 0) {
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* A writer connection with its session settings and statements. */
static int writer_setup(PGconn *conn, pm_error *err)
{
    /* "Done" means committed and durable: never let this session commit
     * asynchronously, whatever the database's default. */
    if (pg_exec(conn, "SELECT set_config('synchronous_commit', 'on', false)"
                      " WHERE current_setting('synchronous_commit') = 'off'",
                "set synchronous_commit", err) != 0)
        return -1;
    return prepare_all(conn, writer_statements, sizeof writer_statements / sizeof writer_statements[0], err);
}

static int reader_setup(PGconn *conn, pm_error *err)
{
    if (pg_exec(conn, "SET default_transaction_read_only = on", "set read only", err) != 0)
        return -1;
    return prepare_all(conn, reader_statements, sizeof reader_statements / sizeof reader_statements[0], err);
}

/* Before each use: a connection the server dropped is reset and set up again. */
static int pg_alive(PGconn *conn, int (*setup)(PGconn *, pm_error *), pm_error *err)
{
    if (PQstatus(conn) == CONNECTION_OK)
        return 0;
    PQreset(conn);
    if (PQstatus(conn) != CONNECTION_OK)
        return pg_fail(err, conn, NULL, "reconnect");
    if (pg_exec(conn, "SET client_min_messages = warning", "set client_min_messages", err) != 0)
        return -1;
    return setup(conn, err);
}

/* A serve thread's connection writes registrations: not read-only, and a
 * registration answered 201 is committed durably (as the writer's batches). */
static int service_setup(PGconn *conn, pm_error *err)
{
    if (pg_exec(conn, "SELECT set_config('synchronous_commit', 'on', false)"
                      " WHERE current_setting('synchronous_commit') = 'off'",
                "set synchronous_commit", err) != 0 ||
        prepare_all(conn, reader_statements, sizeof reader_statements / sizeof reader_statements[0],
                    err) != 0)
        return -1;
    return prepare_all(conn, service_statements,
                       sizeof service_statements / sizeof service_statements[0], err);
}

/* ---- schema ---- */

/* Create or migrate the schema in one transaction under the advisory lock;
 * refuse a newer one. */
static int ensure_schema(PGconn *conn, pm_error *err)
{
    if (pg_exec(conn, "BEGIN", "begin", err) != 0)
        return -1;
    if (pg_exec(conn, "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK_KEY ")", "lock the schema", err) != 0)
        goto fail;
    PGresult *res = PQexec(conn, "SELECT to_regclass('schema_version') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_fail(err, conn, res, "schema version");
        PQclear(res);
        goto fail;
    }
    bool have = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    int version = 0;
    if (have) {
        res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_version");
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            pg_fail(err, conn, res, "schema version");
            PQclear(res);
            goto fail;
        }
        version = atoi(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    if (version > PM_REGISTRY_SCHEMA_VERSION) {
        pm_error_set(err, PM_ERR_CONFIG,
                     "registry database '%s' has schema version %d, newer than this passmill's %d: "
                     "upgrade passmill", PQdb(conn), version, PM_REGISTRY_SCHEMA_VERSION);
        goto fail;
    }
    /* Version 0 is a new database: every step from the first.  Each step and
     * its version row are in this one transaction (PostgreSQL's DDL is
     * transactional), under the advisory lock. */
    for (int v = version; v < PM_REGISTRY_SCHEMA_VERSION; v++) {
        for (size_t i = 0; schema_steps[v][i]; i++)
            if (pg_exec(conn, schema_steps[v][i], "create the schema", err) != 0)
                goto fail;
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO schema_version (version) VALUES (%d)", v + 1);
        if (pg_exec(conn, sql, "create the schema", err) != 0)
            goto fail;
    }
    return pg_exec(conn, "COMMIT", "commit the schema", err);
fail:
    rollback(conn);
    return -1;
}

/* ---- writes (durability thread) ---- */

static void int_text(char out[24], int64_t v)
{
    snprintf(out, 24, "%lld", (long long)v);
}

static int pg_begin_run(pm_registry *base, const char *run_id, const char *command, pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    if (pg_alive(r->conn, writer_setup, err) != 0)
        return -1;
    char started[24];
    int_text(started, (int64_t)time(NULL));
    const char *p[3] = {run_id, command, started};
    PGresult *res = PQexecParams(r->conn, "INSERT INTO runs (run_id, command, started_at)"
                                          " VALUES ($1, $2, $3::bigint)", 3, NULL, p, NULL, NULL, 0);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : pg_fail(err, r->conn, res, "insert run");
    PQclear(res);
    return rc;
}

static int pg_end_run(pm_registry *base, const char *run_id, const uint64_t counts[PM_OUTCOME_COUNT],
                      pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    if (pg_alive(r->conn, writer_setup, err) != 0)
        return -1;
    char v[5][24];
    int_text(v[0], (int64_t)time(NULL));
    int_text(v[1], (int64_t)counts[PM_OUTCOME_PASS]);
    int_text(v[2], (int64_t)counts[PM_OUTCOME_UNCHANGED]);
    int_text(v[3], (int64_t)counts[PM_OUTCOME_REJECT]);
    int_text(v[4], (int64_t)counts[PM_OUTCOME_FAILED]);
    const char *p[6] = {v[0], v[1], v[2], v[3], v[4], run_id};
    PGresult *res = PQexecParams(r->conn,
                                 "UPDATE runs SET finished_at = $1::bigint, passes = $2::bigint,"
                                 " unchanged = $3::bigint, rejects = $4::bigint, failed = $5::bigint"
                                 " WHERE run_id = $6", 6, NULL, p, NULL, NULL, 0);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : pg_fail(err, r->conn, res, "update run");
    PQclear(res);
    return rc;
}

/*
 * apply() sends its statements in pipeline mode: one round trip per chunk
 * instead of one per statement (a batch of 64 passes is ~320 statements;
 * measured 12 batches/s one by one on loopback, see docs/registry.md).
 * Chunks are synced every CHUNK_STATEMENTS so neither side's socket buffer
 * can fill while the other waits; all chunks are inside one transaction.
 */
#define CHUNK_STATEMENTS 256

typedef struct pipeline {
    PGconn *conn;
    const char *what[CHUNK_STATEMENTS + 8];   /* per queued statement, for errors */
    const char *serial[CHUNK_STATEMENTS + 8];
    int queued;
    bool committed;                           /* a COMMIT answered "COMMIT" */
} pipeline;

static int pipe_send(pipeline *pl, const char *name, int n, const char *const *params, const char *what,
                     const char *serial, pm_error *err)
{
    /* libpq copies the parameters into its output buffer here. */
    if (!PQsendQueryPrepared(pl->conn, name, n, params, NULL, NULL, 0))
        return pg_fail(err, pl->conn, NULL, what);
    pl->what[pl->queued] = what;
    pl->serial[pl->queued] = serial;
    pl->queued++;
    return 0;
}

/* Sync and read every queued statement's result; the first error into err. */
static int pipe_sync(pipeline *pl, pm_error *err)
{
    int rc = 0;
    if (!PQpipelineSync(pl->conn))
        return pg_fail(err, pl->conn, NULL, "pipeline sync");
    int i = 0, nulls = 0;
    for (;;) {
        PGresult *res = PQgetResult(pl->conn);
        if (!res) {
            /* One NULL ends each statement's results; two in a row: nothing
             * more will come (the connection is gone). */
            if (++nulls >= 2) {
                if (rc == 0)
                    rc = pg_fail(err, pl->conn, NULL, "pipeline");
                break;
            }
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            break;
        }
        int k = i < pl->queued ? i : pl->queued - 1;
        i++;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (strcmp(PQcmdStatus(res), "COMMIT") == 0)
                pl->committed = true;
        } else if (st != PGRES_PIPELINE_ABORTED && rc == 0) {
            char what[160];
            snprintf(what, sizeof what, "%s%s%s", k >= 0 ? pl->what[k] : "pipeline",
                     k >= 0 && pl->serial[k] ? " " : "", k >= 0 && pl->serial[k] ? pl->serial[k] : "");
            rc = pg_fail(err, pl->conn, res, what);
        }
        PQclear(res);
    }
    pl->queued = 0;
    return rc;
}

static int apply_pass(pipeline *pl, const char *run_id, pm_job *job, int64_t tag,
                      const char *origin, pm_error *err)
{
    char sha[65], pkpass_key[128], qr_key[128], now[24], tagtext[24], expect[24];
    pm_hex_encode(job->pkpass_sha256, sizeof job->pkpass_sha256, sha);
    pm_store_pass_keys(job->serial, pkpass_key, sizeof pkpass_key, qr_key, sizeof qr_key);
    int_text(now, job->now);
    int_text(tagtext, tag);
    int_text(expect, job->expect_tag);
    pm_buf scratch = PM_BUF_INIT;
    const char *record = pm_registry_row_record(job, &scratch, err);
    if (!record)
        return -1;
    const char *p[16] = {job->serial, pm_registry_record_text(job, "template_id"), job->tmpl ? job->tmpl->version : "",
                         pm_registry_event_id(job), job->status ? job->status : "active", record,
                         job->content_hash, sha, pkpass_key, qr_key, job->auth_token, now, tagtext,
                         run_id, origin, expect};
    int rc = pipe_send(pl, "upsert", 16, p, "upsert pass", job->serial, err); /* copies p */
    pm_buf_free(&scratch);
    if (rc != 0)
        return -1;
    /* A row expected absent (check_tags() saw none) has no groups yet. */
    const char *del[1] = {job->serial};
    if (job->expect_tag != PM_TAG_ABSENT &&
        pipe_send(pl, "del_groups", 1, del, "delete pass groups", job->serial, err) != 0)
        return -1;
    json_t *groups = json_object_get(job->record, "pass_group_ids");
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g) {
        const char *add[2] = {job->serial, json_string_value(g)};
        if (pipe_send(pl, "add_group", 2, add, "insert pass group", job->serial, err) != 0)
            return -1;
    }
    return 0;
}

static int apply_result(pipeline *pl, const char *run_id, const pm_job *job, const char *origin,
                        pm_error *err)
{
    char sha[65], pkpass_key[128], qr_key[128], now[24];
    if (job->outcome == PM_OUTCOME_UNCHANGED)
        snprintf(sha, sizeof sha, "%s", job->prior_sha256);
    else
        pm_hex_encode(job->pkpass_sha256, sizeof job->pkpass_sha256, sha);
    pm_store_pass_keys(job->serial, pkpass_key, sizeof pkpass_key, qr_key, sizeof qr_key);
    int_text(now, job->now);
    const char *p[12] = {run_id, job->serial, pm_outcome_kind_name(job->outcome),
                         pm_registry_record_text(job, "action"), job->status ? job->status : "active",
                         pm_registry_record_text(job, "template_id"), job->tmpl ? job->tmpl->version : NULL,
                         sha, pkpass_key, qr_key, origin, now};
    return pipe_send(pl, "add_result", 12, p, "insert result", job->serial, err);
}

static int apply_reject(pipeline *pl, const char *run_id, const pm_job *job, const char *origin,
                        pm_error *err)
{
    json_t *line = pm_outcome_reject_json(job);
    if (!line)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory for a reject row");
    json_t *rec = json_object_get(line, "record");
    char *record = rec ? json_dumps(rec, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    char now[24], field[sizeof job->err.field], reason[sizeof job->err.message];
    int_text(now, job->now);
    const char *p[9] = {run_id, json_string_value(json_object_get(line, "serial")),
                        json_string_value(json_object_get(line, "code")),
                        utf8_clean(job->err.field, field, sizeof field),
                        utf8_clean(job->err.message, reason, sizeof reason), record,
                        json_string_value(json_object_get(line, "record_base64")), origin, now};
    int rc = pipe_send(pl, "add_reject", 9, p, "insert reject", job->serial, err);
    free(record);
    json_decref(line);
    return rc;
}

/*
 * The conditional part of the upsert, in one round trip: under the counter
 * lock no other batch can commit, so a pass row whose update_tag is no
 * longer the one the job's pass was built on (job->expect_tag) was changed
 * by another process since the lookup: job->conflict, and nothing of the
 * job is written.
 */
static int check_tags(pipeline *pl, pm_job *const *jobs, size_t n, pm_error *err)
{
    size_t start = 0;
    while (start < n) {
        size_t idx[CHUNK_STATEMENTS];
        int queued = 0;
        size_t i = start;
        for (; i < n && queued < CHUNK_STATEMENTS; i++) {
            jobs[i]->conflict = false;
            if (jobs[i]->outcome != PM_OUTCOME_PASS || jobs[i]->expect_tag == 0)
                continue;
            const char *p[1] = {jobs[i]->serial};
            if (!PQsendQueryPrepared(pl->conn, "check_tag", 1, p, NULL, NULL, 0))
                return pg_fail(err, pl->conn, NULL, "check update tag");
            idx[queued++] = i;
        }
        start = i;
        if (queued == 0)
            continue;
        if (!PQpipelineSync(pl->conn))
            return pg_fail(err, pl->conn, NULL, "pipeline sync");
        int rc = 0, k = 0, nulls = 0;
        for (;;) {
            PGresult *res = PQgetResult(pl->conn);
            if (!res) {
                if (++nulls >= 2) { /* the connection is gone */
                    if (rc == 0)
                        rc = pg_fail(err, pl->conn, NULL, "check update tag");
                    break;
                }
                continue;
            }
            nulls = 0;
            ExecStatusType st = PQresultStatus(res);
            if (st == PGRES_PIPELINE_SYNC) {
                PQclear(res);
                break;
            }
            if (st == PGRES_TUPLES_OK && k < queued) {
                pm_job *job = jobs[idx[k]];
                int64_t now = PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                                                  : PM_TAG_ABSENT;
                job->conflict = now != job->expect_tag;
            } else if (st != PGRES_PIPELINE_ABORTED && rc == 0) {
                rc = pg_fail(err, pl->conn, res, "check update tag");
            }
            k++;
            PQclear(res);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int pg_apply(pm_registry *base, const char *run_id, pm_job *const *jobs, size_t n,
                    pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->outcome >= PM_OUTCOME_COUNT || jobs[i]->outcome < PM_OUTCOME_PASS)
            return pm_error_set(err, PM_ERR_INTERNAL, "registry: job without an outcome");
    if (pg_alive(r->conn, writer_setup, err) != 0 || pg_exec(r->conn, "BEGIN", "begin", err) != 0)
        return -1;
    /* The counter row's lock is held until COMMIT: another process's batch
     * waits here, so tags are handed out in commit order. */
    PGresult *res = run_prepared(r->conn, "get_tag", 0, NULL, "lock the update tag", err);
    if (!res) {
        rollback(r->conn);
        return -1;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        rollback(r->conn);
        return pm_error_set(err, PM_ERR_IO, "registry: the update_tag counter row is missing");
    }
    int64_t tag = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    /* One probe per batch: with no registration at all a pass change costs
     * no outbox statement. */
    if (!(res = run_prepared(r->conn, "any_registration", 0, NULL, "look for registrations", err))) {
        rollback(r->conn);
        return -1;
    }
    bool pushes = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    char now_text[24];
    int_text(now_text, (int64_t)time(NULL));

    pipeline *pl = calloc(1, sizeof *pl);
    if (!pl) {
        rollback(r->conn);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    pl->conn = r->conn;
    if (!PQenterPipelineMode(r->conn)) {
        free(pl);
        rollback(r->conn);
        return pg_fail(err, r->conn, NULL, "pipeline mode");
    }
    int rc = check_tags(pl, jobs, n, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        pm_job *job = jobs[i];
        char origin[320], clean[320];
        pm_origin_format(&job->origin, origin, sizeof origin);
        const char *o = utf8_clean(origin, clean, sizeof clean);
        if (job->conflict) {
            continue; /* nothing of it written; the engine makes it again */
        } else if (job->outcome == PM_OUTCOME_PASS) {
            rc = apply_pass(pl, run_id, job, ++tag, o, err);
            if (rc == 0)
                rc = apply_result(pl, run_id, job, o, err);
            if (rc == 0 && pushes) {
                /* libpq copies parameters when sending: a stack buffer is fine. */
                char tagtext[24];
                int_text(tagtext, tag);
                const char *p[3] = {tagtext, now_text, job->serial};
                rc = pipe_send(pl, "queue_pushes", 3, p, "queue pushes", job->serial, err);
            }
        } else if (job->outcome == PM_OUTCOME_UNCHANGED) {
            rc = apply_result(pl, run_id, job, o, err);
        } else {
            rc = apply_reject(pl, run_id, job, o, err);
        }
        if (rc == 0 && pl->queued >= CHUNK_STATEMENTS)
            rc = pipe_sync(pl, err);
    }
    if (rc == 0) {
        char tagtext[24];
        int_text(tagtext, tag);
        const char *p[1] = {tagtext};
        rc = pipe_send(pl, "set_tag", 1, p, "update the update tag", NULL, err);
    }
    /* A COMMIT of a failed transaction answers "ROLLBACK": committed is set
     * only by a real "COMMIT". */
    if (rc == 0 && !PQsendQueryParams(r->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0))
        rc = pg_fail(err, r->conn, NULL, "commit");
    else if (rc == 0) {
        pl->what[pl->queued] = "commit";
        pl->serial[pl->queued++] = NULL;
    }
    if (pl->queued > 0) {
        pm_error later;
        /* After an error only drain (its own error is the first one). */
        if (pipe_sync(pl, rc == 0 ? err : &later) != 0)
            rc = -1;
    }
    bool committed = pl->committed;
    free(pl);
    PQexitPipelineMode(r->conn);
    if (rc == 0 && !committed)
        rc = pm_error_set(err, PM_ERR_IO, "registry: commit: the transaction was rolled back");
    if (rc != 0 && !committed)
        rollback(r->conn);
    return rc == 0 ? 0 : -1;
}

/* ---- reads (one reader per worker thread) ---- */

static int pg_reader_open(pm_registry *base, pm_registry_reader **out, pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    *out = NULL;
    pg_reader *rd = calloc(1, sizeof *rd);
    if (!rd)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    rd->base.ops = &pg_ops;
    rd->conn = pg_connect(r->conninfo, r->password, err);
    if (!rd->conn || reader_setup(rd->conn, err) != 0) {
        PQfinish(rd->conn);
        free(rd);
        return -1;
    }
    *out = &rd->base;
    return 0;
}

static void pg_reader_close(pm_registry_reader *base)
{
    pg_reader *rd = (pg_reader *)base;
    if (!rd)
        return;
    PQfinish(rd->conn);
    free(rd);
}

static void copy_col(const PGresult *res, int col, char *out, size_t cap)
{
    snprintf(out, cap, "%s", PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col));
}

static int pg_lookup(pm_registry_reader *base, const char *serial, bool with_record,
                     pm_registry_pass *out, pm_error *err)
{
    pg_reader *rd = (pg_reader *)base;
    memset(out, 0, sizeof *out);
    if (pg_alive(rd->conn, rd->service ? service_setup : reader_setup, err) != 0)
        return -1;
    const char *p[1] = {serial};
    PGresult *res = run_prepared(rd->conn, "lookup", 1, p, "lookup", err);
    if (!res)
        return -1;
    int found = PQntuples(res) > 0;
    if (found) {
        copy_col(res, 0, out->status, sizeof out->status);
        copy_col(res, 1, out->content_hash, sizeof out->content_hash);
        copy_col(res, 2, out->pkpass_sha256, sizeof out->pkpass_sha256);
        copy_col(res, 3, out->auth_token, sizeof out->auth_token);
        out->update_tag = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
        out->created_at = strtoll(PQgetvalue(res, 0, 6), NULL, 10);
        if (with_record && !PQgetisnull(res, 0, 5))
            out->record = json_loads(PQgetvalue(res, 0, 5), 0, NULL);
    }
    PQclear(res);
    return found;
}

/* " AND ..." clauses of a selection, parameters from $2 on (after $1 = the
 * serial to start after): a missing one is left out so the indexes serve. */
typedef struct selection_sql {
    char where[256];
    const char *params[5];
    int n;
} selection_sql;

static void selection_build(const pm_registry_selection *sel, const char *after, selection_sql *out)
{
    size_t len = 0, cap = sizeof out->where;
    out->where[0] = '\0';
    out->n = 0;
    out->params[out->n++] = after ? after : "";
    if (sel->event_id) {
        out->params[out->n++] = sel->event_id;
        len += (size_t)snprintf(out->where + len, cap - len, " AND event_id = $%d", out->n);
    }
    if (sel->group_id && len < cap) {
        out->params[out->n++] = sel->group_id;
        len += (size_t)snprintf(out->where + len, cap - len,
                                " AND serial IN (SELECT serial FROM pass_groups WHERE group_id = $%d)",
                                out->n);
    }
    if (sel->template_id && len < cap) {
        out->params[out->n++] = sel->template_id;
        snprintf(out->where + len, cap - len, " AND template_id = $%d", out->n);
    }
}

static PGresult *reader_query(pg_reader *rd, const char *sql, const selection_sql *ss, const char *what,
                              pm_error *err)
{
    if (pg_alive(rd->conn, reader_setup, err) != 0)
        return NULL;
    PGresult *res = PQexecParams(rd->conn, sql, ss->n, NULL, ss->params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_fail(err, rd->conn, res, what);
        PQclear(res);
        return NULL;
    }
    return res;
}

static int pg_scan(pm_registry_reader *base, const pm_registry_selection *sel, const char *after,
                   unsigned limit, pm_registry_scan_fn fn, void *arg, pm_error *err)
{
    pg_reader *rd = (pg_reader *)base;
    selection_sql ss;
    selection_build(sel, after, &ss);
    char sql[768];
    snprintf(sql, sizeof sql,
             "SELECT serial, status, template_id, template_version, content_hash, record"
             " FROM passes WHERE serial > $1%s ORDER BY serial LIMIT %u", ss.where, limit);
    PGresult *res = reader_query(rd, sql, &ss, "scan", err);
    if (!res)
        return -1;
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        pm_registry_row row = {PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                               PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), PQgetvalue(res, i, 5)};
        if (fn(arg, &row) != 0) {
            n = i + 1;
            break;
        }
    }
    PQclear(res);
    return n;
}

static int pg_count(pm_registry_reader *base, const pm_registry_selection *sel, uint64_t *out,
                    pm_error *err)
{
    pg_reader *rd = (pg_reader *)base;
    selection_sql ss;
    selection_build(sel, "", &ss);
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM passes WHERE serial > $1%s", ss.where);
    PGresult *res = reader_query(rd, sql, &ss, "count", err);
    if (!res)
        return -1;
    *out = (uint64_t)strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return 0;
}

/* ---- queries (main thread, writer connection) ---- */

static int pg_template_versions(pm_registry *base, pm_registry_row_fn fn, void *arg, pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    if (pg_alive(r->conn, writer_setup, err) != 0)
        return -1;
    PGresult *res = PQexec(r->conn, "SELECT template_id, template_version, count(*) FROM passes"
                                    " GROUP BY template_id, template_version"
                                    " ORDER BY template_id, template_version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_fail(err, r->conn, res, "templates");
        PQclear(res);
        return -1;
    }
    int stop = 0;
    for (int i = 0; !stop && i < PQntuples(res); i++) {
        json_t *row = json_pack("{s:s, s:s, s:I}", "template_id", PQgetvalue(res, i, 0),
                                "template_version", PQgetvalue(res, i, 1), "passes",
                                (json_int_t)strtoll(PQgetvalue(res, i, 2), NULL, 10));
        stop = row ? fn(arg, row) : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        json_decref(row);
    }
    PQclear(res);
    return stop ? -1 : 0;
}

static int64_t col_int(const PGresult *res, int row, int col)
{
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* ---- the web service (one service reader per serve thread) ---- */

static int pg_service_open(pm_registry *base, pm_registry_reader **out, pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    *out = NULL;
    pg_reader *rd = calloc(1, sizeof *rd);
    if (!rd)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    rd->base.ops = &pg_ops;
    rd->service = true;
    rd->conn = pg_connect(r->conninfo, r->password, err);
    if (!rd->conn || service_setup(rd->conn, err) != 0) {
        PQfinish(rd->conn);
        free(rd);
        return -1;
    }
    *out = &rd->base;
    return 0;
}

static int pg_pass_info(pm_registry_reader *base, const char *serial,
                        pm_registry_service_pass *out, pm_error *err)
{
    pg_reader *rd = (pg_reader *)base;
    memset(out, 0, sizeof *out);
    if (pg_alive(rd->conn, service_setup, err) != 0)
        return -1;
    const char *p[1] = {serial};
    PGresult *res = run_prepared(rd->conn, "info", 1, p, "pass info", err);
    if (!res)
        return -1;
    int found = PQntuples(res) > 0;
    if (found) {
        copy_col(res, 0, out->status, sizeof out->status);
        copy_col(res, 1, out->auth_token, sizeof out->auth_token);
        copy_col(res, 2, out->pkpass_key, sizeof out->pkpass_key);
        copy_col(res, 3, out->qr_key, sizeof out->qr_key);
        out->updated_at = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
        out->update_tag = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
    }
    PQclear(res);
    return found;
}

/* Run a prepared statement that changes rows; the count, -1 + err. */
static long run_change(PGconn *conn, const char *name, int n, const char *const *params,
                       const char *what, pm_error *err)
{
    PGresult *res = run_prepared(conn, name, n, params, what, err);
    if (!res)
        return -1;
    long count = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return count;
}

static int pg_register_device(pm_registry_reader *base, const char *device_id,
                              const char *push_token, const char *pass_type_id,
                              const char *serial, int64_t now, pm_error *err)
{
    pg_reader *rd = (pg_reader *)base;
    if (pg_alive(rd->conn, service_setup, err) != 0 || pg_exec(rd->conn, "BEGIN", "begin", err) != 0)
        return -1;
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)now);
    const char *dev[3] = {device_id, push_token, at};
    const char *reg[4] = {device_id, pass_type_id, serial, at};
    long added;
    if (run_change(rd->conn, "dev_upsert", 3, dev, "register device", err) < 0 ||
        (added = run_change(rd->conn, "reg_add", 4, reg, "register pass", err)) < 0 ||
        pg_exec(rd->conn, "COMMIT", "commit", err) != 0) {
        rollback(rd->conn);
        return -1;
    }
    return added > 0;
}

static int pg_unregister_device(pm_registry_reader *base, const char *device_id,
                                const char *pass_type_id, const char *serial, pm_error *err)
{
    pg_reader *rd = (pg_reader *)base;
    if (pg_alive(rd->conn, service_setup, err) != 0 || pg_exec(rd->conn, "BEGIN", "begin", err) != 0)
        return -1;
    const char *reg[3] = {device_id, pass_type_id, serial};
    const char *dev[1] = {device_id};
    long removed;
    if ((removed = run_change(rd->conn, "reg_del", 3, reg, "unregister pass", err)) < 0 ||
        run_change(rd->conn, "dev_gc", 1, dev, "remove device", err) < 0 ||
        pg_exec(rd->conn, "COMMIT", "commit", err) != 0) {
        rollback(rd->conn);
        return -1;
    }
    return removed > 0;
}

static long pg_serials_since(pm_registry_reader *base, const char *device_id,
                             const char *pass_type_id, int64_t since, pm_registry_serial_fn fn,
                             void *arg, int64_t *last_tag, pm_error *err)
{
    pg_reader *rd = (pg_reader *)base;
    *last_tag = since;
    if (pg_alive(rd->conn, service_setup, err) != 0)
        return -1;
    char tag[24];
    snprintf(tag, sizeof tag, "%lld", (long long)since);
    const char *p[3] = {device_id, pass_type_id, tag};
    PGresult *res = run_prepared(rd->conn, "since", 3, p, "serials since", err);
    if (!res)
        return -1;
    long n = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        n++;
        *last_tag = col_int(res, i, 1);
        if (fn(arg, PQgetvalue(res, i, 0)) != 0)
            break;
    }
    PQclear(res);
    return n;
}

static int pg_service_stats(pm_registry_reader *base, pm_registry_service_stats *out,
                            pm_error *err)
{
    pg_reader *rd = (pg_reader *)base;
    memset(out, 0, sizeof *out);
    if (pg_alive(rd->conn, service_setup, err) != 0)
        return -1;
    PGresult *res = run_prepared(rd->conn, "svc_stats", 0, NULL, "service stats", err);
    if (!res)
        return -1;
    out->devices = (uint64_t)col_int(res, 0, 0);
    out->registrations = (uint64_t)col_int(res, 0, 1);
    out->outbox_queued = (uint64_t)col_int(res, 0, 2);
    out->outbox_failed = (uint64_t)col_int(res, 0, 3);
    PQclear(res);
    return 0;
}

/* A column as JSON: null, an integer for integer columns, else a string. */
static json_t *col_json(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    Oid t = PQftype(res, col);
    if (t == INT8OID || t == INT4OID)
        return json_integer(col_int(res, row, col));
    return json_string(PQgetvalue(res, row, col));
}

/* The row builders' cursor over row 0 of a result (single-row mode, or one row). */
static json_t *cols_json(void *res, int i) { return col_json(res, 0, i); }
static int64_t cols_integer(void *res, int i) { return col_int(res, 0, i); }
static const char *cols_text(void *res, int i)
{
    return PQgetisnull(res, 0, i) ? NULL : PQgetvalue(res, 0, i);
}

static pm_registry_cols cols_of(const PGresult *res)
{
    return (pm_registry_cols){cols_json, cols_integer, cols_text, (void *)res};
}

static json_t *pg_show(pm_registry *base, const char *serial, pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    pm_error_clear(err);
    if (pg_alive(r->conn, writer_setup, err) != 0)
        return NULL;
    const char *p[1] = {serial};
    PGresult *res = PQexecParams(r->conn,
                                 "SELECT " PM_REGISTRY_SHOW_COLUMNS " FROM passes WHERE serial = $1",
                                 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_fail(err, r->conn, res, "show");
        PQclear(res);
        return NULL;
    }
    json_t *row = NULL;
    if (PQntuples(res) > 0) {
        pm_registry_cols c = cols_of(res);
        row = pm_registry_show_row(&c);
        if (!row)
            pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    PQclear(res);
    if (row) {
        res = PQexecParams(r->conn, "SELECT group_id FROM pass_groups WHERE serial = $1 ORDER BY group_id",
                           1, NULL, p, NULL, NULL, 0);
        json_t *groups = json_array();
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            for (int i = 0; i < PQntuples(res); i++)
                json_array_append_new(groups, col_json(res, i, 0));
        PQclear(res);
        json_object_set_new(row, "pass_group_ids", groups);
    }
    return row;
}

/* A filter's " AND ..." clauses with $1.. placeholders and their values, in order. */
typedef struct filter_sql {
    char where[512];
    const char *params[4];
    int n;
    char since[24];
} filter_sql;

static void filter_build(const pm_registry_filter *f, const char *time_col, bool passes_table,
                         filter_sql *out)
{
    size_t len = 0, cap = sizeof out->where;
    out->where[0] = '\0';
    out->n = 0;
    if (f->event_id) {
        out->params[out->n++] = f->event_id;
        len += (size_t)snprintf(out->where + len, cap - len,
                                passes_table ? " AND event_id = $%d"
                                             : " AND serial IN (SELECT serial FROM passes WHERE event_id = $%d)",
                                out->n);
    }
    if (f->group_id && len < cap) {
        out->params[out->n++] = f->group_id;
        len += (size_t)snprintf(out->where + len, cap - len,
                                " AND serial IN (SELECT serial FROM pass_groups WHERE group_id = $%d)", out->n);
    }
    if (f->run_id && !passes_table && len < cap) {
        out->params[out->n++] = f->run_id;
        len += (size_t)snprintf(out->where + len, cap - len, " AND run_id = $%d", out->n);
    }
    if (f->since && time_col && len < cap) {
        int_text(out->since, f->since);
        out->params[out->n++] = out->since;
        snprintf(out->where + len, cap - len, " AND %s >= $%d::bigint", time_col, out->n);
    }
}

static int pg_stats(pm_registry *base, const pm_registry_filter *f, pm_registry_stats *out,
                    pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    memset(out, 0, sizeof *out);
    if (pg_alive(r->conn, writer_setup, err) != 0)
        return -1;
    filter_sql fs;
    char sql[768];
    filter_build(f, NULL, true, &fs);
    snprintf(sql, sizeof sql, "SELECT status, count(*) FROM passes WHERE true%s GROUP BY status", fs.where);
    PGresult *res = PQexecParams(r->conn, sql, fs.n, NULL, fs.params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_fail(err, r->conn, res, "stats");
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *s = PQgetvalue(res, i, 0);
        uint64_t c = (uint64_t)col_int(res, i, 1);
        if (strcmp(s, "active") == 0) out->active = c;
        else if (strcmp(s, "voided") == 0) out->voided = c;
        else if (strcmp(s, "expired") == 0) out->expired = c;
        else if (strcmp(s, "redeemed") == 0) out->redeemed = c;
    }
    PQclear(res);
    filter_build(f, NULL, false, &fs);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM rejects WHERE true%s", fs.where);
    res = PQexecParams(r->conn, sql, fs.n, NULL, fs.params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        out->rejects = (uint64_t)col_int(res, 0, 0);
    else
        rc = pg_fail(err, r->conn, res, "stats");
    PQclear(res);
    return rc;
}

/*
 * Stream one query's rows (single-row mode: an export of millions of rows
 * never sits in memory) into make_row/fn.  *stop set when fn asked to stop;
 * the rest of the result is read and dropped so the connection stays usable.
 */
static int export_query(PGconn *conn, const char *sql, const filter_sql *fs,
                        json_t *(*make_row)(const PGresult *), pm_registry_row_fn fn, void *arg,
                        bool *stop, const char *what, pm_error *err)
{
    if (!PQsendQueryParams(conn, sql, fs->n, NULL, fs->params, NULL, NULL, 0) ||
        !PQsetSingleRowMode(conn))
        return pg_fail(err, conn, NULL, what);
    int rc = 0;
    PGresult *res;
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE && !*stop && rc == 0) {
            json_t *row = make_row(res);
            if (!row)
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            else if (fn(arg, row) != 0)
                *stop = true;
            json_decref(row);
        } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && rc == 0) {
            rc = pg_fail(err, conn, res, what);
        }
        PQclear(res);
    }
    return rc;
}

static json_t *result_row(const PGresult *res)
{
    pm_registry_cols c = cols_of(res);
    return pm_registry_result_row(&c);
}

static json_t *reject_row(const PGresult *res)
{
    pm_registry_cols c = cols_of(res);
    return pm_registry_reject_row(&c);
}

static int pg_export(pm_registry *base, const pm_registry_filter *f, pm_registry_row_fn fn, void *arg,
                     pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    if (pg_alive(r->conn, writer_setup, err) != 0)
        return -1;
    filter_sql fs;
    char sql[1024];
    bool stop = false;
    filter_build(f, "at", false, &fs);
    snprintf(sql, sizeof sql,
             "SELECT " PM_REGISTRY_RESULT_COLUMNS " FROM results WHERE true%s ORDER BY id", fs.where);
    if (export_query(r->conn, sql, &fs, result_row, fn, arg, &stop, "export results", err) != 0)
        return -1;
    if (stop)
        return 0;
    snprintf(sql, sizeof sql,
             "SELECT " PM_REGISTRY_REJECT_COLUMNS " FROM rejects WHERE true%s ORDER BY id", fs.where);
    return export_query(r->conn, sql, &fs, reject_row, fn, arg, &stop, "export rejects", err);
}


/* ---- pushes (a sender's own registry handle) ---- */

static int pg_push_claim(pm_registry *base, int64_t now, int64_t lease_until, pm_push_item *items,
                         size_t max, size_t *n, pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    *n = 0;
    if (pg_alive(r->conn, writer_setup, err) != 0)
        return -1;
    char lease[24], nowt[24], maxt[24];
    int_text(lease, lease_until);
    int_text(nowt, now);
    int_text(maxt, (int64_t)max);
    const char *p[3] = {lease, nowt, maxt};
    /* SKIP LOCKED: senders sharing the outbox each take other rows instead
     * of waiting on each other's claims.  The statement is its own
     * transaction; the lease is what keeps a claimed row from the others. */
    PGresult *res = PQexecParams(r->conn,
        "UPDATE push_outbox o SET attempts = o.attempts + 1, next_attempt_at = $1::bigint"
        " FROM (SELECT id FROM push_outbox WHERE state = 'queued' AND next_attempt_at <= $2::bigint"
        " ORDER BY next_attempt_at, id LIMIT $3::bigint FOR UPDATE SKIP LOCKED) due"
        " WHERE o.id = due.id"
        " RETURNING o.id, o.device_id, o.push_token, o.pass_type_id, o.serial, o.attempts",
        3, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        int rc = pg_fail(err, r->conn, res, "claim pushes");
        PQclear(res);
        return rc;
    }
    int rows = PQntuples(res);
    for (int i = 0; i < rows && *n < max; i++) {
        pm_push_item *it = &items[(*n)++];
        it->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        snprintf(it->device_id, sizeof it->device_id, "%s", PQgetvalue(res, i, 1));
        snprintf(it->push_token, sizeof it->push_token, "%s", PQgetvalue(res, i, 2));
        snprintf(it->pass_type_id, sizeof it->pass_type_id, "%s", PQgetvalue(res, i, 3));
        snprintf(it->serial, sizeof it->serial, "%s", PQgetvalue(res, i, 4));
        it->attempts = atoi(PQgetvalue(res, i, 5));
    }
    PQclear(res);
    return 0;
}

static int pg_params(PGconn *conn, const char *sql, int n, const char *const *p, const char *what,
                     pm_error *err)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, p, NULL, NULL, 0);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : pg_fail(err, conn, res, what);
    PQclear(res);
    return rc;
}

static int pg_push_settle(pm_registry *base, const pm_push_item *items, const pm_push_result *res,
                          size_t n, pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    if (n == 0)
        return 0;
    if (pg_alive(r->conn, writer_setup, err) != 0 || pg_exec(r->conn, "BEGIN", "begin", err) != 0)
        return -1;
    /* Delivered rows in one statement: "{1,2,3}" (the common case). */
    pm_buf ids;
    pm_buf_init(&ids);
    uint64_t counts[4] = {0};
    int rc = pm_buf_append(&ids, "{", 1) == 0 ? 0 : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    bool first = true;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const pm_push_item *it = &items[i];
        const pm_push_result *pr = &res[i];
        counts[pr->verdict]++;
        char id[24], at[24], status[24];
        int_text(id, it->id);
        int_text(at, pr->retry_at);
        int_text(status, pr->status);
        char reason[sizeof pr->reason];
        const char *why = utf8_clean(pr->reason, reason, sizeof reason);
        switch (pr->verdict) {
        case PM_PUSH_SENT: {
            char one[32];
            int len = snprintf(one, sizeof one, "%s%s", first ? "" : ",", id);
            first = false;
            rc = pm_buf_append(&ids, one, (size_t)len) == 0 ? 0 : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        case PM_PUSH_RETRY: {
            const char *p[4] = {id, at, status, why};
            rc = pg_params(r->conn, "UPDATE push_outbox SET next_attempt_at = $2::bigint,"
                           " last_status = $3::int, last_reason = $4 WHERE id = $1::bigint",
                           4, p, "reschedule a push", err);
            break;
        }
        case PM_PUSH_FAILED: {
            const char *p[3] = {id, status, why};
            rc = pg_params(r->conn, "UPDATE push_outbox SET state = 'failed', last_status = $2::int,"
                           " last_reason = $3 WHERE id = $1::bigint", 3, p, "fail a push", err);
            break;
        }
        case PM_PUSH_GONE: {
            /* The token no longer valid for the topic: only while the device
             * still has that token (one it sent since is not gone). */
            const char *p[3] = {it->device_id, it->pass_type_id, it->push_token};
            rc = pg_params(r->conn, "DELETE FROM registrations WHERE device_id = $1 AND pass_type_id = $2"
                           " AND device_id IN (SELECT device_id FROM devices WHERE push_token = $3)",
                           3, p, "delete registrations", err);
            if (rc == 0) {
                const char *q[2] = {it->device_id, it->push_token};
                rc = pg_params(r->conn, "DELETE FROM devices WHERE device_id = $1 AND push_token = $2"
                               " AND NOT EXISTS (SELECT 1 FROM registrations WHERE device_id = $1)",
                               2, q, "delete a device", err);
            }
            if (rc == 0) {
                const char *q[4] = {id, it->device_id, it->push_token, it->pass_type_id};
                rc = pg_params(r->conn, "DELETE FROM push_outbox WHERE id = $1::bigint OR (device_id = $2"
                               " AND push_token = $3 AND pass_type_id = $4 AND state = 'queued')",
                               4, q, "delete pushes", err);
            }
            break;
        }
        }
    }
    if (rc == 0)
        rc = pm_buf_append(&ids, "}", 2) == 0 ? 0 : pm_error_set(err, PM_ERR_NOMEM, "out of memory"); /* with its NUL */
    if (rc == 0 && counts[PM_PUSH_SENT]) {
        const char *p[1] = {(const char *)ids.data};
        rc = pg_params(r->conn, "DELETE FROM push_outbox WHERE id = ANY ($1::bigint[])", 1, p,
                       "delete delivered pushes", err);
    }
    static const char *const counter[4] = {"push_sent", "push_retried", "push_failed", "push_gone"};
    for (int k = 0; rc == 0 && k < 4; k++) {
        if (!counts[k])
            continue;
        char v[24];
        int_text(v, (int64_t)counts[k]);
        const char *p[2] = {counter[k], v};
        rc = pg_params(r->conn, "INSERT INTO counters (name, value) VALUES ($1, $2::bigint)"
                       " ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                       2, p, "push counters", err);
    }
    pm_buf_free(&ids);
    if (rc == 0 && pg_exec(r->conn, "COMMIT", "commit", err) == 0)
        return 0;
    rollback(r->conn);
    return -1;
}

static int pg_push_status(pm_registry *base, int64_t now, pm_push_status *out, pm_error *err)
{
    pg_registry *r = (pg_registry *)base;
    memset(out, 0, sizeof *out);
    if (pg_alive(r->conn, writer_setup, err) != 0)
        return -1;
    char nowt[24];
    int_text(nowt, now);
    const char *p[1] = {nowt};
    PGresult *res = PQexecParams(r->conn,
        "SELECT count(*) FILTER (WHERE state = 'queued' AND next_attempt_at <= $1::bigint),"
        " count(*) FILTER (WHERE state = 'queued' AND next_attempt_at > $1::bigint),"
        " count(*) FILTER (WHERE state = 'failed'),"
        " (SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'push_sent'),"
        " (SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'push_failed'),"
        " (SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'push_retried'),"
        " (SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'push_gone')"
        " FROM push_outbox", 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        int rc = pg_fail(err, r->conn, res, "push status");
        PQclear(res);
        return rc;
    }
    uint64_t *f[] = {&out->due, &out->waiting, &out->failed, &out->sent, &out->failed_total,
                     &out->retried, &out->gone};
    for (int i = 0; i < 7; i++)
        *f[i] = strtoull(PQgetvalue(res, 0, i), NULL, 10);
    PQclear(res);
    return 0;
}

static void pg_close(pm_registry *base)
{
    pg_registry *r = (pg_registry *)base;
    if (!r)
        return;
    PQfinish(r->conn);
    free(r->conninfo);
    if (r->password) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    free(r);
}

static const pm_registry_ops pg_ops = {
    .name = "postgresql",
    .begin_run = pg_begin_run,
    .apply = pg_apply,
    .end_run = pg_end_run,
    .reader_open = pg_reader_open,
    .reader_close = pg_reader_close,
    .service_open = pg_service_open,
    .pass_info = pg_pass_info,
    .register_device = pg_register_device,
    .unregister_device = pg_unregister_device,
    .serials_since = pg_serials_since,
    .service_stats = pg_service_stats,
    .lookup = pg_lookup,
    .scan = pg_scan,
    .count = pg_count,
    .template_versions = pg_template_versions,
    .show = pg_show,
    .stats = pg_stats,
    .export_rows = pg_export,
    .push_claim = pg_push_claim,
    .push_settle = pg_push_settle,
    .push_status = pg_push_status,
    .close = pg_close,
};

int pm_registry_pg_open(const char *conninfo, const char *password, pm_registry **out,
                        pm_error *err)
{
    *out = NULL;
    pg_registry *r = calloc(1, sizeof *r);
    if (!r || !(r->conninfo = strdup(conninfo)) || !(r->password = strdup(password ? password : ""))) {
        if (r)
            free(r->conninfo);
        free(r);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    r->base.ops = &pg_ops;
    r->conn = pg_connect(conninfo, password, err);
    if (!r->conn || ensure_schema(r->conn, err) != 0 || writer_setup(r->conn, err) != 0) {
        pg_close(&r->base);
        return -1;
    }
    *out = &r->base;
    return 0;
}
