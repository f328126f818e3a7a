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
};

static const char *const reader_statements[][2] = {
    {"lookup", "SELECT status, content_hash, pkpass_sha256, auth_token, update_tag, record"
               " FROM passes WHERE serial = $1"},
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
 * Is s valid UTF-8?  PostgreSQL refuses invalid text in a UTF8 database,
 * which would fail a whole batch; reject messages and file names may quote
 * raw input bytes, so those are cleaned (utf8_clean) before they are sent.
 */
static bool utf8_valid(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s;
        size_t n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 9;
        if (n == 9 || (n == 1 && c < 0xC2) || (n == 3 && c > 0xF4))
            return false;
        for (size_t i = 1; i <= n; i++)
            if ((s[i] & 0xC0) != 0x80)
                return false;
        if ((n == 2 && c == 0xE0 && s[1] < 0xA0) || (n == 2 && c == 0xED && s[1] >= 0xA0) ||
            (n == 3 && c == 0xF0 && s[1] < 0x90) || (n == 3 && c == 0xF4 && s[1] >= 0x90))
            return false; /* overlong, surrogate, above U+10FFFF */
        s += n + 1;
    }
    return true;
}

/* s itself when valid, else a copy in tmp (cap bytes) with every byte >= 0x80 as '?'. */
static const char *utf8_clean(const char *s, char *tmp, size_t cap)
{
    if (!s || utf8_valid((const unsigned char *)s))
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
    if (version == 0) {
        for (size_t i = 0; schema_v1[i]; i++)
            if (pg_exec(conn, schema_v1[i], "create the schema", err) != 0)
                goto fail;
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO schema_version (version) VALUES (%d)",
                 PM_REGISTRY_SCHEMA_VERSION);
        if (pg_exec(conn, sql, "create the schema", err) != 0)
            goto fail;
    }
    /* Migrations from version N to N+1 go here, each in this transaction. */
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
    /* The fingerprint stage leaves the canonical text in the job; a job made
     * another way gets it here. */
    char *dumped = job->record_json.len ? NULL : json_dumps(job->record, JSON_COMPACT | JSON_SORT_KEYS);
    if (!job->record_json.len && !dumped)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory for the registry row of %s", job->serial);
    const char *record = dumped ? dumped : pm_buf_cstr(&job->record_json);
    const char *p[16] = {job->serial, pm_registry_record_text(job, "template_id"), job->tmpl ? job->tmpl->version : "",
                         pm_registry_event_id(job), job->status ? job->status : "active", record,
                         job->content_hash, sha, pkpass_key, qr_key, job->auth_token, now, tagtext,
                         run_id, origin, expect};
    int rc = pipe_send(pl, "upsert", 16, p, "upsert pass", job->serial, err);
    free(dumped);
    if (rc != 0)
        return -1;
    const char *del[1] = {job->serial};
    if (pipe_send(pl, "del_groups", 1, del, "delete pass groups", job->serial, err) != 0)
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
    if (pg_alive(rd->conn, reader_setup, err) != 0)
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
        if (with_record && !PQgetisnull(res, 0, 5))
            out->record = json_loads(PQgetvalue(res, 0, 5), 0, NULL);
    }
    PQclear(res);
    return found;
}

/* ---- queries (main thread, writer connection) ---- */

static int64_t col_int(const PGresult *res, int row, int col)
{
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
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
    .lookup = pg_lookup,
    .show = pg_show,
    .stats = pg_stats,
    .export_rows = pg_export,
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
