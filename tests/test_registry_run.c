/*
 * End-to-end tests of `passmill run` with a registry: the real binary, real
 * files; the registry and the store are checked against each other by
 * tests/registry_check.py (Python's sqlite3 or psql, hashlib, zipfile).
 *
 * Suite registry_run uses a SQLite file, registry_run_pg the same cases on
 * PostgreSQL (a schema per test): the server named by PASSMILL_REGISTRY_URL
 * (password in PASSMILL_REGISTRY_PASSWORD_FILE), else one this runner starts
 * with ops/pg-dev in a private folder; without one the pg cases FAIL.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "test_util.h"

static char *work; /* per-test temporary folder */
static bool use_pg; /* this test's registry is PostgreSQL ($REG is its URL) */

/* ---- the PostgreSQL server (pmt_pg_start, tests/test_util.h) ---- */

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    pmt_pg_start("test_registry_run");
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    pmt_pg_stop();
}

/* psql's connection: the base URL, the password through PGPASSWORD (never argv). */
static void pg_env(void)
{
    const char *url = getenv("PASSMILL_REGISTRY_URL");
    const char *pwfile = getenv("PASSMILL_REGISTRY_PASSWORD_FILE");
    cr_assert(url && *url && pwfile && *pwfile,
              "no PostgreSQL server: ops/pg-dev start failed or PASSMILL_REGISTRY_URL unset");
    char *pw = pmt_pg_password();
    cr_assert(pw, "cannot read %s", pwfile);
    setenv("PGPASSWORD", pw, 1);
    free(pw);
    char schema[64], reg[1024];
    snprintf(schema, sizeof schema, "t_run_%d", (int)getpid());
    setenv("PGSCHEMA", schema, 1);
    cr_assert_eq(pmt_pg_schema_url(reg, sizeof reg, schema), 0);
    setenv("REG", reg, 1);
}

/* An empty registry: a new SQLite file, or the test's schema dropped and made again. */
static void reset_registry(void)
{
    if (use_pg)
        cr_assert_eq(pmt_sh("psql -X -q -v ON_ERROR_STOP=1 \"$PASSMILL_REGISTRY_URL\" -c "
                            "\"SET client_min_messages = warning; DROP SCHEMA IF EXISTS $PGSCHEMA CASCADE;"
                            " CREATE SCHEMA $PGSCHEMA\" >/dev/null"), 0);
    else
        cr_assert_eq(pmt_sh("rm -f \"$W\"/registry.db*"), 0);
}

static void setup(void)
{
    work = pmt_tmpdir("regrun");
    cr_assert_not_null(work);
    setenv("W", work, 1); /* shell commands below say "$W" */
    setenv("CHECK", pmt_src("tests/registry_check.py"), 1);
    cr_assert_eq(pmt_sh("'%s' identity create '%s/id' >/dev/null", pmt_passmill(), work), 0);
    cr_assert_eq(pmt_sh("printf 'test-barcode-secret-of-32-bytes!' > '%s/secret'", work), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/run.conf", work);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "input.path = %s/in.jsonl\ntemplate.dir = %s/config/templates\n", work, PM_SOURCE_DIR);
    fprintf(f, "sign.cert = %s/id/signer.pem\nsign.key = %s/id/signer.key\nsign.chain = %s/id/wwdr.pem\n",
            work, work, work);
    fprintf(f, "barcode.secret_env = PM_TEST_NO_SUCH_VAR\nbarcode.secret_file = %s/secret\n", work);
    fprintf(f, "store.dir = %s/store\noutput.ledger = %s/ledger.jsonl.zst\noutput.rejects = %s/rejects.jsonl\n",
            work, work, work);
    if (use_pg) {
        pg_env();
        fprintf(f, "registry.url = %s\nregistry.password_env = PM_TEST_NO_SUCH_VAR\n", getenv("REG"));
        fprintf(f, "registry.password_file = %s\n", getenv("PASSMILL_REGISTRY_PASSWORD_FILE"));
        reset_registry();
    } else {
        fprintf(f, "registry.path = %s/registry.db\n", work);
        char reg[1024];
        snprintf(reg, sizeof reg, "%s/registry.db", work);
        setenv("REG", reg, 1);
    }
    fprintf(f, "engine.workers = 2\nengine.progress_ms = 0\n");
    fclose(f);
}

static void setup_pg(void)
{
    use_pg = true;
    setup();
}

static void teardown(void)
{
    pmt_sh("umount \"$W/small\" 2>/dev/null; true"); /* a disk-full test that failed midway */
    if (use_pg)
        pmt_sh("psql -X -q \"$PASSMILL_REGISTRY_URL\" -c \"SET client_min_messages = warning;"
               " DROP SCHEMA IF EXISTS $PGSCHEMA CASCADE\" >/dev/null");
    pmt_rmrf(work);
    free(work);
}

/* Run passmill with the test config; returns the exit status, *summary = stdout's first line. */
static int run(char **summary, const char *extra)
{
    int status;
    char *out = pmt_sh_out(&status, "'%s' run -c '%s/run.conf' %s 2>>'%s/stderr.txt'",
                           pmt_passmill(), work, extra ? extra : "", work);
    cr_assert_not_null(out);
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = '\0';
    *summary = out;
    return status;
}

/* One number from the registry, read with Python's sqlite3 or psql; -1 when it cannot be read. */
static long sql_try_count(const char *query)
{
    int status;
    setenv("Q", query, 1); /* through the environment: no shell quoting of SQL */
    char *out = use_pg ? pmt_sh_out(&status, "psql -X -At -v ON_ERROR_STOP=1 -c \"$Q\" \"$REG\" 2>/dev/null")
                       : pmt_sh_out(&status, "python3 -c 'import sqlite3,sys; "
                                    "print(sqlite3.connect(\"file:\"+sys.argv[1]+\"?mode=ro\", uri=True)"
                                    ".execute(sys.argv[2]).fetchone()[0])' "
                                    "\"$REG\" \"$Q\" 2>/dev/null");
    long n = out && status == 0 ? atol(out) : -1;
    free(out);
    return n;
}

static long sql_count(const char *query)
{
    long n = sql_try_count(query);
    cr_assert_geq(n, 0, "query failed: %s", query);
    return n;
}

TestSuite(registry_run, .init = setup, .fini = teardown, .timeout = 900);
TestSuite(registry_run_pg, .init = setup_pg, .fini = teardown, .timeout = 900);

/* A case on both backends. */
#define BOTH(name)                                                                                \
    Test(registry_run, name) { case_##name(); }                                                   \
    Test(registry_run_pg, name) { case_##name(); }

static void case_second_run_is_unchanged_and_rows_match_the_store(void)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 150 --seed 3 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0, "%s", summary);
    cr_assert_str_eq(summary, "in=150 passes=150 unchanged=0 rejects=0");
    free(summary);
    cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/store\" --count 150 --status active"), 0);
    /* Inode numbers: a rewrite (temp file + rename) would change them. */
    cr_assert_eq(pmt_sh("cd \"$W\" && stat -c '%%n %%i' store/passes/* store/qr/* > inodes1"), 0);

    cr_assert_eq(run(&summary, "--workers 4"), 0, "%s", summary);
    cr_assert_str_eq(summary, "in=150 passes=0 unchanged=150 rejects=0");
    free(summary);
    /* Nothing was rewritten, and the registry still matches the store. */
    cr_assert_eq(pmt_sh("cd \"$W\" && stat -c '%%n %%i' store/passes/* store/qr/* | cmp -s - inodes1"), 0);
    cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/store\" --count 150"), 0);

    /* Two runs, every row carries its run id; export gives 300 result lines. */
    cr_assert_eq(sql_count("SELECT count(*) FROM runs WHERE finished_at IS NOT NULL"), 2);
    cr_assert_eq(sql_count("SELECT count(DISTINCT run_id) FROM results"), 2);
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE length(auth_token) >= 16"), 150);
    int status;
    char *out = pmt_sh_out(&status, "'%s' export -c \"$W/run.conf\" | python3 -c 'import json,sys,collections;"
                           "c=collections.Counter(json.loads(l)[\"outcome\"] for l in sys.stdin); print(c[\"pass\"], c[\"unchanged\"])'",
                           pmt_passmill());
    cr_assert_eq(status, 0);
    cr_assert_str_eq(out, "150 150\n");
    free(out);
    /* show: the stored record and no token */
    out = pmt_sh_out(&status, "s=$(head -1 \"$W/in.jsonl\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"serial_number\"])');"
                     "'%s' show -c \"$W/run.conf\" \"$s\" | python3 -c 'import json,sys; r=json.load(sys.stdin);"
                     "print(r[\"status\"], r[\"record\"][\"serial_number\"]==r[\"serial\"], \"auth_token\" in r)'",
                     pmt_passmill());
    cr_assert_eq(status, 0);
    cr_assert_str_eq(out, "active True False\n");
    free(out);
    out = pmt_sh_out(&status, "'%s' stats -c \"$W/run.conf\"", pmt_passmill());
    cr_assert_str_eq(out, "active=150 voided=0 expired=0 redeemed=0 total=150 rejects=0\n");
    free(out);
}
BOTH(second_run_is_unchanged_and_rows_match_the_store)

static void case_issue_of_a_known_serial_with_other_content_is_rejected(void)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 5 --seed 4 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0, "%s", summary);
    free(summary);
    /* Same serials: record 1 with another holder (ISSUE), record 2 the same as an UPDATE with another holder. */
    cr_assert_eq(pmt_sh("cd \"$W\" && python3 -c 'import json,sys\n"
                        "rs=[json.loads(l) for l in open(\"in.jsonl\")]\n"
                        "rs[0][\"attendee\"][\"holder_name\"]=\"Someone Else\"\n"
                        "rs[1][\"attendee\"][\"holder_name\"]=\"Someone Else\"; rs[1][\"action\"]=\"UPDATE\"\n"
                        "open(\"in.jsonl\",\"w\").write(\"\".join(json.dumps(r)+\"\\n\" for r in rs))'"), 0);
    cr_assert_eq(run(&summary, NULL), 1, "%s", summary);
    cr_assert_str_eq(summary, "in=5 passes=1 unchanged=3 rejects=1");
    free(summary);
    cr_assert_eq(pmt_sh("grep -q '\"code\": *\"serial.exists\"' \"$W/rejects.jsonl\""), 0);
    cr_assert_eq(sql_count("SELECT count(*) FROM rejects WHERE code = 'serial.exists' AND field = 'serial_number'"), 1);
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE record LIKE '%Someone Else%'"), 1);
    cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/store\" --count 5"), 0);
}
BOTH(issue_of_a_known_serial_with_other_content_is_rejected)

/*
 * Requests for one serial apply in input order whatever the worker count:
 * ISSUE, UPDATE, VOID of each of 80 serials back to back (A1 A2 A3 B1 ...),
 * 4 workers, so the three are in flight together: every pass ends voided,
 * in the registry and in the store.
 */
static void case_last_request_for_a_serial_wins_with_4_workers(void)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 80 --seed 6 > \"$W/base.jsonl\"", pmt_passmill()), 0);
    cr_assert_eq(pmt_sh("cd \"$W\" && python3 -c 'import json\n"
                        "rs=[json.loads(l) for l in open(\"base.jsonl\")]\n"
                        "out=[]\n"
                        "for r in rs:\n"
                        "  for step in (\"ISSUE\",\"UPDATE\",\"VOID\"):\n"
                        "    r=dict(r); r[\"action\"]=step\n"
                        "    if step==\"UPDATE\": r[\"attendee\"]=dict(r[\"attendee\"], seat=\"99\")\n"
                        "    if step==\"VOID\": r[\"attendee\"]=dict(r[\"attendee\"], seat=\"99\")\n"
                        "    out.append(json.dumps(r))\n"
                        "open(\"in.jsonl\",\"w\").write(\"\\n\".join(out)+\"\\n\")'"), 0);
    for (int round = 0; round < 3; round++) {
        char *summary;
        cr_assert_eq(pmt_sh("rm -rf \"$W/store\""), 0);
        reset_registry();
        cr_assert_eq(run(&summary, "--workers 4 -X engine.queue_size=64"), 0, "%s", summary);
        cr_assert_str_eq(summary, "in=240 passes=240 unchanged=0 rejects=0");
        free(summary);
        cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/store\" --count 80 --status voided"), 0,
                     "round %d: not every serial ended voided", round);
        cr_assert_eq(sql_count(use_pg ? "SELECT count(*) FROM passes WHERE"
                                        " record::json -> 'attendee' ->> 'seat' IS DISTINCT FROM '99'"
                                      : "SELECT count(*) FROM passes WHERE"
                                        " json_extract(record, '$.attendee.seat') IS NOT '99'"), 0);
        /* Update tags follow commit order: the VOIDs were committed last. */
        cr_assert_eq(sql_count("SELECT count(*) FROM results r WHERE action = 'VOID' AND "
                               "id < (SELECT max(id) FROM results WHERE serial = r.serial AND action <> 'VOID')"), 0);
    }
}
BOTH(last_request_for_a_serial_wins_with_4_workers)

/*
 * kill -9 at random moments during a 20,000-record run (5 times), then
 * running it again finishes the job: registry rows and store objects agree
 * one to one, no temporary file is left, and one more run is all unchanged.
 */
static void case_kill_9_then_rerun_finishes_the_job(void)
{
    const char *env = getenv("PM_TEST_KILL_RECORDS");
    long records = env && *env ? atol(env) : 20000;
    cr_assert_eq(pmt_sh("'%s' sample --count %ld --seed 11 > \"$W/in.jsonl\"", pmt_passmill(), records), 0);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    long committed_before = 0;
    for (int kill_no = 0; kill_no < 5; kill_no++) {
        /* Kill once this run has committed some new rows (or after 20 s). */
        long target = committed_before + 200 + rand() % 1500;
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "exec '%s' run -c '%s/run.conf' >/dev/null 2>>'%s/stderr.txt'",
                 pmt_passmill(), work, work);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        for (int waited = 0; waited < 200; waited++) {
            usleep(100000);
            if (sql_try_count("SELECT count(*) FROM passes") >= target)
                break;
        }
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        committed_before = sql_count("SELECT count(*) FROM passes");
        if (committed_before >= records)
            break;
    }
    char *summary;
    int rc = run(&summary, NULL);
    cr_assert_eq(rc, 0, "the run after the kills: %s", summary);
    long in, passes, unchanged, rejects;
    cr_assert_eq(sscanf(summary, "in=%ld passes=%ld unchanged=%ld rejects=%ld", &in, &passes, &unchanged,
                        &rejects), 4, "%s", summary);
    cr_assert_eq(in, records);
    cr_assert_eq(passes + unchanged, records, "%s", summary);
    cr_assert_gt(unchanged, 0, "the killed runs' work was redone: %s", summary);
    free(summary);
    cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/store\" --count %ld", records), 0);
    cr_assert_eq(run(&summary, NULL), 0, "%s", summary);
    char expect[128];
    snprintf(expect, sizeof expect, "in=%ld passes=0 unchanged=%ld rejects=0", records, records);
    cr_assert_str_eq(summary, expect);
    free(summary);
}
BOTH(kill_9_then_rerun_finishes_the_job)

/*
 * Two processes change the same serials at the same moment, into one store
 * and one registry: each pass row must describe the object the store holds.
 * Before apply() was conditional (the row's update_tag still the one seen at
 * lookup) the store could keep one process's .pkpass while the row was the
 * other's.  Rounds of UPDATEs of 200 serials, both runs in input order, so
 * they meet on the same serials.
 */
static void case_two_processes_changing_the_same_serials_agree_with_the_store(void)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 200 --seed 21 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0, "%s", summary);
    free(summary);
    for (int round = 0; round < 4; round++) {
        cr_assert_eq(pmt_sh("cd \"$W\" && python3 -c 'import json,sys\n"
                            "rs=[json.loads(l) for l in open(\"in.jsonl\")]\n"
                            "for who in \"ab\":\n"
                            "  with open(who+\".jsonl\",\"w\") as f:\n"
                            "    for r in rs:\n"
                            "      r=dict(r, action=\"UPDATE\"); r[\"attendee\"]=dict(r[\"attendee\"], seat=who+sys.argv[1])\n"
                            "      f.write(json.dumps(r)+\"\\n\")' %d", round), 0);
        int status;
        char *out = pmt_sh_out(&status,
                               "cd \"$W\" && for x in a b; do '%s' run -c run.conf -X input.path=$x.jsonl"
                               " -X output.rejects=rejects-$x.jsonl >summary-$x.txt 2>>stderr.txt & eval pid_$x=$!; done;"
                               " wait $pid_a; ea=$?; wait $pid_b; eb=$?; echo $ea $eb; cat summary-a.txt summary-b.txt",
                               pmt_passmill());
        cr_assert(out && status == 0);
        int ea = -1, eb = -1;
        long in[2], passes[2], unchanged[2], rejects[2];
        cr_assert_eq(sscanf(out, "%d %d in=%ld passes=%ld unchanged=%ld rejects=%ld in=%ld passes=%ld unchanged=%ld rejects=%ld",
                            &ea, &eb, &in[0], &passes[0], &unchanged[0], &rejects[0], &in[1], &passes[1],
                            &unchanged[1], &rejects[1]), 10, "round %d: %s", round, out);
        /* 1 only for a serial.conflict reject (another process won 9 times in a row) */
        cr_assert((ea == 0 || ea == 1) && (eb == 0 || eb == 1), "round %d: %s", round, out);
        for (int k = 0; k < 2; k++)
            cr_assert_eq(in[k], passes[k] + unchanged[k] + rejects[k], "round %d: %s", round, out);
        free(out);
        cr_assert_eq(sql_count("SELECT count(*) FROM rejects WHERE code <> 'serial.conflict'"), 0);
        cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/store\" --count 200"), 0,
                     "round %d: registry rows and stored objects disagree", round);
    }
}
BOTH(two_processes_changing_the_same_serials_agree_with_the_store)

/*
 * Two passmill processes in one Kafka consumer group on one PostgreSQL
 * registry (a `passmill devbroker`, 4 partitions): together they handle
 * every record once as a pass (a record a rebalance handed to the other
 * process again is `unchanged` there), rows and objects agree one to one,
 * every offset has its row, and the two summaries add up to the rows.
 */
Test(registry_run_pg, two_processes_in_one_consumer_group_share_the_registry, .timeout = 300)
{
    enum { N = 3000 };
    cr_assert_eq(pmt_sh("cd \"$W\" && '%s' devbroker --partitions 4 --topics req,res,dlq --bootstrap-file bootstrap"
                        " >/dev/null 2>broker.err & echo $! > \"$W/broker.pid\"", pmt_passmill()), 0);
    cr_assert_eq(pmt_sh("for i in $(seq 300); do [ -s \"$W/bootstrap\" ] && exit 0; sleep 0.1; done; exit 1"), 0,
                 "devbroker did not start");
    int status;
    char *out = pmt_sh_out(&status, "'%s' sample --count %d --seed 31 > \"$W/in.jsonl\" && "
                           "'%s' produce -b \"$(cat \"$W/bootstrap\")\" -t req --format json \"$W/in.jsonl\"",
                           pmt_passmill(), N, pmt_passmill());
    cr_assert_eq(status, 0, "%s", out);
    free(out);
    out = pmt_sh_out(&status,
                     "cd \"$W\" && bs=$(cat bootstrap) && for x in a b; do '%s' run -c run.conf -X input.type=kafka"
                     " -X kafka.brokers=$bs -X kafka.group_id=shared -X kafka.topic.requests=req"
                     " -X kafka.topic.results=res -X kafka.topic.rejects=dlq -X kafka.value_format=json"
                     " -X kafka.exit_on_eof=true -X kafka.session.timeout.ms=6000 -X kafka.heartbeat.interval.ms=300"
                     " -X kafka.fetch.wait.max.ms=10 -X kafka.auto.commit.interval.ms=100 -X store.fsync=false"
                     " -X output.rejects=rejects-$x.jsonl >summary-$x.txt 2>stderr-$x.txt & eval pid_$x=$!; sleep 1; done;"
                     " wait $pid_a; ea=$?; wait $pid_b; eb=$?; kill $(cat broker.pid); echo $ea $eb;"
                     " cat summary-a.txt summary-b.txt",
                     pmt_passmill());
    cr_assert(out && status == 0);
    int ea = -1, eb = -1;
    long in[2], passes[2], unchanged[2], rejects[2];
    cr_assert_eq(sscanf(out, "%d %d in=%ld passes=%ld unchanged=%ld rejects=%ld in=%ld passes=%ld unchanged=%ld rejects=%ld",
                        &ea, &eb, &in[0], &passes[0], &unchanged[0], &rejects[0], &in[1], &passes[1], &unchanged[1],
                        &rejects[1]), 10, "%s", out);
    cr_assert(ea == 0 && eb == 0, "exit %d %d (see $W/stderr-*.txt): %s", ea, eb, out);
    cr_assert(passes[0] > 0 && passes[1] > 0, "one process did all the work: %s", out);
    cr_assert_eq(rejects[0] + rejects[1], 0, "%s", out);
    /* Every record once as a pass; a redelivered one is unchanged, or a pass
     * again when both processes had it in flight at once (the one that lost
     * made it again: docs/registry.md). */
    cr_assert_geq(passes[0] + passes[1], N, "%s", out);
    cr_assert_eq(in[0] + in[1], passes[0] + passes[1] + unchanged[0] + unchanged[1], "%s", out);
    cr_log_info("two consumers: a in=%ld passes=%ld unchanged=%ld, b in=%ld passes=%ld unchanged=%ld", in[0],
                passes[0], unchanged[0], in[1], passes[1], unchanged[1]);
    free(out);
    /* The summaries are the rows; every offset has its row; one pass per serial. */
    cr_assert_eq(sql_count("SELECT count(*) FROM results WHERE outcome = 'pass'"), passes[0] + passes[1]);
    cr_assert_eq(sql_count("SELECT count(DISTINCT serial) FROM results WHERE outcome = 'pass'"), N);
    cr_assert_eq(sql_count("SELECT count(*) FROM results"), in[0] + in[1]);
    cr_assert_eq(sql_count("SELECT count(DISTINCT origin) FROM results"), N);
    cr_assert_eq(sql_count("SELECT sum(passes) FROM runs WHERE finished_at IS NOT NULL"), passes[0] + passes[1]);
    cr_assert_eq(sql_count("SELECT count(*) FROM runs WHERE finished_at IS NOT NULL"), 2);
    cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/store\" --count %d", N), 0);
}

/* A signer certificate outside its validity: refused at start, exit 2, dates named. */
static void resign_signer(const char *dir, long not_before_days, long not_after_days)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/id/signer.pem", dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    snprintf(path, sizeof path, "%s/id/wwdr.key", dir);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    EVP_PKEY *ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert(cert && ca_key);
    time_t now = time(NULL);
    cr_assert_not_null(X509_time_adj_ex(X509_getm_notBefore(cert), (int)not_before_days, 0, &now));
    cr_assert_not_null(X509_time_adj_ex(X509_getm_notAfter(cert), (int)not_after_days, 0, &now));
    cr_assert_gt(X509_sign(cert, ca_key, EVP_sha256()), 0);
    snprintf(path, sizeof path, "%s/id/signer.pem", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(PEM_write_X509(f, cert), 1);
    fclose(f);
    X509_free(cert);
    EVP_PKEY_free(ca_key);
}

Test(registry_run, signer_outside_its_validity_refuses_to_start)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 3 --seed 1 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    resign_signer(work, -30, -1);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 2, "%s", summary);
    free(summary);
    cr_assert_eq(pmt_sh("grep -q 'has expired: valid from .* until ' \"$W/stderr.txt\""), 0);
    cr_assert_eq(pmt_sh("test ! -e \"$W/store/passes\""), 0, "nothing may be made with an expired signer");

    resign_signer(work, 2, 30);
    cr_assert_eq(pmt_sh(": > \"$W/stderr.txt\""), 0);
    cr_assert_eq(run(&summary, NULL), 2, "%s", summary);
    free(summary);
    cr_assert_eq(pmt_sh("grep -q 'is not valid yet' \"$W/stderr.txt\""), 0);
}

/* kill -9 leaves temporary files; the next run removes them (a live writer's stay). */
Test(registry_run, leftover_temporary_files_are_removed_at_start)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 3 --seed 2 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    /* pid 2^22+1 is above Linux's pid_max ceiling: never a live process. */
    cr_assert_eq(pmt_sh("mkdir -p \"$W/store/passes\" \"$W/store/qr\" && "
                        "echo x > \"$W/store/passes/.pm-tmp-4194305-1\" && echo x > \"$W/store/qr/.pm-tmp-4194305-2\" && "
                        "echo x > \"$W/store/passes/.pm-tmp-%d-3\"", (int)getpid()), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0, "%s", summary);
    free(summary);
    cr_assert_eq(pmt_sh("test ! -e \"$W/store/passes/.pm-tmp-4194305-1\" && test ! -e \"$W/store/qr/.pm-tmp-4194305-2\""), 0);
    cr_assert_eq(pmt_sh("test -e \"$W/store/passes/.pm-tmp-%d-3\"", (int)getpid()), 0,
                 "a live process's temporary file must stay");
    cr_assert_eq(pmt_sh("grep -q 'removed 2 temporary file' \"$W/stderr.txt\""), 0);
}

/*
 * Changes by serial alone (Skycore's updatepassdata): VOID, REDEEM, EXPIRE,
 * ACTIVATE with nothing but the serial, and an UPDATE of one field; the
 * registry supplies the rest.  An unknown serial is rejected; a repeated
 * status change is unchanged.
 */
Test(registry_run, changes_by_serial_alone)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 20 --seed 8 > \"$W/in.jsonl\" && cp \"$W/in.jsonl\" \"$W/issue.jsonl\"",
                        pmt_passmill()), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0, "%s", summary);
    free(summary);
    cr_assert_eq(pmt_sh("cd \"$W\" && python3 -c 'import json\n"
                        "s=[json.loads(l)[\"serial_number\"] for l in open(\"issue.jsonl\")]\n"
                        "out=[{\"serial_number\":x,\"action\":\"VOID\"} for x in s[0:5]]\n"
                        "out+=[{\"serial_number\":x,\"action\":\"REDEEM\"} for x in s[5:8]]\n"
                        "out+=[{\"serial_number\":x,\"action\":\"EXPIRE\"} for x in s[8:10]]\n"
                        "out+=[{\"serial_number\":s[0],\"action\":\"ACTIVATE\"}]\n"
                        "out+=[{\"serial_number\":s[10],\"action\":\"UPDATE\",\"attendee\":{\"seat\":\"42\"}}]\n"
                        "out+=[{\"serial_number\":\"NO-SUCH-SERIAL\",\"action\":\"VOID\"}]\n"
                        "open(\"in.jsonl\",\"w\").write(\"\".join(json.dumps(r)+\"\\n\" for r in out))'"), 0);
    cr_assert_eq(run(&summary, "--workers 4"), 1, "%s", summary);
    cr_assert_str_eq(summary, "in=13 passes=12 unchanged=0 rejects=1");
    free(summary);
    /* Again: only s[0] changes (active -> voided -> active), the rest are unchanged. */
    cr_assert_eq(run(&summary, "--workers 4"), 1, "%s", summary);
    cr_assert_str_eq(summary, "in=13 passes=2 unchanged=10 rejects=1");
    free(summary);
    int status;
    char *out = pmt_sh_out(&status, "'%s' stats -c \"$W/run.conf\"", pmt_passmill());
    cr_assert_str_eq(out, "active=11 voided=4 expired=2 redeemed=3 total=20 rejects=2\n");
    free(out);
    cr_assert_eq(sql_count("SELECT count(*) FROM rejects WHERE code = 'serial.unknown' AND serial = 'NO-SUCH-SERIAL'"), 2);
    /* A reject row keeps the original record, as sent. */
    cr_assert_eq(sql_count("SELECT count(*) FROM rejects WHERE serial = 'NO-SUCH-SERIAL' AND "
                           "json_extract(record, '$.action') = 'VOID' AND "
                           "json_extract(record, '$.template_id') IS NULL"), 2);
    /* The UPDATE changed the seat and kept the rest of the attendee. */
    cr_assert_eq(sql_count("SELECT count(*) FROM passes WHERE json_extract(record, '$.attendee.seat') = '42' "
                           "AND json_extract(record, '$.attendee.holder_name') IS NOT NULL"), 1);
    cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/store\" --count 20"), 0);
    cr_assert_eq(pmt_sh("'%s' verify --quiet --ca \"$W/id/ca.pem\" \"$W\"/store/passes/*.pkpass >/dev/null",
                        pmt_passmill()), 0);
}

/* Without a registry a change by serial has nothing to merge onto: a clear reject. */
Test(registry_run, change_by_serial_without_registry_is_rejected)
{
    cr_assert_eq(pmt_sh("printf '{\"serial_number\":\"A-1\",\"action\":\"VOID\"}\\n' > \"$W/in.jsonl\""), 0);
    char *summary;
    cr_assert_eq(run(&summary, "-X registry.path="), 1, "%s", summary);
    cr_assert_str_eq(summary, "in=1 passes=0 unchanged=0 rejects=1");
    free(summary);
    cr_assert_eq(pmt_sh("grep -q '\"code\": *\"record.partial\"' \"$W/rejects.jsonl\""), 0);
}

/*
 * Disk full: the store, the registry or the rejects file on a 1 MiB tmpfs
 * (mounted here; the tests run as root).  The run stops with exit 3 and a
 * clear error, nothing that was not recorded is counted, the registry still
 * matches the store, and a run with room finishes the job.
 */
static void full_disk_case(const char *what)
{
    cr_assert_eq(pmt_sh("mkdir -p \"$W/small\" && mount -t tmpfs -o size=1m tmpfs \"$W/small\""), 0,
                 "cannot mount a small tmpfs (the tests run as root)");
    /* 400 passes need ~40 MB of store; 400 rejects ~1.5 MB of rejects file. */
    char extra[512];
    if (strcmp(what, "store") == 0) {
        cr_assert_eq(pmt_sh("'%s' sample --count 400 --seed 12 > \"$W/in.jsonl\"", pmt_passmill()), 0);
        snprintf(extra, sizeof extra, "-X store.dir=\"$W/small/store\"");
    } else if (strcmp(what, "registry") == 0) {
        cr_assert_eq(pmt_sh("'%s' sample --count 3000 --seed 12 > \"$W/in.jsonl\"", pmt_passmill()), 0);
        snprintf(extra, sizeof extra, "-X registry.path=\"$W/small/registry.db\" -X store.fsync=false");
    } else {
        /* every record rejected: a long holder name (field.too_long) */
        cr_assert_eq(pmt_sh("'%s' sample --count 400 --seed 12 | python3 -c 'import json,sys\n"
                            "for l in sys.stdin:\n r=json.loads(l); r[\"attendee\"][\"holder_name\"]=\"x\"*3000; print(json.dumps(r))'"
                            " > \"$W/in.jsonl\"", pmt_passmill()), 0);
        snprintf(extra, sizeof extra, "-X output.rejects=\"$W/small/rejects.jsonl\"");
    }
    char *summary;
    int rc = run(&summary, extra);
    cr_assert_eq(rc, 3, "%s full: exit %d: %s", what, rc, summary);
    long in, passes, unchanged, rejects, failed = 0;
    cr_assert_eq(sscanf(summary, "in=%ld passes=%ld unchanged=%ld rejects=%ld", &in, &passes, &unchanged,
                        &rejects), 4, "%s", summary);
    const char *f = strstr(summary, "failed=");
    cr_assert_not_null(f, "%s full: %s", what, summary);
    failed = atol(f + 7);
    cr_assert_gt(failed, 0);
    cr_assert_eq(in, passes + unchanged + rejects + failed, "%s", summary);
    cr_assert_eq(pmt_sh("grep -q 'stopping the run: .*No space left on device\\|stopping the run: .*full' "
                        "\"$W/stderr.txt\""), 0, "%s full: no clear error on stderr", what);
    free(summary);
    if (strcmp(what, "store") == 0) {
        /* What the registry holds is what the summary counted and the store has;
         * the failures are recorded as failed.store. */
        cr_assert_eq(sql_count("SELECT count(*) FROM passes"), passes);
        cr_assert_eq(sql_count("SELECT count(*) FROM rejects WHERE code LIKE 'failed.%'"), failed);
        cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/small/store\" --count %ld", passes), 0);
    } else if (strcmp(what, "rejects") == 0) {
        /* The registry recorded every reject (its transaction comes first);
         * those the rejects file could not take count failed. */
        cr_assert_eq(sql_count("SELECT count(*) FROM rejects"), in);
    }
    /* With room, the same run finishes the job. */
    cr_assert_eq(pmt_sh("mount -o remount,size=256m \"$W/small\""), 0);
    rc = run(&summary, extra);
    cr_assert_eq(rc, strcmp(what, "rejects") == 0 ? 1 : 0, "%s", summary);
    long in2, passes2, unchanged2, rejects2;
    cr_assert_eq(sscanf(summary, "in=%ld passes=%ld unchanged=%ld rejects=%ld", &in2, &passes2, &unchanged2,
                        &rejects2), 4, "%s", summary);
    cr_assert_null(strstr(summary, "failed="), "%s", summary);
    cr_assert_eq(passes2 + unchanged2 + rejects2, in2, "%s", summary);
    free(summary);
    if (strcmp(what, "store") == 0)
        cr_assert_eq(pmt_sh("python3 \"$CHECK\" \"$REG\" \"$W/small/store\" --count %ld", in2), 0);
    cr_assert_eq(pmt_sh("umount \"$W/small\""), 0);
}

static void case_disk_full_under_the_store_stops_the_run_and_loses_nothing(void)
{
    full_disk_case("store");
}
BOTH(disk_full_under_the_store_stops_the_run_and_loses_nothing)

Test(registry_run, disk_full_under_the_registry_stops_the_run)
{
    full_disk_case("registry");
}

static void case_disk_full_under_the_rejects_stops_the_run(void)
{
    full_disk_case("rejects");
}

BOTH(disk_full_under_the_rejects_stops_the_run)
/* (disk full under the registry is SQLite's: a PostgreSQL server's disk is its own) */

/* A template's auto expiry counts from the first issue (the registry's
 * created_at): an UPDATE ten days later keeps the pass's expirationDate, a
 * pass first issued then gets a later one. */
Test(registry_run, auto_expiry_is_kept_by_an_update)
{
    cr_assert_eq(pmt_sh("mkdir \"$W/templates\" && cp -r '%s/config/templates/stadium' \"$W/templates/\" && "
                        "printf '{\"expiration_setting\": \"auto\", \"auto_expire_number_days\": 45,"
                        " \"auto_expire_timezone\": \"America/New_York\", \"auto_expire_roundoff_midnight\": true}'"
                        " > \"$W/templates/stadium/template.json\"", PM_SOURCE_DIR), 0);
    cr_assert_eq(pmt_sh("'%s' sample --count 3 --seed 4 | python3 -c 'import json,sys\n"
                        "for l in sys.stdin:\n r=json.loads(l); r[\"expiration_date\"]=None; r[\"template_id\"]=\"stadium\"\n"
                        " print(json.dumps(r))' > \"$W/all.jsonl\" && head -2 \"$W/all.jsonl\" > \"$W/in.jsonl\"",
                        pmt_passmill()), 0);
    char *summary;
    cr_assert_eq(run(&summary, "-X \"template.dir=$W/templates\" --now 2027-03-01T17:00:00Z"), 0, "%s",
                 summary);
    cr_assert_str_eq(summary, "in=2 passes=2 unchanged=0 rejects=0");
    free(summary);
    /* ten days later: an UPDATE of the first, the third issued for the first time */
    cr_assert_eq(pmt_sh("cd \"$W\" && python3 -c 'import json\n"
                        "r=[json.loads(l) for l in open(\"all.jsonl\")]\n"
                        "out=[{\"serial_number\":r[0][\"serial_number\"],\"action\":\"UPDATE\",\"attendee\":{\"seat\":\"42\"}}, r[2]]\n"
                        "open(\"in.jsonl\",\"w\").write(\"\".join(json.dumps(x)+\"\\n\" for x in out))'"), 0);
    cr_assert_eq(run(&summary, "-X \"template.dir=$W/templates\" --now 2027-03-11T17:00:00Z"), 0, "%s",
                 summary);
    cr_assert_str_eq(summary, "in=2 passes=2 unchanged=0 rejects=0");
    free(summary);
    int status;
    char *out = pmt_sh_out(&status, "cd \"$W\" && python3 -c 'import json,zipfile\n"
                           "r=[json.loads(l) for l in open(\"all.jsonl\")]\n"
                           "for x in r:\n"
                           " p=json.loads(zipfile.ZipFile(\"store/passes/\"+x[\"serial_number\"]+\".pkpass\").read(\"pass.json\"))\n"
                           " print(p[\"expirationDate\"], [f[\"value\"] for f in p[\"eventTicket\"][\"auxiliaryFields\"] if f[\"key\"]==\"seat\"][0] if x is r[0] else \"\")'");
    cr_assert_eq(status, 0, "%s", out);
    /* 2027-03-01 12:00 EST + 45 days = 2027-04-15 12:00 EDT -> midnight starting the 16th;
     * issued 2027-03-11 12:00 EST (before the change) + 45 days -> 2027-04-26 */
    cr_assert_str_eq(out, "2027-04-16T00:00:00-04:00 42\n2027-04-16T00:00:00-04:00 \n"
                          "2027-04-26T00:00:00-04:00 \n", "%s", out);
    free(out);
}
