#!/usr/bin/python3
"""Push tests: passmill's outbox and APNs sender against tests/apns_standin.py.

Usage: test_push.py PASSMILL [CASE ...]   (CASE: a function name below without test_)
Registered with ctest (CMakeLists.txt); needs python3-h2 and openssl.
Devices, registrations and outbox rows are written here in SQL (in production
`serve` writes the first two and `run` the third).
"""
import glob, json, os, shutil, signal, sqlite3, subprocess, sys, tempfile, time, collections

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(sys.argv[1])
TOPIC = "pass.dev.passmill.stadium"  # the stadium template's passTypeIdentifier
failures = []


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


class Env:
    """A work folder on tmpfs: identities, the stand-in's certificates, a registry."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix="pm-push-%s-" % name, dir="/dev/shm")
        d = self.dir
        sh(BIN, "identity", "create", d + "/id", "--pass-type-id", TOPIC, "--team-id", "PMDEVTEAM1")
        with open(d + "/secret", "w") as f:
            f.write("push-test-secret-0123456789abcdef-0123")
        ssl = d + "/tls"
        os.mkdir(ssl)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        sh("openssl", "req", "-x509", *ec, "-keyout", ssl + "/ca.key", "-out", ssl + "/ca.pem",
           "-subj", "/CN=apns stand-in test CA", "-days", "2")
        sh("openssl", "req", *ec, "-keyout", ssl + "/server.key", "-out", ssl + "/server.csr", "-subj", "/CN=localhost")
        with open(ssl + "/ext", "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        sh("openssl", "x509", "-req", "-in", ssl + "/server.csr", "-CA", ssl + "/ca.pem", "-CAkey", ssl + "/ca.key",
           "-CAcreateserial", "-out", ssl + "/server.pem", "-days", "2", "-extfile", ssl + "/ext")
        self.db = d + "/registry.db"
        self.standin = None
        self.log = d + "/apns.log"

    def standin_command(self, processes):
        """The stand-in's command line (bench/bench_push.py puts bench/apns_sink in its place)."""
        return ["/usr/bin/python3", SRC + "/tests/apns_standin.py", "--cert", self.dir + "/tls/server.pem",
                "--key", self.dir + "/tls/server.key", "--client-ca", self.dir + "/id/ca.pem", "--topic", TOPIC,
                "--log", self.log, "--port-file", self.dir + "/port", "--processes", str(processes)]

    def start_standin(self, processes=1):
        port_file = self.dir + "/port"
        self.standin = subprocess.Popen(self.standin_command(processes))
        for _ in range(100):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        self.port = int(open(port_file).read())

    def stop_standin(self):
        """Stop it (its logs flushed) and return its lines."""
        if self.standin:
            self.standin.send_signal(signal.SIGTERM)
            self.standin.wait(timeout=20)
            self.standin = None
        lines = []
        for p in sorted(glob.glob(self.log + ".*")):
            lines += [l.split() for l in open(p) if l.strip()]
        return lines

    def args(self, identity="id", **extra):
        x = {
            "template.dir": SRC + "/config/templates", "sign.cert": "%s/%s/signer.pem" % (self.dir, identity),
            "sign.key": "%s/%s/signer.key" % (self.dir, identity), "sign.chain": "%s/%s/wwdr.pem" % (self.dir, identity),
            "barcode.secret_file": self.dir + "/secret", "store.dir": self.dir + "/store",
            "registry.path": self.db, "output.ledger": self.dir + "/ledger.zst",
            "output.rejects": self.dir + "/rejects.jsonl", "engine.progress_ms": "0",
            "push.apns_url": "https://127.0.0.1:%d" % getattr(self, "port", 1), "push.ca_file": self.dir + "/tls/ca.pem",
            "push.backoff_initial": "1", "push.backoff_max": "4", "push.lease": "2", "push.timeout_ms": "5000",
        }
        x.update({k.replace("_", ".", 1): str(v) for k, v in extra.items()})
        out = []
        for k, v in x.items():
            out += ["-X", "%s=%s" % (k, v)]
        return out

    def run(self, records, **extra):
        path = self.dir + "/in.jsonl"
        with open(path, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        return sanitized(subprocess.run([BIN, "run", *self.args(**extra), "-X", "input.path=" + path, "-X", "engine.workers=2"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    def push(self, identity="id", **extra):
        return sanitized(subprocess.run([BIN, "push", *self.args(identity, **extra)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, timeout=600))

    def sql(self, q, *p):
        c = sqlite3.connect(self.db, timeout=30)
        try:
            with c:
                return c.execute(q, p).fetchall()
        finally:
            c.close()

    def issue(self, n):
        """n passes in the registry (and its schema); returns their serials."""
        recs = [json.loads(l) for l in sh(BIN, "sample", "--count", str(n), "--seed", "3").stdout.splitlines()]
        r = self.run(recs)
        check(r.returncode == 0, "issue run: %s %s" % (r.stdout, r.stderr))
        return [x["serial_number"] for x in recs]

    def register(self, device, token, serial):
        now = int(time.time())
        self.sql("INSERT OR REPLACE INTO devices (device_id, push_token, created_at, updated_at) VALUES (?, ?, ?, ?)",
                 device, token, now, now)
        self.sql("INSERT INTO registrations (device_id, pass_type_id, serial, created_at) VALUES (?, ?, ?, ?)",
                 device, TOPIC, serial, now)

    def queue(self, rows):
        """Outbox rows (device, token, serial) due now."""
        now = int(time.time())
        c = sqlite3.connect(self.db, timeout=30)
        with c:
            c.executemany("INSERT INTO push_outbox (device_id, push_token, pass_type_id, serial, update_tag, queued_at,"
                          " next_attempt_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
                          [(d, t, TOPIC, s, now, now) for d, t, s in rows])
        c.close()

    def close(self):
        self.stop_standin()
        shutil.rmtree(self.dir, ignore_errors=True)


def sanitized(r):
    """A sanitizer build's report fails the case (the exit status may not show it)."""
    for mark in ("ERROR: AddressSanitizer", "runtime error:", "WARNING: ThreadSanitizer", "ERROR: LeakSanitizer"):
        check(mark not in r.stderr, "sanitizer: %s" % r.stderr[-2000:])
    return r


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def tok(prefix, i):
    """A 64-hex-digit token (as APNs' are) starting with prefix, distinct per i."""
    return prefix + ("%x" % i).rjust(64 - len(prefix), "0")


def counter(env, name):
    r = env.sql("SELECT value FROM counters WHERE name = ?", name)
    return r[0][0] if r else 0


def summary(out):
    return dict(kv.split("=") for kv in out.split())


# ---- cases ----

def test_delivered_rows_deleted(env):
    serials = env.issue(2)
    env.queue([("dev%d" % i, tok("b", i), serials[i % 2]) for i in range(20)])
    env.start_standin()
    r = env.push()
    check(r.returncode == 0, "push: %d %s" % (r.returncode, r.stderr))
    check(summary(r.stdout) == {"sent": "20", "failed": "0", "retried": "0", "gone": "0"}, r.stdout)
    check(env.sql("SELECT count(*) FROM push_outbox") == [(0,)], "outbox not empty")
    check(counter(env, "push_sent") == 20, "push_sent counter")
    lines = env.stop_standin()
    check(len(lines) == 20 and all(l[0] == "200" and "violation" not in l for l in lines), "stand-in saw %s" % lines[:3])
    check(sorted(l[1] for l in lines) == sorted(tok("b", i) for i in range(20)), "tokens")


def test_unregistered_removes_registration(env):
    s = env.issue(2)
    env.register("gone-dev", tok("a410", 1), s[0])
    env.register("gone-dev", tok("a410", 1), s[1])
    env.register("live-dev", tok("b", 2), s[0])
    env.queue([("gone-dev", tok("a410", 1), s[0]), ("gone-dev", tok("a410", 1), s[1]), ("live-dev", tok("b", 2), s[0])])
    env.start_standin()
    r = env.push()
    check(r.returncode == 0, "push: %s" % r.stderr)
    c = summary(r.stdout)
    # The second push to the dead token is dropped with it (same token, same topic), or answered 410 too.
    check(c["sent"] == "1" and c["gone"] in ("1", "2") and c["failed"] == "0", r.stdout)
    check(env.sql("SELECT count(*) FROM registrations WHERE device_id = 'gone-dev'") == [(0,)], "registration kept")
    check(env.sql("SELECT count(*) FROM devices WHERE device_id = 'gone-dev'") == [(0,)], "device kept")
    check(env.sql("SELECT count(*) FROM registrations WHERE device_id = 'live-dev'") == [(1,)], "other device touched")
    check(env.sql("SELECT count(*) FROM push_outbox") == [(0,)], "outbox not empty")
    lines = env.stop_standin()
    check(any(l[0] == "410" and l[2] == "Unregistered" for l in lines), "no 410 seen")


def test_retry_with_backoff_then_delivered(env):
    s = env.issue(1)
    env.queue([("d429", tok("a4292", 1), s[0]), ("d500", tok("a5002", 2), s[0])])
    env.start_standin()
    t0 = time.time()
    r = env.push()
    check(summary(r.stdout)["retried"] == "2" and summary(r.stdout)["sent"] == "0", r.stdout)
    rows = env.sql("SELECT push_token, attempts, next_attempt_at, last_status, last_reason, state FROM push_outbox ORDER BY id")
    check([(x[3], x[4], x[5]) for x in rows] == [(429, "TooManyRequests", "queued"), (500, "InternalServerError", "queued")], rows)
    check(all(x[2] >= int(t0) + 1 for x in rows), "not backed off: %s" % rows)
    r = env.push()  # nothing due yet: backing off
    check(summary(r.stdout)["sent"] == "0", "sent before the backoff ended: " + r.stdout)
    sent, deadline = 0, time.time() + 30
    while sent < 2 and time.time() < deadline:
        time.sleep(0.5)
        sent += int(summary(env.push().stdout)["sent"])
    check(sent == 2, "delivered %d of 2" % sent)
    check(env.sql("SELECT count(*) FROM push_outbox") == [(0,)], "outbox not empty")
    lines = env.stop_standin()
    per = collections.Counter((l[1], l[0]) for l in lines)
    check(per[(tok("a4292", 1), "429")] == 2 and per[(tok("a4292", 1), "200")] == 1, per)
    check(per[(tok("a5002", 2), "500")] == 2 and per[(tok("a5002", 2), "200")] == 1, per)
    check(time.time() - t0 >= 2, "two retries came too fast")


def test_bad_token_recorded_failed(env):
    s = env.issue(1)
    env.queue([("dbad", tok("a400", 1), s[0]), ("dok", tok("b", 2), s[0])])
    env.start_standin()
    r = env.push()
    check(r.returncode == 1, "exit %d (expected 1: a push failed)" % r.returncode)
    check(summary(r.stdout) == {"sent": "1", "failed": "1", "retried": "0", "gone": "0"}, r.stdout)
    rows = env.sql("SELECT device_id, state, last_status, last_reason, attempts FROM push_outbox")
    check(rows == [("dbad", "failed", 400, "BadDeviceToken", 1)], rows)
    check(counter(env, "push_failed") == 1, "push_failed counter")
    r = env.push()  # a failed push is not tried again
    check(summary(r.stdout)["failed"] == "0" and "failed=1" in r.stderr, r.stdout + r.stderr)
    env.stop_standin()


def test_wrong_client_certificate_refused(env):
    s = env.issue(1)
    sh(BIN, "identity", "create", env.dir + "/other", "--pass-type-id", TOPIC, "--team-id", "PMDEVTEAM1")
    env.queue([("d1", tok("b", 1), s[0])])
    env.start_standin()
    r = env.push(identity="other")
    c = summary(r.stdout)
    check(c["sent"] == "0" and c["retried"] == "1", r.stdout + r.stderr)
    check(env.sql("SELECT state, last_status FROM push_outbox") == [("queued", 0)], "row not kept for a retry")
    lines = env.stop_standin()
    check(lines and all(l[0] == "handshake" for l in lines), "stand-in accepted it: %s" % lines)


def test_kill9_then_restart_delivers_all(env):
    n, batch = 100000, 1000
    s = env.issue(1)
    env.queue([("dev%d" % i, tok("c", i), s[0]) for i in range(n)])
    env.start_standin(processes=2)
    p = subprocess.Popen([BIN, "push", *env.args(push_batch=batch)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.3)
        left = env.sql("SELECT count(*) FROM push_outbox")[0][0]
        if left < n * 0.7:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    left_at_kill = env.sql("SELECT count(*) FROM push_outbox")[0][0]
    check(0 < left_at_kill < n, "kill did not land mid-drain (%d left)" % left_at_kill)
    time.sleep(2.5)  # push.lease = 2: the killed round is due again
    r = env.push(push_batch=batch)
    check(r.returncode == 0, "restart: %s" % r.stderr)
    check(env.sql("SELECT count(*) FROM push_outbox") == [(0,)], "outbox not empty after the restart")
    lines = env.stop_standin()
    seen = collections.Counter(l[1] for l in lines if l[0] == "200")
    missing = [i for i in range(n) if seen[tok("c", i)] == 0]
    dups = sum(c - 1 for c in seen.values() if c > 1)
    print("kill9: %d left at the kill, %d delivered, %d duplicates (bound %d: one round)" %
          (left_at_kill, len(seen), dups, batch))
    check(not missing, "%d pushes never delivered" % len(missing))
    check(dups <= batch, "%d duplicates, more than one round (%d)" % (dups, batch))
    check(not any("violation" in l for l in lines), "protocol violation")


def test_run_void_queues_one_push_per_device(env):
    s = env.issue(4)
    env.register("phone-a", tok("d", 1), s[0])
    env.register("phone-b", tok("d", 2), s[0])
    env.register("phone-a", tok("d", 1), s[1])
    # s[2] has no registration, s[3] is not changed.
    before = env.sql("SELECT max(update_tag) FROM passes")[0][0]
    r = env.run([{"serial_number": x, "action": "VOID"} for x in s[:3]])
    check(r.returncode == 0, "void run: %s %s" % (r.stdout, r.stderr))
    rows = env.sql("SELECT device_id, push_token, pass_type_id, serial, update_tag, state FROM push_outbox ORDER BY device_id, serial")
    tags = dict(env.sql("SELECT serial, update_tag FROM passes"))
    want = sorted([("phone-a", tok("d", 1), TOPIC, s[0], tags[s[0]], "queued"),
                   ("phone-a", tok("d", 1), TOPIC, s[1], tags[s[1]], "queued"),
                   ("phone-b", tok("d", 2), TOPIC, s[0], tags[s[0]], "queued")])
    check(sorted(rows) == want, "outbox %s, expected %s" % (rows, want))
    check(all(tags[x] > before for x in s[:3]), "tags not raised")
    # The same VOIDs again change nothing: no push.
    r = env.run([{"serial_number": x, "action": "VOID"} for x in s[:3]])
    check(env.sql("SELECT count(*) FROM push_outbox") == [(3,)], "an unchanged pass queued a push")
    # A run with push.enabled sends them (and what it queues itself) before it exits.
    env.start_standin()
    rec = json.loads(env.sql("SELECT record FROM passes WHERE serial = ?", s[1])[0][0])
    rec.update(action="UPDATE", attendee=dict(rec["attendee"], seat="77"))
    r = env.run([rec], push_enabled="true")
    check(r.returncode == 0, "push run: %s %s" % (r.stdout, r.stderr))
    check(env.sql("SELECT count(*) FROM push_outbox") == [(0,)], "outbox not drained by run")
    lines = env.stop_standin()
    got = collections.Counter(l[1] for l in lines if l[0] == "200")
    check(got == collections.Counter({tok("d", 1): 3, tok("d", 2): 1}), "deliveries %s" % got)


def pg_url():
    """PASSMILL_REGISTRY_URL, or a private ops/pg-dev server (like test_registry)."""
    if not os.environ.get("PASSMILL_REGISTRY_URL"):
        d = os.environ.setdefault("PASSMILL_PG_DIR", tempfile.mkdtemp(prefix="pm-push-pg-"))
        out = sh(SRC + "/ops/pg-dev", "start", env=dict(os.environ, PASSMILL_PG_DIR=d)).stdout
        for line in out.splitlines():
            k, v = line.replace("export ", "").split("=", 1)
            os.environ[k] = v
    return os.environ["PASSMILL_REGISTRY_URL"], os.environ["PASSMILL_REGISTRY_PASSWORD_FILE"]


def test_pg_outbox_and_shared_senders(env):
    """PostgreSQL: apply() queues, the four verdicts, and two senders sharing one outbox."""
    url, pwfile = pg_url()
    schema = "push_%d" % os.getpid()
    penv = dict(os.environ, PGPASSWORD=open(pwfile).read().strip())

    def psql(q):
        return subprocess.run(["psql", url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", "SET search_path = %s; %s" % (schema, q)],
                              check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=penv).stdout.strip()
    subprocess.run(["psql", url, "-XAtq", "-c", "CREATE SCHEMA %s" % schema], check=True, env=penv, stdout=subprocess.PIPE)
    sep = "&" if "?" in url else "?"
    regurl = url + sep + "options=-csearch_path%3D" + schema
    extra = {"registry_path": "", "registry_url": regurl, "registry_password_file": pwfile}
    try:
        recs = [json.loads(l) for l in sh(BIN, "sample", "--count", "3", "--seed", "4").stdout.splitlines()]
        r = env.run(recs, **extra)
        check(r.returncode == 0, "issue on pg: %s" % r.stderr)
        s = [x["serial_number"] for x in recs]
        now = int(time.time())
        devs = [("ok", tok("b", 1)), ("gone", tok("a410", 2)), ("busy", tok("a4291", 3)), ("bad", tok("a400", 4))]
        psql("INSERT INTO devices VALUES " + ",".join("('%s', '%s', %d, %d)" % (d, t, now, now) for d, t in devs))
        psql("INSERT INTO registrations VALUES " + ",".join("('%s', '%s', '%s', %d)" % (d, TOPIC, s[0], now) for d, _ in devs))
        r = env.run([{"serial_number": s[0], "action": "VOID"}, {"serial_number": s[1], "action": "VOID"}], **extra)
        check(r.returncode == 0, "void on pg: %s" % r.stderr)
        check(psql("SELECT count(*) FROM push_outbox WHERE serial = '%s'" % s[0]) == "4", "pg outbox rows")
        check(psql("SELECT count(*) FROM push_outbox") == "4", "a serial without registrations queued a push")
        env.start_standin()
        r = env.push(**extra)
        check(summary(r.stdout) == {"sent": "1", "failed": "1", "retried": "1", "gone": "1"}, r.stdout + r.stderr)
        check(psql("SELECT device_id, state, last_status, last_reason FROM push_outbox ORDER BY device_id") ==
              "bad|failed|400|BadDeviceToken\nbusy|queued|429|TooManyRequests", psql("SELECT * FROM push_outbox"))
        check(psql("SELECT count(*) FROM devices WHERE device_id = 'gone'") == "0", "410 kept the device")
        time.sleep(2.2)
        check(summary(env.push(**extra).stdout)["sent"] == "1", "retry on pg")
        check(psql("SELECT value FROM counters WHERE name = 'push_sent'") == "2", "pg counter")
        # Two senders, one outbox: SKIP LOCKED claims, no push sent twice.
        n = 6000
        psql("INSERT INTO push_outbox (device_id, push_token, pass_type_id, serial, update_tag, queued_at, next_attempt_at)"
             " SELECT 'dev' || i, 'c' || lpad(to_hex(i), 63, '0'), '%s', '%s', 1, %d, %d FROM generate_series(1, %d) i"
             % (TOPIC, s[2], now, now, n))
        procs = [subprocess.Popen([BIN, "push", *env.args(push_batch=200, **extra)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        sent = [int(summary(o[0])["sent"]) for o in outs]
        check(sum(sent) == n, "sent %s of %d: %s" % (sent, n, outs))
        check(all(x > 0 for x in sent), "one sender did all the work: %s" % sent)
        lines = env.stop_standin()
        seen = collections.Counter(l[1] for l in lines if l[0] == "200" and l[1].startswith("c"))
        check(len(seen) == n and max(seen.values()) == 1, "%d distinct, max %d per token" % (len(seen), max(seen.values())))
        print("pg: two senders shared %d pushes as %s, none twice" % (n, sent))
    finally:
        subprocess.run(["psql", url, "-XAtq", "-c", "DROP SCHEMA %s CASCADE" % schema], env=penv,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def main():
    names = [n[5:] for n in globals() if n.startswith("test_")]
    chosen = sys.argv[2:] or names
    for name in chosen:
        env = Env(name)
        t0 = time.time()
        try:
            globals()["test_" + name](env)
            print("ok   %s (%.1fs)" % (name, time.time() - t0))
        except Exception as e:  # noqa: BLE001 - report and go on
            failures.append(name)
            print("FAIL %s: %s" % (name, e))
        finally:
            env.close()
    print("%d passed, %d failed" % (len(chosen) - len(failures), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
