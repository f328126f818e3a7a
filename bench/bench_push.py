#!/usr/bin/python3
"""Push benchmarks against tests/apns_standin.py (docs/push.md has the numbers).

  bench_push.py PASSMILL rate [N] [PROCESSES]   N queued pushes (default 50000) drained by
                                                `passmill push`: pushes/s, CPU seconds
  bench_push.py PASSMILL void [PASSES]          PASSES passes (default 80000), 2 devices each;
                                                `passmill run` of their VOIDs with push.enabled:
                                                time from the command to the last push

Environment:
  BENCH_PUSH_SINK=c   run against bench/apns_sink (C, built next to PASSMILL as
                      <build>/bench/apns_sink) instead of the Python stand-in, so the
                      numbers are passmill's sender and not Python's; the sink makes the
                      same header and client certificate checks but is one process
                      (PROCESSES is ignored) and answers 200 to every valid push.
                      "delivered" is then the sink's count of 200 answers.
  PUSH_BATCH, PUSH_CONNECTIONS   push.batch (default 1000) and push.connections
                      (default 2) for `rate`.
"""
import os, resource, subprocess, sys, time, json, collections
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import test_push as tp  # noqa: E402

BIN = os.path.abspath(sys.argv[1])
tp.BIN = BIN


SINK = os.environ.get("BENCH_PUSH_SINK", "")
SINK_BIN = os.path.join(os.path.dirname(BIN), "bench", "apns_sink")


class SinkEnv(tp.Env):
    """tests/test_push.py's Env with bench/apns_sink in the stand-in's place."""

    def standin_command(self, processes):
        return [SINK_BIN, "--cert", self.dir + "/tls/server.pem", "--key", self.dir + "/tls/server.key",
                "--client-ca", self.dir + "/id/ca.pem", "--topic", tp.TOPIC, "--port-file", self.dir + "/port",
                "--count-file", self.dir + "/sink.count"]


def make_env():
    if SINK == "c":
        if not os.access(SINK_BIN, os.X_OK):
            sys.exit("bench_push: %s not built (libnghttp2-dev: ops/install-deps, then ops/build)" % SINK_BIN)
        return SinkEnv("bench")
    if SINK:
        sys.exit("bench_push: BENCH_PUSH_SINK=%s: expected c (or unset for the Python stand-in)" % SINK)
    return tp.Env("bench")


def stop_and_count(env):
    """Stop the stand-in; the pushes it answered 200."""
    lines = env.stop_standin()
    if isinstance(env, SinkEnv):
        counts = dict(kv.split("=") for kv in open(env.dir + "/sink.count").read().split())
        return int(counts["ok"])
    return sum(1 for l in lines if l[0] == "200")


def label(procs):
    return "C sink" if SINK == "c" else "stand-in x%d" % procs


def standin_cpu(env):
    """CPU seconds of the stand-in's processes so far (it and its children, from /proc)."""
    pids = [env.standin.pid] + [int(p) for p in open("/proc/%d/task/%d/children" % (env.standin.pid, env.standin.pid)).read().split()]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        total += (int(f[11]) + int(f[12])) / tick
    return total


def timed(cmd):
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    out, err = p.stdout.read(), p.stderr.read()
    return time.time() - t0, ru.ru_utime + ru.ru_stime, os.waitstatus_to_exitcode(status), out, err


def rate(n, procs):
    env = make_env()
    try:
        s = env.issue(1)
        env.queue([("dev%d" % i, tp.tok("c", i), s[0]) for i in range(n)])
        env.start_standin(processes=procs)
        c0 = standin_cpu(env)
        wall, cpu, rc, out, err = timed([BIN, "push", *env.args(push_batch=os.environ.get("PUSH_BATCH", "1000"), push_connections=os.environ.get("PUSH_CONNECTIONS", "2"))])
        scpu = standin_cpu(env) - c0
        ok = stop_and_count(env)
        print("rate: %d pushes, %s: %.2fs wall, %.0f pushes/s; passmill push CPU %.2fs (%.1f us/push),"
              " stand-in CPU %.2fs (%.1f us/push); %s; delivered %d"
              % (n, label(procs), wall, n / wall, cpu, cpu / n * 1e6, scpu, scpu / n * 1e6, out.strip(), ok))
    finally:
        env.close()


def void(passes, procs):
    env = make_env()
    try:
        recs = [json.loads(l) for l in tp.sh(BIN, "sample", "--count", str(passes), "--seed", "5").stdout.splitlines()]
        path = env.dir + "/issue.jsonl"
        with open(path, "w") as f:
            f.write("\n".join(json.dumps(r) for r in recs) + "\n")
        wall, cpu, rc, out, err = timed([BIN, "run", *env.args(), "-X", "input.path=" + path])
        print("void: issued %d passes in %.1fs (%s)" % (passes, wall, out.strip()))
        now = int(time.time())
        import sqlite3
        c = sqlite3.connect(env.db)
        with c:
            c.executemany("INSERT INTO devices VALUES (?, ?, ?, ?)",
                          [("dev%d" % i, tp.tok("e", i), now, now) for i in range(2 * passes)])
            c.executemany("INSERT INTO registrations VALUES (?, ?, ?, ?)",
                          [("dev%d" % i, tp.TOPIC, recs[i // 2]["serial_number"], now) for i in range(2 * passes)])
        c.close()
        path = env.dir + "/void.jsonl"
        with open(path, "w") as f:
            f.write("\n".join(json.dumps({"serial_number": r["serial_number"], "action": "VOID"}) for r in recs) + "\n")
        env.start_standin(processes=procs)
        c0 = standin_cpu(env)
        wall, cpu, rc, out, err = timed([BIN, "run", *env.args(push_enabled="true"), "-X", "input.path=" + path])
        scpu = standin_cpu(env) - c0
        left = env.sql("SELECT count(*) FROM push_outbox")[0][0]
        ok = stop_and_count(env)
        print("void: %d VOIDs, %d pushes delivered (outbox left %d), command to last push %.1fs, passmill CPU %.1fs, stand-in CPU %.1fs; %s; %s"
              % (passes, ok, left, wall, cpu, scpu, out.strip(), [l for l in err.splitlines() if "pushes" in l or "passes/s" in l]))
    finally:
        env.close()


if __name__ == "__main__":
    what = sys.argv[2]
    if what == "rate":
        rate(int(sys.argv[3]) if len(sys.argv) > 3 else 50000, int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    else:
        void(int(sys.argv[3]) if len(sys.argv) > 3 else 80000, int(sys.argv[4]) if len(sys.argv) > 4 else 2)
