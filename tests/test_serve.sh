#!/usr/bin/env bash
# tests/test_serve.sh PASSMILL [sqlite|pg] - a device simulator against a real
# `passmill serve`: Apple's web service protocol walked step by step (issue,
# register, VOID, serials since the last tag, the latest pass verified and
# voided, 304, 401, unregister), then hostile requests (bad tokens, oversized
# bodies, path traversal, malformed JSON, a slowloris client, tampered and
# expired ticket links), then a clean stop on SIGTERM.
#
# pg: the same against PostgreSQL: PASSMILL_REGISTRY_URL and
# PASSMILL_REGISTRY_PASSWORD_FILE when set (`eval "$(ops/pg-dev start)"`), else
# a private ops/pg-dev server, stopped at the end.
#
# Each protocol step is a function.  The push: serve runs with push.enabled
# against tests/apns_standin.py (HTTP/2, TLS, the client certificate checked),
# the VOID run queues one push for the registered device, and serve's sender
# delivers it (push_arrives; the stand-in's log is checked once it stopped).
set -euo pipefail
PM=$(realpath "$1")
BACKEND=${2:-sqlite}
SRC=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /dev/shm/pm-serve.XXXXXX)
SERVE_PID=
APNS_PID=
OWN_PG=
cleanup() {
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
  if [ -n "$APNS_PID" ]; then kill "$APNS_PID" 2>/dev/null || true; wait "$APNS_PID" 2>/dev/null || true; fi
  if [ -n "$OWN_PG" ]; then PASSMILL_PG_DIR=$OWN_PG "$SRC/ops/pg-dev" stop >/dev/null 2>&1 || true; fi
  if [ "${KEEP:-}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
# expect WHAT WANT GOT
expect() { if [ "$2" = "$3" ]; then ok "$1 ($3)"; else bad "$1: expected $2, got $3"; fi; }

# ---- set-up: an identity, a registry, three issued passes ----
"$PM" identity create "$W/id" >/dev/null
printf 'test-barcode-secret-of-32-bytes!' >"$W/barcode.secret"
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$W/link.secret"
cat >"$W/serve.conf" <<EOF
template.dir = $SRC/config/templates
sign.cert = $W/id/signer.pem
sign.key = $W/id/signer.key
sign.chain = $W/id/wwdr.pem
barcode.secret_env = PM_TEST_NO_SUCH_VAR
barcode.secret_file = $W/barcode.secret
store.type = local
store.dir = $W/store
store.fsync = false
output.ledger = $W/ledger.jsonl.zst
output.rejects = $W/rejects.jsonl
engine.workers = 2
engine.progress_ms = 0
service.listen = 127.0.0.1:0
service.url = https://passes.example.test/
service.link_secret_file = $W/link.secret
service.timeout_s = 3
service.threads = 2
EOF
if [ "$BACKEND" = pg ]; then
  if [ -z "${PASSMILL_REGISTRY_URL:-}" ]; then
    OWN_PG=$(mktemp -u /dev/shm/pm-serve-pg.XXXXXX)  # not under $W: postgres must reach it
    eval "$(PASSMILL_PG_DIR=$OWN_PG "$SRC/ops/pg-dev" start 2>/dev/null)"
  fi
  # One schema per test run keeps runs apart in a shared database.
  schema=serve_$$_$RANDOM
  PGPASSWORD=$(head -1 "$PASSMILL_REGISTRY_PASSWORD_FILE") psql -q "$PASSMILL_REGISTRY_URL" -c "CREATE SCHEMA $schema" >/dev/null
  sep='?'; case $PASSMILL_REGISTRY_URL in *\?*) sep='&';; esac
  echo "registry.url = ${PASSMILL_REGISTRY_URL}${sep}options=-csearch_path%3D$schema" >>"$W/serve.conf"
  echo "registry.password_file = $PASSMILL_REGISTRY_PASSWORD_FILE" >>"$W/serve.conf"
else
  echo "registry.path = $W/registry.db" >>"$W/serve.conf"
fi

"$PM" sample --count 3 --seed 1 >"$W/in.jsonl"
"$PM" run -c "$W/serve.conf" -X input.path="$W/in.jsonl" 2>"$W/run1.log" >/dev/null ||
  { cat "$W/run1.log"; exit 1; }
SERIAL=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["serial_number"])' "$W/in.jsonl")
OTHER=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[1])["serial_number"])' "$W/in.jsonl")

# What a device reads from the pass it holds: the type, the token, the URL.
pass_key() { python3 - "$1" "$2" <<'PY'
import json, sys, zipfile
print(json.loads(zipfile.ZipFile(sys.argv[1]).read("pass.json"))[sys.argv[2]])
PY
}
PKPASS=$W/store/passes/$SERIAL.pkpass
TYPE=$(pass_key "$PKPASS" passTypeIdentifier)
TOKEN=$(pass_key "$PKPASS" authenticationToken)
expect "the pass carries webServiceURL from service.url" "https://passes.example.test" "$(pass_key "$PKPASS" webServiceURL)"
expect "the authenticationToken is 32 hex digits" 32 "$(printf %s "$TOKEN" | tr -cd 0-9a-f | wc -c)"
"$PM" verify "$PKPASS" >/dev/null && ok "the issued pass verifies (pass.webService rule included)" ||
  bad "the issued pass does not verify"

# http:// only with service.allow_http (development), and then verify says so.
rc=0; "$PM" run -c "$W/serve.conf" -X input.path="$W/in.jsonl" -X service.url=http://dev.test \
  -X store.dir="$W/store-http" >/dev/null 2>"$W/http.log" || rc=$?
expect "an http:// service.url without service.allow_http: exit 2" 2 "$rc"
grep -q 'service.url: expected an https:// URL' "$W/http.log" && ok "... naming service.url" || bad "no service.url message"
"$PM" run -c "$W/serve.conf" -X input.path="$W/in.jsonl" -X service.url=http://dev.test -X service.allow_http=true \
  -X store.dir="$W/store-http" -X registry.path="$W/registry-http.db" -X registry.url= >/dev/null 2>"$W/http.log" ||
  { bad "allow_http run failed"; cat "$W/http.log"; }
expect "with service.allow_http the pass carries the http URL" "http://dev.test" \
  "$(pass_key "$W/store-http/passes/$SERIAL.pkpass" webServiceURL)"
if "$PM" verify "$W/store-http/passes/$SERIAL.pkpass" >"$W/verify-http.out" 2>&1; then bad "verify took an http webServiceURL"
else grep -q pass.webService "$W/verify-http.out" && ok "... which verify's pass.webService rule refuses" || bad "verify failed otherwise"; fi

# ---- the APNs stand-in, and serve's push sender pointed at it ----
mkdir "$W/tls"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$W/tls/ca.key" -out "$W/tls/ca.pem" -subj "/CN=apns stand-in test CA" \
  -days 2 2>/dev/null
openssl req "${ec[@]}" -keyout "$W/tls/server.key" -out "$W/tls/server.csr" -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$W/tls/ext"
openssl x509 -req -in "$W/tls/server.csr" -CA "$W/tls/ca.pem" -CAkey "$W/tls/ca.key" -CAcreateserial \
  -out "$W/tls/server.pem" -days 2 -extfile "$W/tls/ext" 2>/dev/null
/usr/bin/python3 "$SRC/tests/apns_standin.py" --cert "$W/tls/server.pem" --key "$W/tls/server.key" \
  --client-ca "$W/id/ca.pem" --topic "$TYPE" --log "$W/apns.log" --port-file "$W/apns.port" 2>"$W/apns.err" &
APNS_PID=$!
for _ in $(seq 100); do [ -s "$W/apns.port" ] && break; sleep 0.1; done
[ -s "$W/apns.port" ] || { echo "the APNs stand-in did not start"; cat "$W/apns.err"; exit 1; }
{
  echo "push.enabled = true"
  echo "push.apns_url = https://127.0.0.1:$(cat "$W/apns.port")"
  echo "push.ca_file = $W/tls/ca.pem"
  echo "push.poll_ms = 100"
} >>"$W/serve.conf"

# ---- serve ----
"$PM" serve -c "$W/serve.conf" 2>"$W/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do
  PORT=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$W/serve.log")
  [ -n "$PORT" ] && break
  kill -0 "$SERVE_PID" 2>/dev/null || { cat "$W/serve.log"; exit 1; }
  sleep 0.1
done
[ -n "$PORT" ] || { echo "serve did not start"; cat "$W/serve.log"; exit 1; }
BASE=http://127.0.0.1:$PORT
DEVICE=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PUSH=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
REG=$BASE/v1/devices/$DEVICE/registrations/$TYPE

# req OUT [curl args...]: prints the status code, the body in OUT
req() { local out=$1; shift; curl -s -o "$out" -w '%{http_code}' --max-time 10 "$@"; }
auth() { echo "Authorization: ApplePass $1"; }

# ---- the protocol walk ----
step_health() {
  expect "/healthz" 200 "$(req "$W/b" "$BASE/healthz")"
}
step_register() {
  expect "register a new pass on a device: 201" 201 \
    "$(req "$W/b" -X POST -H "$(auth "$TOKEN")" -H 'Content-Type: application/json' \
       -d "{\"pushToken\":\"$PUSH\"}" "$REG/$SERIAL")"
  expect "register it again: 200" 200 \
    "$(req "$W/b" -X POST -H "$(auth "$TOKEN")" -d "{\"pushToken\":\"$PUSH\"}" "$REG/$SERIAL")"
  expect "register with a wrong token: 401" 401 \
    "$(req "$W/b" -X POST -H "$(auth 0123456789abcdef0123456789abcdef)" -d "{\"pushToken\":\"$PUSH\"}" "$REG/$OTHER")"
}
step_serials_all() {
  expect "serials without a tag: 200" 200 "$(req "$W/serials0.json" "$REG")"
  LAST_TAG=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["lastUpdated"])' "$W/serials0.json")
  expect "... listing the registered serial" "[\"$SERIAL\"]" \
    "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["serialNumbers"]).replace(" ",""))' "$W/serials0.json")"
  expect "serials since the last tag, before any change: 204" 204 \
    "$(req "$W/b" "$REG?passesUpdatedSince=$LAST_TAG")"
}
step_fetch_first() {
  local code
  code=$(curl -s -D "$W/h1" -o "$W/first.pkpass" -w '%{http_code}' -H "$(auth "$TOKEN")" "$BASE/v1/passes/$TYPE/$SERIAL")
  expect "latest pass: 200" 200 "$code"
  expect "... as application/vnd.apple.pkpass" "application/vnd.apple.pkpass" \
    "$(sed -n 's/^[Cc]ontent-[Tt]ype: *\([^;\r]*\).*/\1/p' "$W/h1")"
  FIRST_MODIFIED=$(sed -n 's/^[Ll]ast-[Mm]odified: *\(.*\)\r$/\1/p' "$W/h1")
  [ -n "$FIRST_MODIFIED" ] && ok "... with Last-Modified ($FIRST_MODIFIED)" || bad "no Last-Modified"
  cmp -s "$W/first.pkpass" "$PKPASS" && ok "... the stored .pkpass, byte for byte" || bad "served bytes differ from the store"
  expect "same If-Modified-Since: 304" 304 \
    "$(req "$W/b" -H "$(auth "$TOKEN")" -H "If-Modified-Since: $FIRST_MODIFIED" "$BASE/v1/passes/$TYPE/$SERIAL")"
}
step_void() {
  sleep 1.1  # Last-Modified has whole seconds: the change must be a later one
  printf '{"serial_number":"%s","action":"VOID"}\n' "$SERIAL" >"$W/void.jsonl"
  # The run only queues the push (its own sender off): serve's sender must deliver it.
  "$PM" run -c "$W/serve.conf" -X input.path="$W/void.jsonl" -X push.enabled=false >/dev/null 2>"$W/run2.log" &&
    ok "a VOID of that pass through passmill run" || { bad "the VOID run failed"; cat "$W/run2.log"; }
}
metric() { curl -s --max-time 5 "$BASE/metrics" | sed -n "s/^$1 \([0-9]*\)$/\1/p"; }
push_arrives() {
  local sent=
  for _ in $(seq 100); do
    sent=$(metric 'passmill_pushes_total{result="sent"}')
    [ "$sent" = 1 ] && break
    sleep 0.1
  done
  expect "serve's sender delivered the VOID's push to APNs (/metrics)" 1 "$sent"
  expect "... and the outbox is empty" 0 "$(metric passmill_push_outbox_depth)"
}
step_push_log() {  # the stand-in's own count, once it stopped (it flushes its log then)
  kill -TERM "$APNS_PID"; wait "$APNS_PID" || true; APNS_PID=
  expect "the stand-in answered exactly one push, 200, to the device's push token" "200 $PUSH" \
    "$(cat "$W"/apns.log.* 2>/dev/null | awk '{print $1, $2}' | sort | uniq -c | awk '$1 == 1 {print $2, $3}')"
  if grep -q violation "$W"/apns.log.*; then bad "the stand-in logged a protocol violation"; else ok "... with no protocol violation"; fi
}
step_serials_since() {
  expect "serials since the last tag after the VOID: 200" 200 "$(req "$W/serials1.json" "$REG?passesUpdatedSince=$LAST_TAG")"
  expect "... the voided serial" "[\"$SERIAL\"]" \
    "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["serialNumbers"]).replace(" ",""))' "$W/serials1.json")"
  NEW_TAG=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lastUpdated"])' "$W/serials1.json")
  [ "$NEW_TAG" -gt "$LAST_TAG" ] && ok "... lastUpdated moved on ($LAST_TAG -> $NEW_TAG)" || bad "lastUpdated did not move"
  expect "serials since the new tag: 204" 204 "$(req "$W/b" "$REG?passesUpdatedSince=$NEW_TAG")"
}
step_fetch_voided() {
  local code
  code=$(curl -s -D "$W/h2" -o "$W/voided.pkpass" -w '%{http_code}' -H "$(auth "$TOKEN")" \
    -H "If-Modified-Since: $FIRST_MODIFIED" "$BASE/v1/passes/$TYPE/$SERIAL")
  expect "latest pass with the old If-Modified-Since: 200" 200 "$code"
  "$PM" verify "$W/voided.pkpass" >"$W/verify.out" && ok "... it verifies" || { bad "the served pass does not verify"; cat "$W/verify.out"; }
  expect "... and it is voided" True "$(pass_key "$W/voided.pkpass" voided)"
  local modified
  modified=$(sed -n 's/^[Ll]ast-[Mm]odified: *\(.*\)\r$/\1/p' "$W/h2")
  expect "its own Last-Modified again: 304" 304 \
    "$(req "$W/b" -H "$(auth "$TOKEN")" -H "If-Modified-Since: $modified" "$BASE/v1/passes/$TYPE/$SERIAL")"
  expect "latest pass with a wrong token: 401" 401 \
    "$(req "$W/b" -H "$(auth "${TOKEN%?}x")" "$BASE/v1/passes/$TYPE/$SERIAL")"
  expect "latest pass of an unknown serial: 401 (no oracle)" 401 \
    "$(req "$W/b" -H "$(auth "$TOKEN")" "$BASE/v1/passes/$TYPE/NO-SUCH-SERIAL")"
  expect "latest pass of another pass type: 401" 401 \
    "$(req "$W/b" -H "$(auth "$TOKEN")" "$BASE/v1/passes/pass.com.other/$SERIAL")"
}
step_log() {
  expect "log: 200" 200 "$(req "$W/b" -X POST -d "{\"logs\":[\"hello from the device\",\"token $TOKEN\"]}" "$BASE/v1/log")"
  grep -q 'device log: hello from the device' "$W/serve.log" && ok "... written to stderr" || bad "log line missing"
}
step_unregister() {
  expect "unregister with a wrong token: 401" 401 \
    "$(req "$W/b" -X DELETE -H "$(auth 0123456789abcdef0123456789abcdef)" "$REG/$SERIAL")"
  expect "unregister: 200" 200 "$(req "$W/b" -X DELETE -H "$(auth "$TOKEN")" "$REG/$SERIAL")"
  expect "serials after unregistering: 204" 204 "$(req "$W/b" "$REG")"
}
step_metrics() {
  expect "/metrics: 200" 200 "$(req "$W/metrics" "$BASE/metrics")"
  grep -q '^passmill_http_requests_total{endpoint="register",code="201"} 1$' "$W/metrics" &&
    ok "... counts the 201 of register" || bad "metrics: no register 201"
  grep -q '^passmill_http_request_duration_seconds_count{endpoint="pass"} [1-9]' "$W/metrics" &&
    ok "... has the latency histogram of pass" || bad "metrics: no pass histogram"
  grep -q '^passmill_push_outbox_depth [0-9]' "$W/metrics" && ok "... the outbox depth" || bad "metrics: no outbox depth"
  grep -q '^passmill_registrations_created_total 1$' "$W/metrics" && ok "... registrations" || bad "metrics: registrations"
}

# ---- ticket links ----
step_tickets() {
  local links pk qr
  links=$("$PM" link -c "$W/serve.conf" --expires 1h "$OTHER")
  pk=$(echo "$links" | sed -n 1p); qr=$(echo "$links" | sed -n 2p)
  case $pk in https://passes.example.test/tickets/$OTHER/pkpass\?expires=*\&sig=*) ok "passmill link prints the pkpass link";;
    *) bad "unexpected link: $pk";; esac
  pk=$BASE${pk#https://passes.example.test}; qr=$BASE${qr#https://passes.example.test}
  expect "ticket pkpass by its link: 200" 200 "$(req "$W/t.pkpass" "$pk")"
  cmp -s "$W/t.pkpass" "$W/store/passes/$OTHER.pkpass" && ok "... the stored pass" || bad "ticket bytes differ"
  expect "ticket QR by its link: 200" 200 "$(req "$W/t.png" -D "$W/hq" "$qr")"
  grep -qi '^content-type: image/png' "$W/hq" && ok "... image/png" || bad "QR content type"
  expect "tampered signature: 403" 403 "$(req "$W/b" "${pk%?}$( [ "${pk: -1}" = 0 ] && echo 1 || echo 0)")"
  expect "the pkpass link used for the QR: 403" 403 "$(req "$W/b" "${pk/\/pkpass\?/\/qr?}")"
  expect "a later expiry with the old signature: 403" 403 "$(req "$W/b" "$(echo "$pk" | sed 's/expires=\([0-9]*\)/expires=9\1/')")"
  expect "no signature: 403" 403 "$(req "$W/b" "$BASE/tickets/$OTHER/pkpass")"
  local expired
  expired=$("$PM" link -c "$W/serve.conf" --expires 1 "$OTHER" | sed -n 1p)
  sleep 2
  expect "an expired link: 403" 403 "$(req "$W/b" "$BASE${expired#https://passes.example.test}")"
  # A voided ticket: its pass still downloads (it shows VOID), its QR is gone.
  links=$("$PM" link -c "$W/serve.conf" "$SERIAL")
  expect "the voided ticket's pkpass: 200" 200 "$(req "$W/b" "$BASE$(echo "$links" | sed -n 1p | sed 's#https://passes.example.test##')")"
  expect "the voided ticket's QR: 410" 410 "$(req "$W/b" "$BASE$(echo "$links" | sed -n 2p | sed 's#https://passes.example.test##')")"
  # An unknown ticket with a valid signature: 404 (signed here with the same key).
  local sig exp
  exp=$(( $(date +%s) + 600 ))
  sig=$(printf '/tickets/NO-SUCH-TICKET/pkpass\n%s' "$exp" | openssl dgst -sha256 -hmac "$(cat "$W/link.secret")" -r | cut -d' ' -f1)
  expect "an unknown ticket, validly signed: 404" 404 "$(req "$W/b" "$BASE/tickets/NO-SUCH-TICKET/pkpass?expires=$exp&sig=$sig")"
}

# ---- hostile requests ----
step_hostile() {
  expect "register without Authorization: 401" 401 \
    "$(req "$W/b" -X POST -d "{\"pushToken\":\"$PUSH\"}" "$REG/$OTHER")"
  expect "register with a token of the wrong length: 401" 401 \
    "$(req "$W/b" -X POST -H "$(auth "${TOKEN}00")" -d "{\"pushToken\":\"$PUSH\"}" "$REG/$OTHER")"
  expect "register with malformed JSON: 400" 400 \
    "$(req "$W/b" -X POST -H "$(auth "$TOKEN")" -d '{"pushToken":' "$REG/$SERIAL")"
  expect "register with a non-string pushToken: 400" 400 \
    "$(req "$W/b" -X POST -H "$(auth "$TOKEN")" -d '{"pushToken":5}' "$REG/$SERIAL")"
  head -c 100000 /dev/zero | tr '\0' a >"$W/big"
  expect "a 100 kB registration body: 413" 413 \
    "$(req "$W/b" -X POST -H "$(auth "$TOKEN")" --data-binary @"$W/big" "$REG/$SERIAL")"
  expect "a 100 kB chunked registration body: 413" 413 \
    "$(req "$W/b" -X POST -H "$(auth "$TOKEN")" -H 'Transfer-Encoding: chunked' --data-binary @"$W/big" "$REG/$SERIAL")"
  head -c 200000 /dev/zero | tr '\0' a >"$W/biglog"
  expect "a 200 kB log body: 413" 413 "$(req "$W/b" -X POST --data-binary @"$W/biglog" "$BASE/v1/log")"
  expect "log with malformed JSON: 400" 400 "$(req "$W/b" -X POST -d '{"logs": "x"' "$BASE/v1/log")"
  expect "path traversal in the serial (..): 400" 400 \
    "$(req "$W/b" --path-as-is -H "$(auth "$TOKEN")" "$BASE/v1/passes/$TYPE/..")"
  expect "path traversal in the serial (%2e%2e%2f): 404" 404 \
    "$(req "$W/b" --path-as-is -H "$(auth "$TOKEN")" "$BASE/v1/passes/$TYPE/%2e%2e%2f%2e%2e%2fregistry.db")"
  expect "path traversal in a ticket id: 400" 400 "$(req "$W/b" --path-as-is "$BASE/tickets/.hidden/pkpass")"
  expect "a serial with a NUL byte: 400" 400 "$(req "$W/b" --path-as-is -H "$(auth "$TOKEN")" "$BASE/v1/passes/$TYPE/a%00b")"
  expect "a device id of 1000 characters: 404" 404 "$(req "$W/b" "$BASE/v1/devices/$(head -c 1000 /dev/zero | tr '\0' a)/registrations/$TYPE")"
  local longurl
  longurl=$BASE/v1/log?$(head -c 40000 /dev/zero | tr '\0' a)
  expect "a 40 kB URL: 414" 414 "$(req "$W/b" -X POST -d '{}' "$longurl")"
  expect "a 40 kB header: 431" 431 "$(req "$W/b" -H "X-Big: $(head -c 40000 /dev/zero | tr '\0' a)" "$BASE/healthz")"
  expect "a wrong method: 405" 405 "$(req "$W/b" -X PUT "$BASE/v1/passes/$TYPE/$SERIAL")"
  expect "an unknown path: 404" 404 "$(req "$W/b" "$BASE/v2/passes/$TYPE/$SERIAL")"
  expect "passesUpdatedSince not a tag: 400" 400 "$(req "$W/b" "$REG?passesUpdatedSince=1%20OR%201=1")"
  # Slowloris: one header byte a second; the server must close it within
  # service.timeout_s (3 s) plus the reaper's tick, not wait for the headers.
  local took
  took=$(python3 - "$PORT" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
start = time.monotonic()
req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60
try:
    for b in req:
        s.send(bytes([b]))
        time.sleep(1)
        if time.monotonic() - start > 30:
            break
    s.settimeout(5)
    data = s.recv(1)
    while data:
        data = s.recv(1)
except OSError:
    pass
print(int(time.monotonic() - start))
PY
)
  [ "$took" -le 6 ] && ok "a slowloris client is dropped after ${took}s (timeout 3s)" ||
    bad "a slowloris client kept its connection ${took}s"
  expect "serve still answers after all that" 200 "$(req "$W/b" "$BASE/healthz")"
  # Nothing secret in the server's log.
  for secret in "$TOKEN" "$PUSH" "$DEVICE"; do
    if grep -qF "$secret" "$W/serve.log"; then bad "serve's log holds a secret (${secret:0:4}...)"; fi
  done
  ok "serve's log holds no token, push token or device id"
}

step_stop() {
  kill -TERM "$SERVE_PID"
  local rc=0
  wait "$SERVE_PID" || rc=$?
  SERVE_PID=
  expect "serve stops cleanly on SIGTERM" 0 "$rc"
}

step_health
step_register
step_serials_all
step_fetch_first
step_void
push_arrives
step_serials_since
step_fetch_voided
step_log
step_metrics
step_tickets
step_hostile
step_unregister
step_stop
step_push_log

if [ "$fails" -ne 0 ]; then
  echo "test_serve ($BACKEND): $fails check(s) failed; serve's log:"; cat "$W/serve.log"
  exit 1
fi
echo "test_serve ($BACKEND): all checks passed"
