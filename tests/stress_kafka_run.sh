#!/usr/bin/env bash
# stress_kafka_run.sh PASSMILL - `passmill run` with the Kafka source and
# outcome against a `passmill devbroker`, with a tiny queue (backpressure
# on every record) and more workers than cores, so done() arrives from
# workers and the producer's delivery-report thread out of order.  Run in
# the ThreadSanitizer build (TSAN_OPTIONS=halt_on_error=1 turns a race into
# a failure) as well as the others.  Prints "N passed, N failed".
set -uo pipefail
bin=${1:?usage: stress_kafka_run.sh PASSMILL}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pm-stress-kafka-XXXXXX)
broker=
cleanup() { [ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker"; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "stress_kafka_run: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

"$bin" devbroker --partitions 4 --topics req,res,dlq --bootstrap-file "$work/bootstrap" \
  >/dev/null 2>"$work/broker.err" &
broker=$!
for _ in $(seq 300); do [ -s "$work/bootstrap" ] && break; sleep 0.1; done
[ -s "$work/bootstrap" ] || fail "devbroker did not start: $(cat "$work/broker.err")"
bs=$(cat "$work/bootstrap")

"$bin" identity create "$work/id" >/dev/null || fail "identity create"
printf 'stress-secret-0123456789abcdef-0123' > "$work/secret"
"$bin" sample --count 400 --seed 5 > "$work/in.jsonl" || fail "sample"
printf 'not json at all\n' >> "$work/in.jsonl"
out=$("$bin" produce -b "$bs" -t req --format json "$work/in.jsonl") || fail "produce: $out"
[ "$out" = "acknowledged=401 failed=0" ] || fail "produce: $out"

out=$(cd "$src" && "$bin" run -X input.type=kafka -X kafka.brokers="$bs" -X kafka.group_id=stress \
  -X kafka.topic.requests=req -X kafka.topic.results=res -X kafka.topic.rejects=dlq \
  -X kafka.value_format=json -X kafka.exit_on_eof=true -X kafka.session.timeout.ms=6000 \
  -X kafka.fetch.wait.max.ms=10 -X kafka.auto.commit.interval.ms=50 \
  -X template.dir=config/templates \
  -X sign.cert="$work/id/signer.pem" -X sign.key="$work/id/signer.key" -X sign.chain="$work/id/wwdr.pem" \
  -X barcode.secret_file="$work/secret" -X store.dir="$work/store" \
  -X output.ledger="$work/ledger.zst" -X output.rejects="$work/rejects.jsonl" \
  -X engine.workers=4 -X engine.queue_size=4 -X engine.progress_ms=0 2>"$work/run.err")
rc=$?
[ "$rc" -eq 1 ] || fail "exit status $rc, expected 1 (a reject); stderr: $(tail -20 "$work/run.err")"
[ "$out" = "in=401 passes=400 unchanged=0 rejects=1" ] || fail "summary '$out'"
n=$(find "$work/store/passes" -name '*.pkpass' | wc -l)
[ "$n" -eq 400 ] || fail "$n passes in the store"
echo "1 passed, 0 failed"
