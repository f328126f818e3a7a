#!/usr/bin/env bash
# stress_engine.sh PASSMILL - the engine under load with a tiny queue, so the
# source blocks on backpressure and workers finish out of order.  Run in the
# ThreadSanitizer build (TSAN_OPTIONS=halt_on_error=1 turns a race into a
# failure) as well as the others.  Prints "N passed, N failed".
set -uo pipefail
bin=${1:?usage: stress_engine.sh PASSMILL}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pm-stress-XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() {
  [ -s "$work/stderr.txt" ] && tail -n 60 "$work/stderr.txt" >&2 # a sanitizer's report
  echo "stress_engine: $*" >&2; echo "0 passed, 1 failed"; exit 1
}

"$bin" identity create "$work/id" >/dev/null || fail "identity create"
printf 'stress-secret-0123456789abcdef-0123' > "$work/secret"
"$bin" sample --count 400 --seed 7 > "$work/in.jsonl" || fail "sample"
# Two hostile lines in the middle: they must come out as rejects.
sed -i '100a {"serial_number": "bad serial!"}' "$work/in.jsonl"
sed -i '200a not json at all' "$work/in.jsonl"

out=$(cd "$src" && "$bin" run -X input.path="$work/in.jsonl" -X template.dir=config/templates \
  -X sign.cert="$work/id/signer.pem" -X sign.key="$work/id/signer.key" -X sign.chain="$work/id/wwdr.pem" \
  -X barcode.secret_file="$work/secret" -X store.dir="$work/store" \
  -X output.ledger="$work/ledger.zst" -X output.rejects="$work/rejects.jsonl" \
  -X engine.workers=4 -X engine.queue_size=4 -X engine.progress_ms=5 2>"$work/stderr.txt")
rc=$?
# The progress thread ran beside the source (file position) and workers.
grep -q '% of ' "$work/stderr.txt" || fail "no progress lines: $(head -c 2000 "$work/stderr.txt")"
[ "$rc" -eq 1 ] || fail "exit status $rc, expected 1 (rejects present)"
[ "$out" = "in=402 passes=400 unchanged=0 rejects=2" ] || fail "summary '$out'"
n=$(find "$work/store/passes" -name '*.pkpass' | wc -l)
[ "$n" -eq 400 ] || fail "$n passes in the store"
n=$(wc -l < "$work/rejects.jsonl")
[ "$n" -eq 2 ] || fail "$n reject lines"
n=$(zstd -dc "$work/ledger.zst" | wc -l)
[ "$n" -eq 400 ] || fail "$n ledger lines"
echo "1 passed, 0 failed"
