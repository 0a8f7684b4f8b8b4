#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind, for bare Pingora and each
# Tollgate variant (see benches/README.md, "Instructions per request (callgrind)").
#
# CPU µs per request (run.sh) moves by ±10% between runs on a shared machine; an instruction
# count does not depend on how busy the machine is. For each configuration this script:
#   1. starts the proxy under `valgrind --tool=callgrind --instr-atstart=no` on CPU $PROXY_CPU
#      (one proxy thread, the same configs, backend, ports and checks as run.sh, whose functions
#      it sources);
#   2. warms it up with $WARMUP seconds of the same paced load, uninstrumented, so that timers
#      registered by earlier requests (keep-alive 60 s, upstream read 30 s, pool idle 55 s) are
#      already expiring when counting starts, as they would in a long-running gateway;
#   3. WINDOWS times: switches instrumentation on (`callgrind_control -i on`), sends exactly
#      $REQUESTS requests over $CONNECTIONS keep-alive connections at $RATE requests/s
#      (fixed_load.py: every answer checked to be 200 with the backend's 12-byte body), switches
#      it off, dumps, and divides the dump's total Ir by the requests;
#   4. optionally (STRACE=1) a separate run without valgrind, `strace -c -f` attached around
#      $STRACE_REQUESTS requests of the same load: system calls per request.
# When bare_pingora and tollgate_plain are both measured, the report ends with
# instructions_profile.py's breakdown of tollgate_plain's extra instructions.
# The report (markdown, also written to target/instructions-report.md) gives the median over
# windows, the spread between windows, and ratios against bare_pingora, tollgate_plain and
# NAME@baseline.
#
# Knobs (environment):
#   VARIANTS="tollgate_plain other"   (names of benches/load/configs/*.toml; default: all of them)
#   TOLLGATE_BIN=path  BARE_BIN=path  BASELINE_BIN=path (each variant again as NAME@baseline)
#   SKIP_BUILD=1       (only matters when TOLLGATE_BIN or BARE_BIN is left at target/release)
#   REQUESTS=3000  WINDOWS=5  RATE=200  CONNECTIONS=8  WARMUP=65  STRACE=1  STRACE_REQUESTS=2000
#   BARE_ANSWER=1     (also bare_pingora_answer: bare Pingora answering from memory, see run.sh)
#   PROXY_CPU=0  LOAD_CPU=1  REQ_PATH=/bench  START_TIMEOUT=120  KEEP_TMP=1
#   DUMP_DIR=target/instructions (callgrind dumps are kept there, for callgrind_annotate)
set -euo pipefail

# Defaults that differ from run.sh's, set before sourcing it (it keeps values already set).
CONNECTIONS=${CONNECTIONS:-8}
WARMUP=${WARMUP:-65}
START_TIMEOUT=${START_TIMEOUT:-120}   # a 150 MB binary with debug info starts slowly under valgrind
_env_tollgate_bin=${TOLLGATE_BIN:-}
_env_bare_bin=${BARE_BIN:-}

# shellcheck source=run.sh
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"

REQUESTS=${REQUESTS:-3000}
WINDOWS=${WINDOWS:-5}
RATE=${RATE:-200}
STRACE=${STRACE:-1}
STRACE_REQUESTS=${STRACE_REQUESTS:-2000}
INSTR_REPORT=$ROOT/target/instructions-report.md
DUMP_DIR=${DUMP_DIR:-$ROOT/target/instructions}
WARMUP=${WARMUP%s}
case $WARMUP in '' | *[!0-9]*) die "WARMUP is a whole number of seconds here (got '$WARMUP')" ;; esac

# load_run COUNT OUT: COUNT requests of the paced load against the configuration being measured,
# from the load CPU; fixed_load.py's summary line goes to OUT. Bounded: twice the time the rate
# allows, plus a minute.
load_run() {
    local count=$1 out=$2 header_args=()
    [[ -n $CUR_HEADER ]] && header_args=(--header "$CUR_HEADER")
    timeout "$((count * 2 / RATE + 60))" nice -n "$NICE" taskset -c "$LOAD_CPU" \
        python3 "$LOAD_DIR/fixed_load.py" "127.0.0.1:$CUR_PORT" "$CUR_PATH" "$count" "$CONNECTIONS" \
        --rate "$RATE" --body "$CUR_BODY" "${header_args[@]}" >"$out"
}

# cg PID ARGS...: callgrind_control, bounded in time, quiet unless it fails.
cg() {
    local pid=$1 out
    shift
    out=$(timeout 60 callgrind_control "$@" "$pid" 2>&1) || { log "callgrind_control $* $pid failed: $out"; return 1; }
}

# measure_instructions NAME: start NAME under callgrind, warm up, count WINDOWS windows, stop.
# Writes $RESULTS/NAME.win.K (key=value) and copies the dumps to $DUMP_DIR.
measure_instructions() {
    local name=$1 dir="$TMP/$1.r1" k
    mkdir -p "$dir"
    PROXY_WRAPPER=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$dir/callgrind.out")
    local t0=$SECONDS
    FAIL_REASON="unknown failure"
    if ! start_config "$name" 1; then
        PROXY_WRAPPER=()
        log "SKIPPING $name: $FAIL_REASON"
        echo "$FAIL_REASON" >"$RESULTS/$name.skipped"
        return 0
    fi
    PROXY_WRAPPER=()
    log "  $name: up under callgrind in $((SECONDS - t0)) s (pid $CUR_PID); warm-up ${WARMUP}s at $RATE req/s"
    if ! load_run "$((WARMUP * RATE))" "$dir/warmup.out"; then
        # Every request answered, a few of them not with 200: tolerated in the warm-up only. Under
        # valgrind the first passes through new code are slow, and a deadline can pass (the
        # cluster limiter's 50 ms Redis call, then on_error = "deny"). The windows must be clean.
        if grep -q "^requests=$((WARMUP * RATE)) " "$dir/warmup.out"; then
            log "  $name: warm-up: $(cat "$dir/warmup.out") (answers other than 200 tolerated in the warm-up)"
        else
            log "  $name: warm-up failed: $(cat "$dir/warmup.out")"
            echo "warm-up failed: $(cat "$dir/warmup.out")" >"$RESULTS/$name.skipped"
            stop_config "$name" 1
            return 0
        fi
    fi
    sleep 0.5
    for ((k = 1; k <= WINDOWS; k++)); do
        local c0 r0 c1 r1 ok=1 dump ir
        read -r c0 r0 <<<"$(backend_counters)"
        cg "$CUR_PID" --instr=on || ok=0
        load_run "$REQUESTS" "$dir/window.$k.out" || ok=0
        cg "$CUR_PID" --instr=off || ok=0
        read -r c1 r1 <<<"$(backend_counters)"
        cg "$CUR_PID" --dump="window $k" || ok=0
        dump="$dir/callgrind.out.$k"
        ir=$(awk '$1 == "totals:" { print $2 }' "$dump" 2>/dev/null || true)
        if ((ok == 0)) || [[ -z $ir ]]; then
            log "  $name: window $k failed ($(cat "$dir/window.$k.out" 2>/dev/null))"
            echo "window $k failed: $(cat "$dir/window.$k.out" 2>/dev/null)" >"$RESULTS/$name.skipped"
            break
        fi
        {
            tr ' ' '\n' <"$dir/window.$k.out"
            echo "ir=$ir"
            # The stub_status request that reads the counters, and its connection, are the
            # backend's own.
            echo "backend_reqs=$((r1 - r0 - 1))"
            echo "backend_conns=$((c1 - c0 - 1))"
        } >"$RESULTS/$name.win.$k"
        mkdir -p "$DUMP_DIR"
        cp "$dump" "$DUMP_DIR/$name.$k.callgrind"
        log "  $name window $k: $(grep -o 'requests=[0-9]*' "$dir/window.$k.out"), $((ir / REQUESTS)) instructions/request"
    done
    if ! kill -0 "$CUR_PID" 2>/dev/null; then
        log "  $name died during the measurement"
        echo "process died during the measurement" >"$RESULTS/$name.died"
    fi
    stop_config "$name" 1
}

# measure_syscalls NAME: NAME without valgrind, warmed up briefly, then `strace -c -f` attached to
# all its threads around STRACE_REQUESTS requests. Writes $RESULTS/NAME.strace.
measure_syscalls() {
    local name=$1 dir="$TMP/$1.r2" spid
    [[ -f $RESULTS/$name.skipped ]] && return 0
    FAIL_REASON="unknown failure"
    if ! start_config "$name" 2; then
        log "  $name: no strace run ($FAIL_REASON)"
        return 0
    fi
    load_run "$((RATE * 2))" "$dir/warmup.out" || true
    strace -c -f -o "$dir/strace.txt" -p "$CUR_PID" 2>"$dir/strace.err" &
    spid=$!
    STARTED_PIDS+=("$spid")
    sleep 1 # strace attaches to every thread first
    if load_run "$STRACE_REQUESTS" "$dir/strace_load.out"; then
        kill -INT "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        { echo "requests=$STRACE_REQUESTS"; cat "$dir/strace.txt"; } >"$RESULTS/$name.strace"
    else
        log "  $name: strace load failed: $(cat "$dir/strace_load.out")"
    fi
    stop_pid "$spid"
    stop_config "$name" 2
}

instructions_main() {
    require_tools
    local t missing=()
    for t in valgrind callgrind_control timeout; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    [[ $STRACE != 1 ]] || command -v strace >/dev/null 2>&1 || missing+=(strace)
    ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (Debian: apt-get install -y valgrind strace)"
    # Build only what is measured from target/release; prebuilt binaries elsewhere need nothing.
    if [[ -n $_env_tollgate_bin && -n $_env_bare_bin ]]; then
        SKIP_BUILD=1
    fi
    build
    select_variants
    local configs=(bare_pingora)
    [[ $BARE_ANSWER == 1 ]] && configs+=(bare_pingora_answer)
    configs+=("${VARIANT_CONFIGS[@]}")
    setup_run tollgate-instr "${configs[@]}"
    log "configs: ${configs[*]}; warm-up ${WARMUP}s, $WINDOWS windows of $REQUESTS requests at $RATE req/s over $CONNECTIONS connections"
    rm -f "$DUMP_DIR"/*.callgrind 2>/dev/null || true

    local name
    for name in "${configs[@]}"; do
        measure_instructions "$name"
    done
    if [[ $STRACE == 1 ]]; then
        for name in "${configs[@]}"; do
            measure_syscalls "$name"
        done
    fi

    mkdir -p "$(dirname "$INSTR_REPORT")"
    local bins="bare_pingora=$BARE_BIN tollgate=$TOLLGATE_BIN"
    [[ -n $BASELINE_BIN ]] && bins+=" baseline=$BASELINE_BIN"
    python3 "$LOAD_DIR/instructions_report.py" \
        --results "$RESULTS" --configs "${configs[*]}" --windows "$WINDOWS" \
        --requests "$REQUESTS" --rate "$RATE" --connections "$CONNECTIONS" --warmup "$WARMUP" \
        --binaries "$bins" --valgrind "$(valgrind --version)" \
        --git-rev "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo none)" \
        --dump-dir "$DUMP_DIR" >"$INSTR_REPORT"
    # Where tollgate_plain's extra instructions over bare Pingora go (instructions_profile.py).
    local t_dumps=("$DUMP_DIR"/tollgate_plain.[0-9]*.callgrind) b_dumps=("$DUMP_DIR"/bare_pingora.[0-9]*.callgrind)
    if [[ -e ${t_dumps[0]} && -e ${b_dumps[0]} ]]; then
        {
            echo
            echo "<details><summary>Profile: where tollgate_plain's extra instructions go</summary>"
            echo
            python3 "$LOAD_DIR/instructions_profile.py" --requests "$REQUESTS" \
                --tollgate "${t_dumps[@]}" --bare "${b_dumps[@]}" || echo "(instructions_profile.py failed)"
            echo
            echo "</details>"
        } >>"$INSTR_REPORT"
    fi
    echo
    cat "$INSTR_REPORT"
    log "report written to $INSTR_REPORT"
}

# exit on the same line: bash reads a script as it runs it, and must not read past this line
# if the file is edited during a run.
instructions_main "$@"; exit $?
