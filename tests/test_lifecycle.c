/*
 * End-to-end tests of the lifecycle commands (docs/lifecycle.md): the real
 * binary on real files, SQLite and PostgreSQL registries.  Passes are
 * checked with Python's zipfile/hashlib/sqlite3 (tests/registry_check.py)
 * and `passmill verify`; PostgreSQL rows with libpq.
 *
 * PostgreSQL: PASSMILL_REGISTRY_URL (+ _PASSWORD_FILE) when set, else the
 * runner starts its own server with ops/pg-dev, as test_registry does; the
 * pg cases FAIL without one.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

/* ---- the PostgreSQL server (pmt_pg_start, tests/test_util.h) ---- */

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    pmt_pg_start("test_lifecycle");
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    pmt_pg_stop();
}

/* ---- one test's world ---- */

static char *work;
static bool pg;
static char schema[64], conninfo[1024];

static PGconn *pg_admin(void)
{
    char *password = pmt_pg_password();
    cr_assert_not_null(password, "cannot read PASSMILL_REGISTRY_PASSWORD_FILE");
    const char *keys[] = {"dbname", "password", NULL};
    const char *vals[] = {conninfo[0] ? conninfo : getenv("PASSMILL_REGISTRY_URL"), password, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    free(password);
    cr_assert(PQstatus(c) == CONNECTION_OK, "admin connection: %s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static void pg_sql(const char *sql)
{
    PGconn *c = pg_admin();
    PGresult *res = PQexec(c, sql);
    cr_assert(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
}

static void setup_backend(bool use_pg)
{
    pg = use_pg;
    work = pmt_tmpdir("lifecycle");
    cr_assert_not_null(work);
    setenv("W", work, 1);
    cr_assert_eq(pmt_sh("'%s' identity create \"$W/id\" >/dev/null", pmt_passmill()), 0);
    cr_assert_eq(pmt_sh("printf 'test-barcode-secret-of-32-bytes!' > \"$W/secret\""), 0);
    /* A copy of the templates: the reissue test changes one. */
    cr_assert_eq(pmt_sh("cp -r '%s/config/templates' \"$W/templates\"", PM_SOURCE_DIR), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/run.conf", work);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "input.path = %s/in.jsonl\ntemplate.dir = %s/templates\n", work, work);
    fprintf(f, "sign.cert = %s/id/signer.pem\nsign.key = %s/id/signer.key\nsign.chain = %s/id/wwdr.pem\n",
            work, work, work);
    fprintf(f, "barcode.secret_env = PM_TEST_NO_SUCH_VAR\nbarcode.secret_file = %s/secret\n", work);
    fprintf(f, "store.dir = %s/store\noutput.ledger = %s/ledger.jsonl.zst\noutput.rejects = %s/rejects.jsonl\n",
            work, work, work);
    if (pg) {
        const char *url = getenv("PASSMILL_REGISTRY_URL");
        cr_assert(url && *url, "no PostgreSQL server: ops/pg-dev start failed or PASSMILL_REGISTRY_URL unset");
        conninfo[0] = '\0';
        snprintf(schema, sizeof schema, "t_lc_%d", (int)getpid());
        char sql[256];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", schema, schema);
        pg_sql(sql);
        cr_assert_eq(pmt_pg_schema_url(conninfo, sizeof conninfo, schema), 0);
        fprintf(f, "registry.url = %s\n", conninfo);
        const char *pw = getenv("PASSMILL_REGISTRY_PASSWORD_FILE");
        if (pw && *pw)
            fprintf(f, "registry.password_file = %s\n", pw);
    } else {
        fprintf(f, "registry.path = %s/registry.db\n", work);
    }
    fprintf(f, "engine.workers = 2\nengine.progress_ms = 0\n");
    fclose(f);
}

static void setup_sqlite(void) { setup_backend(false); }
static void setup_pg(void) { setup_backend(true); }

static void teardown(void)
{
    if (pg) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", schema);
        pg_sql(sql);
        conninfo[0] = '\0';
    }
    pmt_rmrf(work);
    free(work);
}

/* One number from the registry; -1 when it cannot be read. */
static long sql_try_count(const char *query)
{
    if (pg) {
        PGconn *c = pg_admin();
        PGresult *res = PQexec(c, query);
        long n = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1
                     ? atol(PQgetvalue(res, 0, 0)) : -1;
        PQclear(res);
        PQfinish(c);
        return n;
    }
    /* In-process and read-only: the kill test polls this every few
     * milliseconds, which a python3 per poll could not keep up with. */
    char path[1024];
    snprintf(path, sizeof path, "%s/registry.db", work);
    sqlite3 *db = NULL;
    long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 2000);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, query, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

/* Registry rows and store objects one to one (tests/registry_check.py), on
 * either backend. */
static void check_registry_and_store(long count)
{
    char registry[1100], store[1100], args[64];
    if (pg)
        snprintf(registry, sizeof registry, "%s", conninfo);
    else
        snprintf(registry, sizeof registry, "%s/registry.db", work);
    snprintf(store, sizeof store, "%s/store", work);
    snprintf(args, sizeof args, "--count %ld", count);
    char *out = NULL;
    int rc = pmt_registry_check(&out, registry, store, args);
    cr_assert_eq(rc, 0, "registry rows and stored objects disagree: %s", out ? out : "");
    free(out);
}

static long sql_count(const char *query)
{
    long n = sql_try_count(query);
    cr_assert_geq(n, 0, "query failed: %s", query);
    return n;
}

/* `passmill ARGS -c run.conf`: exit status, *summary = stdout's last line. */
static int pm(char **summary, const char *args)
{
    int status;
    char *out = pmt_sh_out(&status, "'%s' %s -c \"$W/run.conf\" > \"$W/out.txt\" 2>>\"$W/stderr.txt\"; "
                           "rc=$?; tail -1 \"$W/out.txt\"; exit $rc", pmt_passmill(), args);
    cr_assert_not_null(out);
    out[strcspn(out, "\n")] = '\0';
    *summary = out;
    return status;
}

static void expect(const char *args, int want_status, const char *want_summary)
{
    char *s;
    int rc = pm(&s, args);
    cr_assert_eq(rc, want_status, "passmill %s: exit %d: %s", args, rc, s);
    if (want_summary)
        cr_assert_str_eq(s, want_summary, "passmill %s", args);
    free(s);
}

/*
 * N sample passes spread over three events (ev-0, ev-1, ev-2 by line) and
 * pass groups: g-even (even lines), g-three (every third line), so some
 * passes are in both and some in neither; issued with `passmill run`.
 */
static void issue(long n)
{
    cr_assert_eq(pmt_sh("'%s' sample --count %ld --seed 5 | python3 -c 'import json,sys\n"
                        "for i,l in enumerate(sys.stdin):\n"
                        "  r=json.loads(l); r[\"event\"][\"event_id\"]=\"ev-%%d\" %% (i %% 3)\n"
                        "  r[\"pass_group_ids\"]=([\"g-even\"] if i %% 2 == 0 else []) + ([\"g-three\"] if i %% 3 == 0 else [])\n"
                        "  print(json.dumps(r))' > \"$W/in.jsonl\"", pmt_passmill(), n), 0);
    char want[128];
    snprintf(want, sizeof want, "in=%ld passes=%ld unchanged=0 rejects=0", n, n);
    expect("run", 0, want);
}

/* sha256 of every stored pass of the selection, "serial sha" lines, into file. */
static void hashes(const char *where, const char *file)
{
    setenv("SEL", where, 1); /* through the environment: no shell quoting of Python */
    cr_assert_eq(pmt_sh("cd \"$W\" && python3 - \"$SEL\" > '%s' <<'EOF'\n"
                        "import json,sys,hashlib,os\n"
                        "for l in open('in.jsonl'):\n"
                        "  r=json.loads(l); s=r['serial_number']\n"
                        "  if eval(sys.argv[1], {'r': r}):\n"
                        "    print(s, hashlib.sha256(open('store/passes/%%s.pkpass' %% s,'rb').read()).hexdigest())\n"
                        "EOF", file), 0);
}

static long lines(const char *file)
{
    int st;
    char *out = pmt_sh_out(&st, "wc -l < \"$W/%s\"", file);
    long n = out ? atol(out) : -1;
    free(out);
    return n;
}

/* The selected passes: voided (or as want), no barcode, no QR object, and
 * each verifies against the test CA (with --ca: the chain too). */
static void check_voided(const char *where, const char *want_status)
{
    setenv("SEL", where, 1);
    setenv("WANT", want_status, 1);
    cr_assert_eq(pmt_sh("cd \"$W\" && python3 - \"$SEL\" \"$WANT\" <<'EOF'\n"
                        "import json,sys,zipfile,os\n"
                        "n=0\n"
                        "out=open('sel.txt','w')\n"
                        "for l in open('in.jsonl'):\n"
                        "  r=json.loads(l); s=r['serial_number']\n"
                        "  if not eval(sys.argv[1], {'r': r}): continue\n"
                        "  pj=json.loads(zipfile.ZipFile('store/passes/%%s.pkpass' %% s).read('pass.json'))\n"
                        "  inactive = sys.argv[2] != 'active'\n"
                        "  assert pj.get('voided', False) == (sys.argv[2] in ('voided','redeemed')), s\n"
                        "  assert ('barcodes' in pj or 'barcode' in pj) != inactive, s\n"
                        "  assert os.path.exists('store/qr/%%s.png' %% s) != inactive, s\n"
                        "  st=[f for f in pj['eventTicket'].get('backFields',[]) if f['key']=='status']\n"
                        "  assert bool(st) == inactive, s\n"
                        "  print('store/passes/%%s.pkpass' %% s, file=out); n+=1\n"
                        "assert n > 0\n"
                        "EOF"), 0, "pass.json / QR check failed for %s", where);
    cr_assert_eq(pmt_sh("cd \"$W\" && xargs '%s' verify --quiet --ca id/ca.pem < sel.txt", pmt_passmill()), 0,
                 "passmill verify failed");
}

/* ---- mass void ---- */

static void mass_void(long n)
{
    issue(n);
    long per_event = sql_count("SELECT count(*) FROM passes WHERE event_id = 'ev-1'");
    cr_assert_eq(per_event, (n + 1) / 3);
    hashes("r['event']['event_id'] != 'ev-1'", "others.before");

    char want[128];
    snprintf(want, sizeof want, "in=%ld passes=%ld unchanged=0 rejects=0", per_event, per_event);
    expect("void --event ev-1 --message 'The match is postponed'", 0, want);
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE event_id = 'ev-1' AND status = 'voided'"),
                 per_event);
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE status = 'active'"), n - per_event);
    check_voided("r['event']['event_id'] == 'ev-1'", "voided");
    /* No pass of another event changed, and their QR images are there. */
    hashes("r['event']['event_id'] != 'ev-1'", "others.after");
    cr_assert_eq(pmt_sh("cmp -s \"$W/others.before\" \"$W/others.after\""), 0);
    cr_assert_eq(lines("others.after"), n - per_event);
    check_registry_and_store(n);
    /* The message is Apple's changeMessage, with the %@ it must contain. */
    cr_assert_eq(pmt_sh("cd \"$W\" && s=$(sed -n 2p in.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"serial_number\"])') && "
                        "unzip -p store/passes/$s.pkpass pass.json | grep -q '\"changeMessage\":\"The match is postponed %%@\"'"), 0);

    /* Again: already voided, nothing changes. */
    snprintf(want, sizeof want, "in=%ld passes=0 unchanged=%ld rejects=0", per_event, per_event);
    expect("void --event ev-1 --message 'The match is postponed'", 0, want);
}

TestSuite(lifecycle, .init = setup_sqlite, .fini = teardown, .timeout = 900);
TestSuite(lifecycle_pg, .init = setup_pg, .fini = teardown, .timeout = 900);

static long env_count(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? atol(v) : dflt;
}

Test(lifecycle, mass_void_of_one_event_among_three)
{
    mass_void(env_count("PM_TEST_LIFECYCLE_RECORDS", 20000));
}

Test(lifecycle_pg, mass_void_of_one_event_among_three)
{
    mass_void(env_count("PM_TEST_LIFECYCLE_PG_RECORDS", 3000));
}

/* ---- groups, serials, dry run, activate ---- */

static void groups(void)
{
    issue(600);
    /* Dry run: the list and the count, and nothing written. */
    cr_assert_eq(pmt_sh("cd \"$W\" && find store -type f | sort | xargs sha256sum > store.before"), 0);
    long tag = sql_count("SELECT max(update_tag) FROM passes"), runs = sql_count("SELECT count(*) FROM runs");
    int st;
    char *out = pmt_sh_out(&st, "'%s' void -c \"$W/run.conf\" --group g-three --dry-run", pmt_passmill());
    cr_assert_eq(st, 0);
    cr_assert_not_null(strstr(out, ": active -> voided\n"));
    cr_assert_not_null(strstr(out, "dry run: 200 of 200 selected passes would change to voided"), "%s", out);
    free(out);
    cr_assert_eq(pmt_sh("cd \"$W\" && find store -type f | sort | xargs sha256sum | cmp -s - store.before"), 0);
    cr_assert_eq(sql_count("SELECT max(update_tag) FROM passes"), tag);
    cr_assert_eq(sql_count("SELECT count(*) FROM runs"), runs);
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE status <> 'active'"), 0);

    /* Group g-three: lines 0, 3, 6, ... (half of them also in g-even). */
    expect("redeem --group g-three", 0, "in=200 passes=200 unchanged=0 rejects=0");
    check_voided("'g-three' in r['pass_group_ids']", "redeemed");
    check_voided("'g-three' not in r['pass_group_ids']", "active");
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE status = 'redeemed'"), 200);
    /* g-even now: its g-three passes are redeemed, the rest turn voided. */
    expect("void --group g-even", 0, "in=300 passes=300 unchanged=0 rejects=0");
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE status = 'voided'"), 300);
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE status = 'redeemed'"), 100);
    /* Event and group together: both must match. */
    expect("expire --event ev-2 --group g-even", 0, "in=100 passes=100 unchanged=0 rejects=0");
    check_voided("r['event']['event_id'] == 'ev-2' and 'g-even' in r['pass_group_ids']", "expired");
    expect("expire --event ev-2 --group g-even", 0, "in=100 passes=0 unchanged=100 rejects=0");
    /* Activate by serial brings the barcode and the QR back; an unknown serial is a reject. */
    out = pmt_sh_out(&st, "head -1 \"$W/in.jsonl\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"serial_number\"], end=\"\")'");
    char args[512];
    snprintf(args, sizeof args, "activate --serial %s --serial NO-SUCH-SERIAL", out);
    expect(args, 1, "in=2 passes=1 unchanged=0 rejects=1");
    cr_assert_eq(sql_count("SELECT count(*) FROM rejects WHERE code = 'serial.unknown'"), 1);
    free(out);
    check_voided("r['serial_number'] == open('in.jsonl').readline().split('\"serial_number\": \"')[1].split('\"')[0]",
                 "active");
    check_registry_and_store(600);
    /* A selection is required: void without one is a usage error. */
    expect("void", 2, NULL);
}

Test(lifecycle, group_selection_dry_run_and_activate) { groups(); }
Test(lifecycle_pg, group_selection_dry_run_and_activate) { groups(); }

/* ---- reissue ---- */

static void reissue(void)
{
    issue(500);
    expect("void --event ev-0", 0, "in=167 passes=167 unchanged=0 rejects=0");
    expect("reissue", 0, "in=500 passes=0 unchanged=500 rejects=0");
    cr_assert_eq(pmt_sh("grep -q '\"backgroundColor\": \"rgb(20, 33, 61)\"' \"$W/templates/stadium/pass.json\""), 0);
    cr_assert_eq(pmt_sh("sed -i 's/\"backgroundColor\": \"rgb(20, 33, 61)\"/\"backgroundColor\": \"rgb(200, 16, 46)\"/' "
                        "\"$W/templates/stadium/pass.json\""), 0);
    hashes("True", "all.before");
    expect("reissue", 0, "in=500 passes=500 unchanged=0 rejects=0");
    /* Every pass re-signed with the new colour, its status kept. */
    cr_assert_eq(pmt_sh("cd \"$W\" && python3 - <<'EOF'\n"
                        "import json,zipfile\n"
                        "for l in open('in.jsonl'):\n"
                        "  r=json.loads(l); s=r['serial_number']\n"
                        "  pj=json.loads(zipfile.ZipFile('store/passes/%%s.pkpass' %% s).read('pass.json'))\n"
                        "  assert pj['backgroundColor'] == 'rgb(200, 16, 46)', s\n"
                        "  assert pj.get('voided', False) == (r['event']['event_id'] == 'ev-0'), s\n"
                        "EOF"), 0);
    hashes("True", "all.after");
    cr_assert_eq(pmt_sh("cd \"$W\" && join all.before all.after | awk '$2 == $3' | wc -l | grep -qx 0"), 0);
    cr_assert_eq(pmt_sh("cd \"$W\" && cut -d' ' -f1 all.after | sed 's,^,store/passes/,; s,$,.pkpass,' > sel.txt && "
                        "xargs '%s' verify --quiet --ca id/ca.pem < sel.txt", pmt_passmill()), 0);
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE status = 'voided'"), 167);
    expect("reissue", 0, "in=500 passes=0 unchanged=500 rejects=0");
    /* templates: one version in use, the current one. */
    int st;
    char *out = pmt_sh_out(&st, "'%s' templates -c \"$W/run.conf\"", pmt_passmill());
    cr_assert_eq(st, 0);
    cr_assert(strstr(out, "stadium") && strstr(out, "500  (current)"), "%s", out);
    free(out);
    /* --template selects: an unknown one selects nothing. */
    expect("reissue --template nope", 0, "in=0 passes=0 unchanged=0 rejects=0");
}

Test(lifecycle, template_colour_change_then_reissue) { reissue(); }
Test(lifecycle_pg, template_colour_change_then_reissue) { reissue(); }

/* ---- kill -9 ---- */

/*
 * kill -9 in the middle of a mass void (3 times), then the same command
 * again finishes it: every pass voided, each recorded as voided exactly
 * once (one results row), the store agrees with the registry.
 */
Test(lifecycle, kill_9_during_mass_void_then_rerun)
{
    long n = env_count("PM_TEST_LIFECYCLE_KILL_RECORDS", 4500);
    issue(n);
    long sel = sql_count("SELECT count(*) FROM passes WHERE event_id = 'ev-1'");
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    /*
     * Each kill lands 0-40 ms after the first commit that passes a random
     * target within the next quarter of what is left.  Commits come a
     * batch at a time (up to 256 passes), so a fixed target would often be
     * passed by the last one; a quarter of the rest always leaves work for
     * the kill to cut, and the delay puts it anywhere in the batch after.
     */
    long before = 0;
    int cut = 0; /* kills that left the selection part done */
    for (int k = 0; k < 3 && before < sel; k++) {
        long target = before + 1 + rand() % ((sel - before) / 4 + 1);
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "exec '%s' void --event ev-1 -c '%s/run.conf' >/dev/null 2>>'%s/stderr.txt'",
                 pmt_passmill(), work, work);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        for (int waited = 0; waited < 30000; waited++) { /* 60 s at most */
            usleep(2000);
            if (sql_try_count("SELECT count(*) FROM passes WHERE status = 'voided'") >= target)
                break;
        }
        usleep((useconds_t)(rand() % 40) * 1000);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        before = sql_count("SELECT count(*) FROM passes WHERE status = 'voided'");
        if (before > 0 && before < sel)
            cut++;
    }
    cr_log_info("%d of the kills cut the void; %ld of %ld voided before the rerun", cut, before, sel);
    cr_assert_geq(cut, 1, "no kill landed in the middle of the void (%ld of %ld voided)", before, sel);
    char *s;
    cr_assert_eq(pm(&s, "void --event ev-1"), 0, "%s", s);
    long in, passes, unchanged, rejects;
    cr_assert_eq(sscanf(s, "in=%ld passes=%ld unchanged=%ld rejects=%ld", &in, &passes, &unchanged, &rejects), 4);
    cr_assert_eq(in, sel);
    cr_assert_eq(passes + unchanged, sel, "%s", s);
    cr_assert_geq(unchanged, before, "%s", s);
    free(s);
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE event_id = 'ev-1' AND status = 'voided'"), sel);
    cr_assert_eq(sql_count("SELECT count(*) FROM results WHERE outcome = 'pass' AND status = 'voided'"), sel);
    cr_assert_eq(sql_count("SELECT count(DISTINCT serial) FROM results WHERE outcome = 'pass' AND status = 'voided'"), sel);
    check_registry_and_store(n);
    check_voided("r['event']['event_id'] == 'ev-1'", "voided");
    char want[128];
    snprintf(want, sizeof want, "in=%ld passes=0 unchanged=%ld rejects=0", sel, sel);
    expect("void --event ev-1", 0, want);
}
