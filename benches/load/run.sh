#!/usr/bin/env bash
# Whole-gateway load benchmark for Tollgate (see benches/README.md).
#
# Compares, in one run and on the same pinned cores:
#   backend       nginx answering {"ok":true}\n directly (reference: no proxy at all)
#   nginx         nginx as a keep-alive reverse proxy (the "good C proxy" baseline)
#   bare_pingora  examples/bare_pingora.rs (the floor for anything built on Pingora)
#   bare_pingora_answer  (BARE_ANSWER=1) the same binary answering every request itself with
#                 the backend's body (`--answer`): the floor for an answer Pingora serves from
#                 memory, such as a cache hit
#   tollgate_*    target/release/tollgate with each benches/load/configs/*.toml (a config may
#                 name a request header with a `# load-header: Name: value` line; JWT variants
#                 send their token that way, the same token on every request; a config may
#                 also name the path to request with `# load-path: /bench16k`, a 16 KiB answer
#                 of the backend, checked byte for byte; a config that answers with its own
#                 body, an aggregate, names how that body starts with `# load-body-prefix: ...`)
#
# Each proxy gets CPU $PROXY_CPU alone; wrk and the backend share CPU $LOAD_CPU. Configurations are
# measured one at a time, in interleaved rounds, so that slow drift of a shared machine hits every
# configuration alike. For each measured run we record wrk's req/s and latency and the proxy's
# utime+stime from /proc, which divided by the completed requests gives CPU microseconds/request:
# the number that stays meaningful when the machine is noisy.
#
# By default wrk saturates the proxy. With RATE=N the measured runs are oha offering N requests/s
# instead, the same for every configuration: CPU per request below saturation, as a production
# gateway runs (see benches/README.md; its ratios are not interchangeable with saturation's).
#
# Knobs (environment):
#   DURATION=10s  ROUNDS=3  CONNECTIONS=32  WARMUP=2s
#   RATE=15000  (measured runs at a fixed offered rate: oha -q, requests/s in total over the
#                CONNECTIONS connections, --latency-correction; default: wrk at saturation)
#   VARIANTS="tollgate_plain other"   (names of benches/load/configs/*.toml; default: all of them)
#   PROXY_CPU=0  LOAD_CPU=1  REQ_PATH=/bench (or /bench16k: the 16 KiB answer for every row)
#   START_TIMEOUT=10  SKIP_BUILD=1  KEEP_TMP=1
#   TOLLGATE_BIN=path/to/another/tollgate  BARE_BIN=path/to/bare_pingora  NICE=-10
#   REDIS_RTT_CALLS=20000  KEEP_AWAKE=1
#   NGINX_ACCESS_LOG=1  (the nginx proxy logs every request as Tollgate's variants do: one JSON
#                        line, buffered 64k, flushed every 200 ms; default: nginx logs nothing)
#   BARE_ANSWER=1  (also measure bare_pingora_answer, above)
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
# Requests/s in total for the measured runs (oha); empty: wrk at saturation.
RATE=${RATE:-}
# Calls per round of the Redis round-trip yardstick (only when a configuration uses Redis).
REDIS_RTT_CALLS=${REDIS_RTT_CALLS:-20000}
# 1: keep both CPUs from idling (a nice-19 busy loop on each), as on a loaded server.
KEEP_AWAKE=${KEEP_AWAKE:-0}
NGINX_ACCESS_LOG=${NGINX_ACCESS_LOG:-0}
BARE_ANSWER=${BARE_ANSWER:-0}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# Not "/": Tollgate's catch-all route "/{*rest}" (matchit) does not match an empty rest.
REQ_PATH=${REQ_PATH:-/bench}
START_TIMEOUT=${START_TIMEOUT:-10}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
# Negative values (root only) make the benchmark win the scheduler against other people's
# unpinned work on a shared machine; 0 keeps everyone equal.
NICE=${NICE:-0}

CLK_TCK=$(getconf CLK_TCK)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOAD_DIR=$ROOT/benches/load
CONFIG_DIR=$LOAD_DIR/configs
TOLLGATE_BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}  # override to compare two builds
# Another build to measure in the same run: every variant NAME is also run as NAME@baseline
# with this binary (e.g. a copy of the previous commit's build), interleaved with the rest.
BASELINE_BIN=${BASELINE_BIN:-}
BARE_BIN=${BARE_BIN:-$ROOT/target/release/examples/bare_pingora}  # override to use a prebuilt one
RTT_BIN=$ROOT/target/release/examples/redis_round_trip
REPORT=$ROOT/target/load-report.md
EXPECTED_BODY=$'{"ok":true}\n'  # 12 bytes, as the backend sends it
# The backend's 16 KiB answer at /bench16k: a JSON object padded to 16,384 bytes with its newline.
BODY_16K="{\"pad\":\"$(printf '%*s' 16373 '' | tr ' ' x)\"}"
# REQ_PATH=/bench16k measures every configuration (nginx and bare Pingora included) on it.
if [[ $REQ_PATH == /bench16k ]]; then EXPECTED_BODY=$BODY_16K$'\n'; fi
# The path and body of the configuration being measured (REQ_PATH and EXPECTED_BODY unless its
# config says `# load-path: /bench16k`).
CUR_PATH=$REQ_PATH
CUR_BODY=$EXPECTED_BODY

STARTED_PIDS=()   # every process we started, for the EXIT trap
CUR_HEADER=""     # request header of the configuration being measured (JWT variants), or empty
CUR_HEADER_ARGS=()
TMP=""
# Command words put before bare_pingora's and Tollgate's own (instructions.sh runs them under
# valgrind this way); empty here.
PROXY_WRAPPER=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --------------------------------------------------------------------------- process handling

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
    [[ -n $TMP ]] && kill_leftovers
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then log "kept temp dir $TMP"; else rm -rf "$TMP"; fi
    fi
}

# leftover_pids / kill_leftovers: safety net for servers that outlived stop_pid (say, a child
# that got detached). Every server is started with LOAD_RUN_MARK=$TMP in its environment, and
# nginx and Tollgate also have $TMP in their command line (nginx rewrites its environment block
# for its process title), so a match is one of ours, from this very run.
leftover_pids() {
    python3 - "$TMP" "$$" <<'PY'
import os, sys
tmp, me = sys.argv[1], sys.argv[2]
mark = ("LOAD_RUN_MARK=" + tmp).encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    if pid in (me, str(os.getpid()), str(os.getppid())):
        continue
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
    except OSError:
        continue
    if mark in env or (tmp + "/").encode() in cmd:
        print(pid)
PY
}

kill_leftovers() {
    local p
    for p in $(leftover_pids); do
        log "leftover process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null); stopping it"
        kill -TERM "$p" 2>/dev/null || true
    done
}

# on_cpu CPU CMD...: run CMD in the foreground pinned to one CPU, at the chosen nice level.
on_cpu() {
    local cpu=$1
    shift
    nice -n "$NICE" taskset -c "$cpu" "$@"
}

# start_pinned CPU OUT ERR CMD...: start CMD in the background on one CPU; sets START_PID,
# which is the server's own PID (the one we signal and read /proc for). This must stay a simple
# command and not call on_cpu: a function run with & gets a subshell of its own, $! would be
# that subshell, and killing it would leave the server running. nice and taskset both exec.
start_pinned() {
    local cpu=$1 out=$2 err=$3
    shift 3
    LOAD_RUN_MARK=$TMP nice -n "$NICE" taskset -c "$cpu" "$@" >"$out" 2>"$err" &
    START_PID=$!
    STARTED_PIDS+=("$START_PID")
}

# stop_pid PID: SIGTERM, then SIGKILL after 3 s. Benchmark servers need no graceful drain
# (and Pingora's default grace period is 300 s).
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 3 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    # Forget it, so the EXIT trap never signals a recycled PID that belongs to someone else.
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

# free_port: a port the kernel considers free right now on 127.0.0.1. Fresh ports for every
# start avoid binding a port whose previous owner is still closing (TIME_WAIT, slow exit).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# tree_ticks PID: utime+stime (clock ticks) of PID and all its descendants, all threads.
# /proc/PID/stat already sums the threads of a process; descendants matter for nginx, whose
# master forks the worker that does the work. Fields are counted after the last ')' because
# the command name may contain spaces: state is field 3, utime 14, stime 15.
tree_ticks() {
    local pid=$1 total=0 stat child
    local -a f
    if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
        read -r -a f <<<"${stat##*) }"
        total=$((f[11] + f[12]))
    fi
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        total=$((total + $(tree_ticks "$child")))
    done
    echo "$total"
}

# core_usage CPU: "busy_us wall_us" of one CPU so far. Whatever else runs on a benchmark CPU
# during a run (other people's builds on a shared machine, kernel workers, hypervisor steal)
# shows up as busy time that is not our processes'; the report prints that share for every run.
# Busy = wall - idle, with idle from cpuidle residency (precise microseconds). /proc/stat's
# per-CPU ticks are sampled and, on a core that sleeps and wakes thousands of times a second,
# disagree with the precise per-process times by 10-20%; they are only the fallback.
core_usage() {
    local cpu=$1 t idle=0 wall
    wall=$(($(date +%s%N) / 1000))
    local states=(/sys/devices/system/cpu/cpu"$cpu"/cpuidle/state*/time)
    if [[ -r ${states[0]} ]]; then
        for t in "${states[@]}"; do idle=$((idle + $(<"$t"))); done
        echo "$((wall - idle)) $wall"
    else
        awk -v c="cpu$cpu" -v hz="$CLK_TCK" '$1 == c {
            busy = $2 + $3 + $4 + $7 + $8 + $9
            printf "%d %d\n", busy * 1e6 / hz, (busy + $5 + $6) * 1e6 / hz }' /proc/stat
    fi
}

# wait_ready URL PID: poll until URL answers anything over HTTP, the process dies, or the
# start timeout passes. Returns non-zero (with a message) on the last two.
wait_ready() {
    local url=$1 pid=$2 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" 2>/dev/null || rc=$?
            FAIL_REASON="exited during start-up (exit status $rc)"
            log "process $pid $FAIL_REASON"
            return 1
        fi
        if curl -s -o /dev/null --max-time 1 "${CUR_HEADER_ARGS[@]}" "$url"; then return 0; fi
        sleep 0.1
    done
    FAIL_REASON="no HTTP answer within ${START_TIMEOUT}s"
    log "$FAIL_REASON from $url"
    return 1
}

# check_response URL: exactly 200 and exactly the backend's 12-byte body. A proxy that answers
# fast with errors must not get measured as if it worked. The body is followed by a newline
# and the status code, so the split below keeps the body's own trailing newline.
check_response() {
    local url=$1 out status body
    out=$(curl -s --max-time 2 -w '\n%{http_code}' "${CUR_HEADER_ARGS[@]}" "$url") || {
        FAIL_REASON="request to $url failed"
        log "$FAIL_REASON"
        return 1
    }
    status=${out##*$'\n'}
    body=${out%$'\n'*}
    if [[ -n ${CUR_BODY_PREFIX:-} ]]; then
        # The gateway's own body (an aggregate's, with timings): its start is fixed.
        if [[ $status == 200 && ${body:0:${#CUR_BODY_PREFIX}} == "$CUR_BODY_PREFIX" ]]; then return 0; fi
        FAIL_REASON="answered status $status, body $(printf %q "${body:0:120}") not starting with $(printf %q "$CUR_BODY_PREFIX")"
        log "unexpected answer from $url: $FAIL_REASON"
        return 1
    fi
    if [[ $status != 200 || $body != "$CUR_BODY" ]]; then
        FAIL_REASON="answered status $status, body $(printf %q "${body:0:80}") instead of 200 $(printf %q "${CUR_BODY:0:80}")"
        log "unexpected answer from $url: $FAIL_REASON"
        return 1
    fi
}

# --------------------------------------------------------------------------- configuration files

# Lines every nginx instance needs to run unprivileged-or-root from its own prefix: nginx-light
# is built with temp paths under /var/lib/nginx (absent here), its own pid/lock paths, and when
# running as root a default user "nobody nobody" (Debian has no group "nobody").
nginx_common() {
    local prefix=$1
    if ((EUID == 0)); then echo "user $(id -un) $(id -gn);"; fi
    cat <<EOF
worker_processes 1;
daemon off;
pid $prefix/nginx.pid;
lock_file $prefix/nginx.lock;
error_log $prefix/error.log warn;
events { worker_connections 4096; }
EOF
}

# Temp paths and the shared http settings. keepalive_requests: nginx closes a keep-alive
# connection after 1000 requests by default, which would charge reconnects to some rows only.
nginx_http_common() {
    local prefix=$1
    cat <<EOF
    access_log off;
    client_body_temp_path $prefix/client_body;
    proxy_temp_path $prefix/proxy;
    fastcgi_temp_path $prefix/fastcgi;
    uwsgi_temp_path $prefix/uwsgi;
    scgi_temp_path $prefix/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
EOF
}

write_backend_conf() {
    local prefix=$1 port=$2
    {
        nginx_common "$prefix"
        echo "http {"
        nginx_http_common "$prefix"
        cat <<EOF
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type application/json;
            return 200 '{"ok":true}\n';
        }
        # Read by run.sh around each measured run: new connections tell whether the proxy kept
        # its upstream connections alive, handled requests whether it forwarded every request.
        location = /bench16k {
            default_type application/json;
            alias $prefix/bench16k.json;
        }
        location = /__backend_status {
            stub_status;
        }
        # The trace collector of the tracing variants (@OTLP@): takes every export.
        location = /v1/traces {
            client_max_body_size 16m;
            return 200 '';
        }
    }
}
EOF
    } >"$prefix/nginx.conf"
    printf '%s\n' "$BODY_16K" >"$prefix/bench16k.json"
}

# NGINX_ACCESS_LOG=1: the proxy's access log, as close to Tollgate's JSON line as nginx's
# variables allow (the same fields, a generated request id), written the way Tollgate writes
# its own: buffered, flushed at 64k or every 200 ms.
nginx_proxy_access_log() {
    local prefix=$1
    [[ $NGINX_ACCESS_LOG == 1 ]] || return 0
    echo "        access_log $prefix/access.log tollgate buffer=64k flush=200ms;"
}

nginx_proxy_log_format() {
    [[ $NGINX_ACCESS_LOG == 1 ]] || return 0
    cat <<'EOF'
    log_format tollgate escape=json '{"time":"$time_iso8601","request_id":"$request_id",'
        '"client":"$remote_addr","method":"$request_method","path":"$uri","route":"plain",'
        '"upstream":"backend","target":"$upstream_addr","status":$status,'
        '"duration_ms":$request_time,"bytes_in":$request_length,"bytes_out":$bytes_sent}';
EOF
}

# The idle upstream pool must hold one connection per wrk connection, or nginx would close and
# reopen upstream connections all the time (64, or CONNECTIONS when that is larger).
write_nginx_proxy_conf() {
    local prefix=$1 port=$2 backend=$3
    {
        nginx_common "$prefix"
        echo "http {"
        nginx_http_common "$prefix"
        nginx_proxy_log_format
        cat <<EOF
    upstream backend {
        server $backend;
        keepalive $((CONNECTIONS > 64 ? CONNECTIONS : 64));
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
$(nginx_proxy_access_log "$prefix")
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$prefix/nginx.conf"
}

# set_header "Name: value" | "": the header wrk, oha and curl send to the configuration under
# test (all three take it as `-H "Name: value"`).
set_header() {
    CUR_HEADER=$1
    CUR_HEADER_ARGS=()
    if [[ -n $CUR_HEADER ]]; then CUR_HEADER_ARGS=(-H "$CUR_HEADER"); fi
}

# set_path PATH | "": the path wrk and curl request, and the body it must answer (/bench16k: the
# backend's 16 KiB body; "": REQ_PATH and its 12 bytes).
set_path() {
    case $1 in
        "") CUR_PATH=$REQ_PATH CUR_BODY=$EXPECTED_BODY ;;
        /bench16k) CUR_PATH=$1 CUR_BODY=$BODY_16K$'\n' ;;
        *) die "load-path: only /bench16k is served by the backend (got '$1')" ;;
    esac
}

# render_tollgate_conf NAME OUT LISTEN ADMIN: fill the placeholders of configs/NAME.toml.
render_tollgate_conf() {
    local name=$1 out=$2 listen=$3 admin=$4
    sed -e "s/@LISTEN@/$listen/g" -e "s/@ADMIN@/$admin/g" -e "s/@BACKEND@/$BACKEND_ADDR/g" \
        -e "s|@JWKS_FILE@|$AUTH_DIR/jwks.json|g" -e "s|@HS_SECRET_FILE@|$AUTH_DIR/hs.secret|g" \
        -e "s|@RS256_TOKEN@|$(cat "$AUTH_DIR/rs256.token")|g" \
        -e "s|@HS256_TOKEN@|$(cat "$AUTH_DIR/hs256.token")|g" \
        -e "s|@REDIS@|${REDIS_URL:-}|g" -e "s|@OTLP@|http://$BACKEND_ADDR|g" \
        "$CONFIG_DIR/$name.toml" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then
        log "$CONFIG_DIR/$name.toml has placeholders run.sh does not know: $(grep -o '@[A-Z_]*@' "$out" | sort -u | tr '\n' ' ')"
        return 1
    fi
}

# --------------------------------------------------------------------------- the configurations

# start_config NAME ROUND: start (if needed) and check the server for NAME; sets CUR_PID and
# CUR_PORT. Returns non-zero when it does not come up or answers wrongly.
start_config() {
    local name=$1 round=$2 dir="$TMP/$1.r$2" port
    mkdir -p "$dir"
    CUR_STARTED=1
    set_header ""
    set_path ""
    CUR_BODY_PREFIX=""
    case $name in
        backend)
            CUR_PID=$BACKEND_PID CUR_PORT=$BACKEND_PORT CUR_STARTED=0
            ;;
        nginx)
            port=$(free_port)
            write_nginx_proxy_conf "$dir" "$port" "$BACKEND_ADDR"
            start_pinned "$PROXY_CPU" "$dir/stdout" "$dir/stderr" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
            CUR_PID=$START_PID CUR_PORT=$port
            ;;
        bare_pingora)
            port=$(free_port)
            start_pinned "$PROXY_CPU" "$dir/stdout" "$dir/stderr" \
                "${PROXY_WRAPPER[@]}" "$BARE_BIN" --listen "127.0.0.1:$port" --upstream "$BACKEND_ADDR" --threads 1
            CUR_PID=$START_PID CUR_PORT=$port
            ;;
        bare_pingora_answer)
            port=$(free_port)
            start_pinned "$PROXY_CPU" "$dir/stdout" "$dir/stderr" \
                "${PROXY_WRAPPER[@]}" "$BARE_BIN" --listen "127.0.0.1:$port" --upstream "$BACKEND_ADDR" --threads 1 \
                --answer "$CUR_BODY"
            CUR_PID=$START_PID CUR_PORT=$port
            ;;
        *)
            # A Tollgate variant. stdout is the JSON access log and goes to a file, as it would
            # in production: formatting and write() are part of the measurement (the file is on
            # tmpfs, so disk writeback, which no process is charged for, is not).
            local bin=$TOLLGATE_BIN conf=$name
            if [[ $name == *@baseline ]]; then
                bin=$BASELINE_BIN conf=${name%@baseline}
            fi
            [[ -x $bin ]] || { FAIL_REASON="$bin not built"; return 1; }
            port=$(free_port)
            render_tollgate_conf "$conf" "$dir/tollgate.toml" "127.0.0.1:$port" "127.0.0.1:$(free_port)" ||
                { FAIL_REASON="unknown placeholder in $name.toml"; return 1; }
            # A config may name one request header for every request (`# load-header: ...`).
            set_header "$(sed -n 's/^# load-header: //p' "$dir/tollgate.toml" | head -n 1)"
            set_path "$(sed -n 's/^# load-path: //p' "$dir/tollgate.toml" | head -n 1)"
            CUR_BODY_PREFIX=$(sed -n 's/^# load-body-prefix: //p' "$dir/tollgate.toml" | head -n 1)
            start_pinned "$PROXY_CPU" "$dir/access.log" "$dir/stderr" "${PROXY_WRAPPER[@]}" "$bin" run -c "$dir/tollgate.toml"
            CUR_PID=$START_PID CUR_PORT=$port
            ;;
    esac
    if ! wait_ready "http://127.0.0.1:$CUR_PORT$CUR_PATH" "$CUR_PID" || ! check_response "http://127.0.0.1:$CUR_PORT$CUR_PATH"; then
        if [[ -s $dir/stderr ]]; then
            log "last lines of $name's stderr:"
            tail -n 15 "$dir/stderr" | sed 's/^/    /' >&2
        fi
        stop_config "$name" "$round"
        return 1
    fi
}

stop_config() {
    local name=$1 round=$2 dir="$TMP/$1.r$2"
    if [[ $CUR_STARTED == 1 ]]; then stop_pid "$CUR_PID"; fi
    if [[ -f $dir/access.log ]]; then
        # Sanity check that the access log was really on, then drop it (it grows ~100 MB/run).
        log "  $name access log: $(wc -l <"$dir/access.log") lines (warm-up + measured + checks)"
        rm -f "$dir/access.log"
    fi
}

# backend_counters: "accepted-connections handled-requests" of the backend nginx so far.
backend_counters() {
    curl -s --max-time 2 "http://$BACKEND_ADDR/__backend_status" | awk 'NR == 3 { print $1, $3 }'
}

# snapshot: every counter we difference around the measured run, as key=value lines
# (report.py subtracts "before" from "after"):
#   proxy_ticks      CPU of the server under test (the backend itself for the backend row)
#   backend_ticks    CPU of the backend nginx
#   proxy_core_*     busy/wall microseconds of the proxy's CPU: busy minus proxy = other load
#   load_core_*      same for the wrk+backend CPU: busy minus wrk minus backend = other load
#   backend_conns/_reqs  connections accepted / requests handled by the backend: tells whether
#                    the proxy kept upstream connections alive and forwarded every request
snapshot() {
    local busy total conns reqs
    # The /proc readings first and back to back, the HTTP status request last.
    echo "proxy_ticks=$(tree_ticks "$CUR_PID")"
    echo "backend_ticks=$(tree_ticks "$BACKEND_PID")"
    read -r busy total <<<"$(core_usage "$PROXY_CPU")"
    echo "proxy_core_busy_us=$busy"
    echo "proxy_core_wall_us=$total"
    read -r busy total <<<"$(core_usage "$LOAD_CPU")"
    echo "load_core_busy_us=$busy"
    echo "load_core_wall_us=$total"
    read -r conns reqs <<<"$(backend_counters)"
    echo "backend_conns=${conns:-}"
    echo "backend_reqs=${reqs:-}"
}

# measured_load URL OUT: the measured run's load, in the foreground on the load CPU, for
# $DURATION. Without RATE: wrk at saturation, its output in OUT.wrk. With RATE: oha offering RATE
# requests/s in all over the same connections, its JSON in OUT.oha (messages in OUT.oha.err).
# --latency-correction counts each latency from the request's scheduled send time, so a server
# that falls behind the rate shows it in p50/p99 instead of oha quietly sending later. oha's -z
# also bounds the run: the requests still in flight then are aborted, not waited for.
measured_load() {
    local url=$1 out=$2
    if [[ -n $RATE ]]; then
        on_cpu "$LOAD_CPU" oha -z "$DURATION" -q "$RATE" -c "$CONNECTIONS" --latency-correction --no-tui \
            --output-format json "${CUR_HEADER_ARGS[@]}" "$url" >"$out.oha" 2>"$out.oha.err"
    else
        on_cpu "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${CUR_HEADER_ARGS[@]}" "$url" >"$out.wrk" 2>&1
    fi
}

# load_summary OUT: the measured run's req/s, one line for the log (oha's error when it gave no
# JSON). The report reads the numbers properly.
load_summary() {
    local out=$1
    if [[ -n $RATE ]]; then
        local rps
        rps=$(grep -m 1 -o '"requestsPerSec": *[0-9.]*' "$out.oha" | tr -d '"') || true
        if [[ -n $rps ]]; then echo "$rps (offered $RATE)"; else echo "no JSON from oha: $(head -n 1 "$out.oha.err")"; fi
    else
        grep -E '^Requests/sec' "$out.wrk" | tr -s ' '
    fi
    return 0
}

# measure NAME ROUND: warm-up, then the measured run with counters read around it.
measure() {
    local name=$1 round=$2 url="http://127.0.0.1:$CUR_PORT$CUR_PATH"
    local out="$RESULTS/$round.$name"
    # The warm-up also fills the proxy's upstream pool, so the measured run sees steady state.
    # It stays on wrk with RATE too: at saturation every one of the CONNECTIONS has a request in
    # flight, so the pool holds a connection for each, which a paced load would not guarantee
    # (the pool could then grow during the measured run, counted as new backend connections).
    # Nothing is measured here, so the warm-up needs no pacing.
    on_cpu "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "${CUR_HEADER_ARGS[@]}" "$url" >/dev/null 2>&1 || true
    snapshot >"$out.before"
    # bash's `time` reports the load generator's own user+sys seconds, needed to tell it from
    # other load on its CPU.
    local TIMEFORMAT='loadgen_cpu_s=%3U+%3S'
    { time measured_load "$url" "$out"; } 2>"$out.loadtime" || true
    snapshot >"$out.after"
    cat "$out.loadtime" >>"$out.after"
    if ! kill -0 "$CUR_PID" 2>/dev/null; then
        echo "process died during the run" >"$out.died"
        log "  $name died during the measured run"
    fi
    log "  $name: $(load_summary "$out")"
}

# measure_redis_round_trip ROUND: the yardstick for cluster rate limits, measured in the same run
# and placement: one client on the proxy's CPU calling the limiter's own script (EVALSHA, one key)
# on the run's redis-server, one call at a time. Writes $RESULTS/ROUND.redis_rtt.csv.
measure_redis_round_trip() {
    [[ -n ${REDIS_URL:-} ]] || return 0
    local port=${REDIS_URL##*:} sha
    port=${port%%/*}
    sha=$(cat "$ROOT/src/ratelimit/cluster/server_clock.lua" "$ROOT/src/ratelimit/cluster/gcra.lua" |
        redis-cli -p "$port" -x SCRIPT LOAD) || die "redis-cli SCRIPT LOAD failed"
    # Emission interval 1 ns and tolerance just under 1 s: the benchmark limit's shape (never refuses).
    on_cpu "$PROXY_CPU" redis-benchmark -p "$port" -c 1 -n "$REDIS_RTT_CALLS" --csv \
        EVALSHA "$sha" 1 tollgate:rl:bench:rtt 1 999999999 >"$RESULTS/$1.redis_rtt.csv" 2>/dev/null ||
        log "redis-benchmark failed; no round-trip yardstick this round"
    # The same call through Tollgate's own client, outside the gateway.
    if [[ -x $RTT_BIN ]]; then
        on_cpu "$PROXY_CPU" "$RTT_BIN" "$REDIS_URL" "$REDIS_RTT_CALLS" >"$RESULTS/$1.client_rtt" 2>&1 ||
            log "redis_round_trip failed: $(cat "$RESULTS/$1.client_rtt")"
    fi
}

# start_redis_if_needed NAME...: when a configuration names @REDIS@ (cluster rate limits), start
# one redis-server for the whole run on the load generator's CPU (no persistence) and set
# REDIS_URL. Redis work is then the load side's, like the backend's.
start_redis_if_needed() {
    local name needed=0
    for name in "$@"; do
        [[ -f $CONFIG_DIR/$name.toml ]] && grep -q '@REDIS@' "$CONFIG_DIR/$name.toml" && needed=1
    done
    ((needed)) || return 0
    local t
    for t in redis-server redis-cli redis-benchmark; do
        command -v "$t" >/dev/null 2>&1 || die "a configuration uses @REDIS@: install $t (Debian: apt-get install -y redis-server redis-tools)"
    done
    local port i
    port=$(free_port)
    mkdir -p "$TMP/redis"
    start_pinned "$LOAD_CPU" "$TMP/redis/stdout" "$TMP/redis/stderr" \
        redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$TMP/redis"
    for ((i = 0; i < 50; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            REDIS_URL=redis://127.0.0.1:$port/0
            log "redis-server on 127.0.0.1:$port (pid $START_PID, CPU $LOAD_CPU)"
            return 0
        fi
        sleep 0.1
    done
    cat "$TMP/redis/stderr" "$TMP/redis/stdout" >&2 2>/dev/null || true
    die "redis-server did not start"
}

# --------------------------------------------------------------------------- main

# require_tools [RATE]: the tools every run needs, and oha when RATE (run.sh's fixed-rate mode)
# is given. instructions.sh calls it without: its own RATE paces fixed_load.py.
require_tools() {
    local t missing=()
    for t in wrk nginx taskset nice curl python3 pgrep getconf openssl; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if ((${#missing[@]})); then
        die "missing tools: ${missing[*]} (Debian: apt-get install -y wrk nginx-light util-linux curl procps python3)"
    fi
    if [[ -n ${1:-} ]] && ! command -v oha >/dev/null 2>&1; then
        die "RATE is set: the measured runs need oha (cargo install oha; it goes to ~/.cargo/bin, which must be on PATH)"
    fi
    local ncpu
    ncpu=$(getconf _NPROCESSORS_ONLN)
    ((PROXY_CPU < ncpu && LOAD_CPU < ncpu && PROXY_CPU != LOAD_CPU)) ||
        die "need two distinct online CPUs (PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU, $ncpu online)"
}

build() {
    if [[ $SKIP_BUILD == 1 ]]; then
        log "SKIP_BUILD=1: using existing binaries"
    else
        log "building release binaries"
        # The tollgate binary may not build while it is being written; the bare baseline must.
        if ! (cd "$ROOT" && cargo build --release --bin tollgate --example bare_pingora --example redis_round_trip); then
            die "cargo build failed (see above). Fix the build, or rerun with SKIP_BUILD=1 to measure the binaries already in target/release."
        fi
    fi
    [[ -x $BARE_BIN ]] || die "$BARE_BIN missing"
    # Linking wrote ~100 MB of binaries: flush them now rather than have the kernel's writeback
    # threads run during the first measurements.
    sync
}

# build_note: with SKIP_BUILD the git revision need not describe the binaries; say when they were built.
build_note() {
    [[ $SKIP_BUILD == 1 ]] || return 0
    local when
    when=$(date -r "$TOLLGATE_BIN" '+%Y-%m-%d %H:%M' 2>/dev/null || echo "missing")
    echo "not rebuilt (SKIP_BUILD=1; tollgate binary from $when)"
}

# select_variants: the Tollgate configurations to measure, from VARIANTS (default: every
# configs/*.toml), each also as NAME@baseline when BASELINE_BIN is set. Sets VARIANT_CONFIGS.
select_variants() {
    local variants=()
    if [[ -n ${VARIANTS:-} ]]; then
        read -r -a variants <<<"${VARIANTS//,/ }"
    else
        local f
        for f in "$CONFIG_DIR"/*.toml; do [[ -e $f ]] && variants+=("$(basename "$f" .toml)"); done
    fi
    local v
    for v in "${variants[@]}"; do
        [[ -f $CONFIG_DIR/$v.toml ]] || die "VARIANTS: no $CONFIG_DIR/$v.toml"
        case $v in backend | nginx | bare_pingora | bare_pingora_answer) die "variant name '$v' is reserved" ;; esac
    done
    VARIANT_CONFIGS=("${variants[@]}")
    if [[ -n $BASELINE_BIN ]]; then
        [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN: $BASELINE_BIN is not an executable"
        for v in "${variants[@]}"; do VARIANT_CONFIGS+=("$v@baseline"); done
    fi
}

# setup_run PREFIX CONFIG...: what every measurement needs before the first configuration: the
# temp directory ($TMP, /dev/shm/PREFIX.*), $RESULTS, the JWT material, the EXIT trap that stops
# every process we start, the keep-awake loops if asked for, the backend nginx on the load CPU,
# and redis-server if one of CONFIG... uses it.
setup_run() {
    local prefix=$1
    shift
    # Temp files (above all Tollgate's access log, ~100 MB per measured run) live on tmpfs when
    # possible. On a disk file system the kernel writes them back about 30 s later in unpinned
    # kworker threads: CPU charged to no process, landing on whichever configuration runs then.
    local tmp_base=/tmp
    if [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs && -w /dev/shm ]]; then
        tmp_base=/dev/shm
    else
        log "WARNING: /dev/shm is not a writable tmpfs; temp files go to /tmp (expect writeback noise)"
    fi
    TMP=$(mktemp -d "$tmp_base/$prefix.XXXXXX")
    chmod 755 "$TMP"
    RESULTS=$TMP/results
    mkdir -p "$RESULTS"
    # Keys, a JWKS file and tokens for the JWT variants, fresh for every run.
    AUTH_DIR=$TMP/auth
    python3 "$LOAD_DIR/auth_material.py" "$AUTH_DIR" || die "could not make the JWT bench material"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    if [[ $KEEP_AWAKE == 1 ]]; then
        # A sleeping vCPU takes tens of microseconds to wake on a VM; with one connection every
        # request waits (for the backend, for Redis) and pays that. Busy loops at the lowest
        # priority keep both CPUs awake and yield to everything else.
        local cpu
        for cpu in "$PROXY_CPU" "$LOAD_CPU"; do
            LOAD_RUN_MARK=$TMP nice -n 19 taskset -c "$cpu" sh -c 'while :; do :; done' >/dev/null 2>&1 &
            STARTED_PIDS+=("$!")
        done
        log "KEEP_AWAKE=1: nice-19 busy loops on CPUs $PROXY_CPU and $LOAD_CPU"
    fi

    # The backend lives for the whole run, on the load generator's CPU.
    BACKEND_PORT=$(free_port)
    BACKEND_ADDR=127.0.0.1:$BACKEND_PORT
    mkdir -p "$TMP/backend"
    write_backend_conf "$TMP/backend" "$BACKEND_PORT"
    start_pinned "$LOAD_CPU" "$TMP/backend/stdout" "$TMP/backend/stderr" \
        nginx -p "$TMP/backend" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/error.log"
    BACKEND_PID=$START_PID
    if ! wait_ready "http://$BACKEND_ADDR$REQ_PATH" "$BACKEND_PID" || ! check_response "http://$BACKEND_ADDR$REQ_PATH"; then
        cat "$TMP/backend/stderr" "$TMP/backend/error.log" >&2 2>/dev/null || true
        die "backend nginx did not start"
    fi
    log "backend nginx on $BACKEND_ADDR (pid $BACKEND_PID, CPU $LOAD_CPU)"
    start_redis_if_needed "$@"
}

main() {
    [[ -z $RATE || $RATE =~ ^[1-9][0-9]*$ ]] || die "RATE is a whole number of requests/s (got '$RATE')"
    require_tools "$RATE"
    build
    select_variants
    local configs=(backend nginx bare_pingora)
    [[ $BARE_ANSWER == 1 ]] && configs+=(bare_pingora_answer)
    configs+=("${VARIANT_CONFIGS[@]}")
    setup_run tollgate-load "${configs[@]}"
    local load="wrk at saturation"
    [[ -n $RATE ]] && load="oha at $RATE req/s"
    log "configs: ${configs[*]}; $ROUNDS rounds of $DURATION (warm-up $WARMUP), $CONNECTIONS connections, $load"

    local round name
    for ((round = 1; round <= ROUNDS; round++)); do
        log "round $round/$ROUNDS"
        for name in "${configs[@]}"; do
            # A configuration that failed once is not retried: its reason is already recorded.
            [[ -f $RESULTS/$name.skipped ]] && continue
            FAIL_REASON="unknown failure"
            if ! start_config "$name" "$round"; then
                log "SKIPPING $name (not measured from round $round on): $FAIL_REASON"
                echo "$FAIL_REASON (round $round)" >"$RESULTS/$name.skipped"
                continue
            fi
            measure "$name" "$round"
            stop_config "$name" "$round"
        done
        measure_redis_round_trip "$round"
    done

    mkdir -p "$(dirname "$REPORT")"
    python3 "$LOAD_DIR/report.py" \
        --results "$RESULTS" --configs "${configs[*]}" --rounds "$ROUNDS" --clk-tck "$CLK_TCK" \
        --duration "$DURATION" --connections "$CONNECTIONS" --rate "$RATE" --proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU" \
        --nginx-version "$(nginx -v 2>&1 | sed 's/.*nginx\///')" \
        --git-rev "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo none)" --nice "$NICE" \
        --build-note "$(build_note)" --keep-awake "$KEEP_AWAKE" --nginx-access-log "$NGINX_ACCESS_LOG" \
        >"$REPORT"
    echo
    cat "$REPORT"
    log "report written to $REPORT"
}

# Run only when executed, so that other scripts (instructions.sh) can source the functions above.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
