#!/usr/bin/env bash
# stress_registry_run.sh PASSMILL - the engine's per-serial chains, durability
# batches and registry readers/writer under load: 4 workers, a tiny queue,
# every serial three times in a row (ISSUE, UPDATE, VOID), then the VOIDs
# again (all unchanged).  Run in the ThreadSanitizer build
# (TSAN_OPTIONS=halt_on_error=1 turns a race into a failure) as well as the
# others.  Prints "N passed, N failed".
set -uo pipefail
bin=${1:?usage: stress_registry_run.sh PASSMILL}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pm-stress-reg-XXXXXX)
trap 'umount "$work/small" 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "stress_registry_run: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

"$bin" identity create "$work/id" >/dev/null || fail "identity create"
printf 'stress-secret-0123456789abcdef-0123' > "$work/secret"
"$bin" sample --count 150 --seed 7 > "$work/base.jsonl" || fail "sample"
python3 - "$work/base.jsonl" "$work/in.jsonl" <<'PY' || fail "input"
import json, sys
out = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    for action in ("ISSUE", "UPDATE", "VOID"):
        r = dict(r, action=action)
        if action != "ISSUE":
            r["attendee"] = dict(r["attendee"], seat="X9")
        out.append(json.dumps(r))
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
run() {
  (cd "$src" && "$bin" run -X input.path="$work/in.jsonl" -X template.dir=config/templates \
    -X sign.cert="$work/id/signer.pem" -X sign.key="$work/id/signer.key" -X sign.chain="$work/id/wwdr.pem" \
    -X barcode.secret_file="$work/secret" -X store.dir="$work/store" -X registry.path="$work/registry.db" \
    -X output.ledger="$work/ledger.zst" -X output.rejects="$work/rejects.jsonl" \
    -X engine.workers=4 -X engine.queue_size=4 -X engine.progress_ms=0)
}
out=$(run) || fail "first run: exit $?"
[ "$out" = "in=450 passes=450 unchanged=0 rejects=0" ] || fail "first run: summary '$out'"
python3 "$src/tests/registry_check.py" "$work/registry.db" "$work/store" --count 150 --status voided >/dev/null ||
  fail "registry and store disagree: $(python3 "$src/tests/registry_check.py" "$work/registry.db" "$work/store" --count 150 --status voided)"
grep '"VOID"' "$work/in.jsonl" > "$work/void.jsonl" && mv "$work/void.jsonl" "$work/in.jsonl"
out=$(run) || fail "second run: exit $?"
[ "$out" = "in=150 passes=0 unchanged=150 rejects=0" ] || fail "second run: summary '$out'"
# A store that fills up stops the run from the workers' and the durability
# thread's side while the source reads: exit 3, every record accounted for.
mkdir -p "$work/small" && mount -t tmpfs -o size=1m tmpfs "$work/small" || fail "cannot mount a small tmpfs"
"$bin" sample --count 300 --seed 8 > "$work/in.jsonl" || fail "sample"
out=$(cd "$src" && "$bin" run -X input.path="$work/in.jsonl" -X template.dir=config/templates \
  -X sign.cert="$work/id/signer.pem" -X sign.key="$work/id/signer.key" -X sign.chain="$work/id/wwdr.pem" \
  -X barcode.secret_file="$work/secret" -X store.dir="$work/small/store" -X registry.path="$work/full.db" \
  -X output.ledger="$work/ledger2.zst" -X output.rejects="$work/rejects2.jsonl" \
  -X engine.workers=4 -X engine.queue_size=4 -X engine.progress_ms=0 2>/dev/null)
rc=$?
[ "$rc" -eq 3 ] || fail "full store: exit $rc, expected 3 ('$out')"
case "$out" in *failed=*) ;; *) fail "full store: summary '$out' has no failed=";; esac
echo "1 passed, 0 failed"
