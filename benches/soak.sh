#!/usr/bin/env bash
# Soak test for Tollgate (see benches/README.md, "Soak"): N minutes of HTTP/1.1 (wrk) and
# HTTP/2 (h2load, h2c) load through one gateway, while the config is rewritten every
# REWRITE_EVERY seconds (reload) and Redis (backing a cluster rate limit) is restarted every
# REDIS_RESTART_EVERY seconds. Every SAMPLE_EVERY seconds the gateway's RSS, open fds and
# threads, and its in-flight gauge, go to a CSV; at the end a summary compares the first and
# last samples. Not part of CI: it runs for minutes and loads the machine.
#
# Needs: wrk, h2load (Debian: nghttp2-client), redis-server, curl, python3 (the backend).
#
# Knobs (environment):
#   MINUTES=10 (or DURATION_S=seconds)  H1_CONNECTIONS=16  H2_CONNECTIONS=4  H2_STREAMS=16  THREADS=2
#   REWRITE_EVERY=20  REDIS_RESTART_EVERY=60  SAMPLE_EVERY=5
#   TOLLGATE_BIN=target/release/tollgate  SKIP_BUILD=1  KEEP_TMP=1  OUT=benches/soak-out
#   ACCESS_LOG=1 (the gateway's access log, to OUT/access.log: find what each failed request met)
set -euo pipefail

MINUTES=${MINUTES:-10}
H1_CONNECTIONS=${H1_CONNECTIONS:-16}
H2_CONNECTIONS=${H2_CONNECTIONS:-4}
H2_STREAMS=${H2_STREAMS:-16}
THREADS=${THREADS:-2}
REWRITE_EVERY=${REWRITE_EVERY:-20}
REDIS_RESTART_EVERY=${REDIS_RESTART_EVERY:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOLLGATE_BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
OUT=${OUT:-$ROOT/benches/soak-out}

for tool in wrk h2load redis-server curl python3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is needed" >&2; exit 1; }
done
if [[ -z "${SKIP_BUILD:-}" && "$TOLLGATE_BIN" == "$ROOT/target/release/tollgate" ]]; then
    (cd "$ROOT" && cargo build --release --locked --bin tollgate)
fi

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -n "${REDIS_PID:-}" ]] && kill "$REDIS_PID" 2>/dev/null || true
    [[ -n "${GW_PID:-}" ]] && kill -INT "$GW_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ -n "${KEEP_TMP:-}" ]] && echo "soak: kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port); BACKEND_PORT=$(free_port); REDIS_PORT=$(free_port)

# The backend: a threaded HTTP/1.1 server answering {"ok":true} with keep-alive.
cat >"$TMP/backend.py" <<'EOF'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b'{"ok":true}\n'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer.daemon_threads = True
# The default listen backlog (5) drops connections when the gateway opens its pool at once:
# they would fail as the backend's fault, not the gateway's.
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
python3 "$TMP/backend.py" "$BACKEND_PORT" 2>/dev/null & PIDS+=($!)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$BACKEND_PORT/" >/dev/null && break
    sleep 0.1
done

start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
}
start_redis

# The config, with a version number that each rewrite bumps (a header value the route sets
# nowhere else, so every rewrite is a real change and a real reload).
ACCESS=false; [[ -n "${ACCESS_LOG:-}" ]] && ACCESS=true
write_config() {
    cat >"$TMP/tollgate.toml.new" <<EOF
[server]
listen = ["127.0.0.1:$PROXY_PORT"]
admin_listen = "127.0.0.1:$ADMIN_PORT"
threads = $THREADS
strip_request_headers = ["x-soak-$1"]

[log]
level = "warn"
access = $ACCESS

[cluster]
redis_url = "redis://127.0.0.1:$REDIS_PORT/0"
on_error = "local"

[rate_limits.shared]
requests = 1000000
per = "1s"
key = "route"
cluster = true

[upstreams.app]
targets = ["127.0.0.1:$BACKEND_PORT"]
connect_timeout = "1s"
read_timeout = "5s"

[routes.app]
path = "/{*rest}"
upstream = "app"
rate_limits = ["shared"]
timeout = "5s"
EOF
    mv "$TMP/tollgate.toml.new" "$TMP/tollgate.toml"
}
write_config 0

"$TOLLGATE_BIN" run -c "$TMP/tollgate.toml" >"$TMP/access.log" 2>"$TMP/tollgate.err" & GW_PID=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || { echo "soak: gateway not ready" >&2; cat "$TMP/tollgate.err" >&2; exit 1; }

SECONDS_TOTAL=${DURATION_S:-$((MINUTES * 60))}
URL="http://127.0.0.1:$PROXY_PORT/soak"
wrk -t1 -c"$H1_CONNECTIONS" -d"${SECONDS_TOTAL}s" --latency "$URL" >"$TMP/wrk.txt" 2>&1 & PIDS+=($!)
h2load -c"$H2_CONNECTIONS" -m"$H2_STREAMS" -D"$SECONDS_TOTAL" "$URL" >"$TMP/h2load.txt" 2>&1 & PIDS+=($!)

mkdir -p "$OUT"
CSV="$OUT/samples.csv"
echo "elapsed_s,rss_kib,fds,threads,in_flight,reloads_ok,reloads_failed,redis_errors" >"$CSV"
metric() {
    curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m { print $2; found=1 } END { if (!found) print 0 }'
}
sample() {
    local rss fds threads
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status")
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$GW_PID/status")
    fds=$(ls "/proc/$GW_PID/fd" | wc -l)
    echo "$1,$rss,$fds,$threads,$(metric tollgate_requests_in_flight),$(metric 'tollgate_config_reloads_total{result="success"}'),$(metric 'tollgate_config_reloads_total{result="failure"}'),$(metric tollgate_ratelimit_backend_errors_total)" >>"$CSV"
}

start=$(date +%s)
version=0
next_rewrite=$REWRITE_EVERY
next_redis=$REDIS_RESTART_EVERY
while :; do
    now=$(( $(date +%s) - start ))
    (( now >= SECONDS_TOTAL )) && break
    kill -0 "$GW_PID" 2>/dev/null || { echo "soak: the gateway exited" >&2; cat "$TMP/tollgate.err" >&2; exit 1; }
    sample "$now"
    if (( now >= next_rewrite )); then
        version=$((version + 1)); write_config "$version"; next_rewrite=$((now + REWRITE_EVERY))
    fi
    if (( now >= next_redis )); then
        kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
        sleep 1; start_redis; next_redis=$((now + REDIS_RESTART_EVERY))
    fi
    sleep "$SAMPLE_EVERY"
done
wait "${PIDS[1]}" "${PIDS[2]}" 2>/dev/null || true
sample "$SECONDS_TOTAL"

cp "$TMP/wrk.txt" "$TMP/h2load.txt" "$TMP/tollgate.err" "$OUT/"
if [[ -n "${ACCESS_LOG:-}" ]]; then cp "$TMP/access.log" "$OUT/"; fi
python3 - "$CSV" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
first, last = rows[0], rows[-1]
# The first minute warms pools and allocators up: growth is measured after it.
warm = next((r for r in rows if float(r["elapsed_s"]) >= 60), first)
print(f"samples: {len(rows)} over {last['elapsed_s']} s")
for k in ("rss_kib", "fds", "threads"):
    vals = [int(float(r[k])) for r in rows]
    print(f"{k}: first {first[k]}, after 1 min {warm[k]}, last {last[k]}, max {max(vals)}")
print(f"reloads: {last['reloads_ok']} ok, {last['reloads_failed']} failed; "
      f"redis check failures: {last['redis_errors']}; in flight at the end: {last['in_flight']}")
EOF
echo "--- wrk (HTTP/1.1)"; grep -E "Requests/sec|Non-2xx|Socket errors|requests in" "$OUT/wrk.txt" || true
echo "--- h2load (h2c)"; grep -E "^requests:|^status codes:|finished in" "$OUT/h2load.txt" || true
