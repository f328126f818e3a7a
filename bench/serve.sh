#!/usr/bin/env bash
# bench/serve.sh [PASSMILL] - the latest-pass endpoint of `passmill serve`
# against nginx serving the same .pkpass as a static file, same machine, same
# run, both with keep-alive, measured by wrk --latency (Debian's wrk).
#
#   GET /v1/passes/TYPE/SERIAL with Authorization (registry lookup, token
#   check, store read, response)  vs  GET /SERIAL.pkpass from nginx (sendfile)
#
# Prints `bench=NAME value=X unit=Y` lines (requests/s and p99 in ms for
# both) and the ratio.  Target: serve >= 0.5 x nginx, serve p99 < 10 ms.
# SERVE_BENCH_SECONDS (default 10), SERVE_BENCH_CONNECTIONS (default 32);
# SERVE_BENCH_PERF=FILE records serve with `perf record -g` during its run.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-build/passmill}")
secs=${SERVE_BENCH_SECONDS:-10}
conns=${SERVE_BENCH_CONNECTIONS:-32}
n=$(nproc)
dir=$(mktemp -d /dev/shm/pm-bench-serve.XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

"$bin" identity create "$dir/id" >/dev/null
openssl rand -hex 32 >"$dir/secret"
cat >"$dir/serve.conf" <<EOF
template.dir = $PWD/config/templates
sign.cert = $dir/id/signer.pem
sign.key = $dir/id/signer.key
sign.chain = $dir/id/wwdr.pem
barcode.secret_env = PM_BENCH_NO_SUCH_VAR
barcode.secret_file = $dir/secret
store.dir = $dir/store
store.fsync = false
registry.path = $dir/registry.db
output.ledger = $dir/ledger.jsonl.zst
output.rejects = $dir/rejects.jsonl
engine.progress_ms = 0
service.listen = 127.0.0.1:0
service.url = https://passes.example.test
service.threads = $n
EOF
"$bin" sample --count 100 --seed 5 >"$dir/in.jsonl"
"$bin" run -c "$dir/serve.conf" -X input.path="$dir/in.jsonl" >/dev/null 2>&1
serial=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["serial_number"])' "$dir/in.jsonl")
pkpass=$dir/store/passes/$serial.pkpass
read -r type token < <(python3 - "$pkpass" <<'PY'
import json, sys, zipfile
p = json.loads(zipfile.ZipFile(sys.argv[1]).read("pass.json"))
print(p["passTypeIdentifier"], p["authenticationToken"])
PY
)

"$bin" serve -c "$dir/serve.conf" 2>"$dir/serve.log" &
pids+=($!)
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$dir/serve.log"); [ -n "$port" ] && break; sleep 0.1
done

mkdir -p "$dir/static" && cp "$pkpass" "$dir/static/$serial.pkpass" && chmod -R a+rX "$dir/static"
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes $n;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types { application/vnd.apple.pkpass pkpass; }
  client_body_temp_path $dir/nginx-tmp;
  proxy_temp_path $dir/nginx-tmp;
  fastcgi_temp_path $dir/nginx-tmp;
  uwsgi_temp_path $dir/nginx-tmp;
  scgi_temp_path $dir/nginx-tmp;
  server { listen 127.0.0.1:$nport; root $dir/static; }
}
EOF
mkdir -p "$dir/nginx-tmp"
nginx -p "$dir" -c "$dir/nginx.conf" &
pids+=($!)
sleep 0.5

url_serve=http://127.0.0.1:$port/v1/passes/$type/$serial
url_nginx=http://127.0.0.1:$nport/$serial.pkpass
code=$(curl -s -o "$dir/got" -w '%{http_code}' -H "Authorization: ApplePass $token" "$url_serve")
cmp -s "$dir/got" "$pkpass" && [ "$code" = 200 ] || { echo "bench/serve.sh: serve did not answer 200 with the pass" >&2; exit 1; }
cmp -s <(curl -s "$url_nginx") "$pkpass" || { echo "bench/serve.sh: nginx did not serve the pass" >&2; exit 1; }

# CPU seconds (user + system) of a process and its children so far.
cpu() { local t=0 p; for p in "$@" $(pgrep -P "$1" 2>/dev/null); do
    t=$(awk -v t="$t" -v hz="$(getconf CLK_TCK)" '{print t + ($14 + $15) / hz}' "/proc/$p/stat" 2>/dev/null || echo "$t"); done; echo "$t"; }
# wrk OUT URL [header]: "requests/s p99_ms"
bench() {
  local out=$1 url=$2; shift 2
  wrk -t"$n" -c"$conns" -d"${secs}s" --latency "$@" "$url" >"$out"
  local rps p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms$/,"",v); else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' "$out")
  echo "$rps $p99"
}
size=$(stat -c %s "$pkpass")
c0=$(cpu "${pids[0]}")
if [ -n "${SERVE_BENCH_PERF:-}" ]; then perf record -g -o "$SERVE_BENCH_PERF" -p "${pids[0]}" -- sleep "$secs" >/dev/null 2>&1 & fi
read -r s_rps s_p99 < <(bench "$dir/wrk-serve.txt" "$url_serve" -H "Authorization: ApplePass $token")
c1=$(cpu "${pids[0]}")
s_req=$(awk '/requests in/ {print $1}' "$dir/wrk-serve.txt")
c2=$(cpu "${pids[1]}")
read -r n_rps n_p99 < <(bench "$dir/wrk-nginx.txt" "$url_nginx")
c3=$(cpu "${pids[1]}")
n_req=$(awk '/requests in/ {print $1}' "$dir/wrk-nginx.txt")
kill -0 "${pids[0]}" 2>/dev/null && [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: ApplePass $token" "$url_serve")" = 200 ] ||
  { echo "bench/serve.sh: serve did not survive the load:" >&2; cat "$dir/serve.log" >&2; exit 1; }
if grep -q 'Non-2xx' "$dir/wrk-serve.txt"; then echo "bench/serve.sh: serve answered non-2xx under load" >&2; cat "$dir/wrk-serve.txt" >&2; exit 1; fi
echo "bench=serve_latest_pass_rps value=$s_rps unit=req/s"
echo "bench=serve_latest_pass_p99 value=$s_p99 unit=ms"
echo "bench=nginx_static_pkpass_rps value=$n_rps unit=req/s"
echo "bench=nginx_static_pkpass_p99 value=$n_p99 unit=ms"
awk -v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" -v n="$s_req" 'BEGIN { printf "bench=serve_latest_pass_cpu value=%.1f unit=us/request\n", c / n * 1e6 }'
awk -v c="$(awk -v a="$c2" -v b="$c3" 'BEGIN{print b-a}')" -v n="$n_req" 'BEGIN { printf "bench=nginx_static_pkpass_cpu value=%.1f unit=us/request\n", c / n * 1e6 }'
awk -v a="$s_rps" -v b="$n_rps" -v p="$s_p99" -v sz="$size" -v c="$conns" -v t="$n" 'BEGIN {
  printf "serve / nginx requests/s = %.2f (target >= 0.50); serve p99 = %s ms (target < 10); %d-byte pass, %d connections, %d wrk threads\n", a / b, p, sz, c, t }'
