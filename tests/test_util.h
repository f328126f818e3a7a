/*
 * test_util.h - small helpers shared by the Criterion tests.
 */
#ifndef PM_TEST_UTIL_H
#define PM_TEST_UTIL_H

#include <stddef.h>

/* A fresh empty temporary directory (malloc'd path; removed by pmt_rmrf). */
char *pmt_tmpdir(const char *tag);
/* rm -rf path. */
void pmt_rmrf(const char *path);
/* Run a shell command; returns its exit status (or -1). Output to stderr. */
int pmt_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Run a shell command and capture stdout (malloc'd, NUL-terminated) and exit status. */
char *pmt_sh_out(int *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Write len bytes to path; returns 0 or -1. */
int pmt_write_file(const char *path, const void *data, size_t len);
/* Read a whole file (malloc'd, NUL-terminated); *len gets its size. NULL on error. */
char *pmt_read_file(const char *path, size_t *len);
/* PM_SOURCE_DIR "/" rel, in a static buffer per call site (copy it). */
const char *pmt_src(const char *rel);
/* The passmill binary (env PASSMILL_BIN, else PM_BINARY_DIR/passmill). */
const char *pmt_passmill(void);

/*
 * A development server of ops/ (ops/pg-dev, ops/s3-dev): `DIR_VAR=dir
 * SCRIPT start`, its "export NAME=VALUE" lines set in this process's
 * environment; 0, or -1 when it failed (a message on stderr naming who;
 * what it started is stopped).  stop: `DIR_VAR=dir SCRIPT stop`.  script is
 * relative to the source tree.
 */
int pmt_dev_server_start(const char *script, const char *dir_var, const char *dir, const char *who);
void pmt_dev_server_stop(const char *script, const char *dir_var, const char *dir);

/*
 * PostgreSQL for the pg cases.  No libpq here (every test links this file):
 * the server is the one PASSMILL_REGISTRY_URL names (password in
 * PASSMILL_REGISTRY_PASSWORD or PASSMILL_REGISTRY_PASSWORD_FILE), else a
 * private `ops/pg-dev` server in a folder of the caller's.
 */
/* From a test program's PRE_ALL report hook.  Without PASSMILL_REGISTRY_URL:
 * `ops/pg-dev start` in /tmp/passmill-pg-WHO-PID, its exports
 * (PASSMILL_REGISTRY_URL, ..._PASSWORD_FILE, PASSMILL_PG_DIR) set in this
 * process's environment; returns 1.  0 when the variable was set already,
 * -1 when the server could not be started (a message on stderr, who names the caller). */
int pmt_pg_start(const char *who);
/* From POST_ALL: stops the server pmt_pg_start() started (if it did), removes its folder. */
void pmt_pg_stop(void);
/* The password as passmill reads it: PASSMILL_REGISTRY_PASSWORD, else the
 * first line of PASSMILL_REGISTRY_PASSWORD_FILE, else "" (malloc'd; NULL
 * when the file cannot be read). */
char *pmt_pg_password(void);
/* PASSMILL_REGISTRY_URL with search_path set to schema (libpq's
 * options=-csearch_path=SCHEMA, percent-encoded), into out; -1 when the
 * variable is unset or out too small. */
int pmt_pg_schema_url(char *out, size_t size, const char *schema);
/* python3 tests/registry_check.py REGISTRY STORE ARGS: REGISTRY a SQLite
 * file or a postgresql:// URL (psql's password, as pmt_pg_password finds
 * it, through PGPASSWORD, never argv).  Returns its exit status; *output
 * gets what it printed (malloc'd). */
int pmt_registry_check(char **output, const char *registry, const char *store, const char *args);

#endif
