#!/usr/bin/env python3
"""Turn the raw results of benches/load/run.sh into a markdown report.

Input: a directory with, per round R and configuration NAME,
  R.NAME.wrk     wrk --latency output of the measured run (saturation, the default)
  R.NAME.oha     or, with --rate (run.sh's RATE), oha's JSON output of the measured run
  R.NAME.before  key=value counters read just before the run (see `snapshot` in run.sh)
  R.NAME.after   the same just after, plus loadgen_cpu_s=USER+SYS (the load generator's CPU)
  R.NAME.died    present if the process died during the run
  NAME.skipped   present (with the reason) if the configuration stopped being measured

Per configuration it reports medians over rounds. The CPU ratios are computed per round (the
configuration against the baseline measured a minute apart in the same round) and then the median
of those is taken: on a noisy shared machine that is steadier than a ratio of two medians.
"""

import argparse
import csv
import datetime
import io
import json
import os
import platform
import re
import statistics
import sys

UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}
# At a fixed rate, a configuration that achieved less than this share of it was saturated.
SUSTAINED_SHARE = 0.97
# oha's error for the requests still in flight when -z ends the run: not the server's failure
# (wrk does not count its unfinished requests either).
OHA_DEADLINE_ABORT = "aborted due to deadline"


def parse_latency(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNIT_US[m.group(2)] if m else None


def empty_run():
    """The numbers every parser returns (latencies in µs); missing ones are None / 0."""
    return {"rps": None, "requests": None, "p50": None, "p99": None, "non2xx": 0, "sockerr": 0}


def parse_wrk(text):
    """Return the numbers we need from wrk's output; missing ones are None / 0."""
    r = empty_run()
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if m:
        r["requests"] = int(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        if m:
            r[key] = parse_latency(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["sockerr"] = sum(int(x) for x in m.groups())
    return r


def parse_oha(text):
    """The same numbers from oha's JSON output (--output-format json). requests is the exact
    count of responses (statusCodeDistribution), and req/s that count over the run's time:
    oha's own requestsPerSec also counts errors and the requests aborted at the deadline.
    Every status outside 2xx is a failure (wrk counts only 4xx and 5xx; the benchmark expects
    200), and every error but the deadline's aborts counts as a socket error."""
    r = empty_run()
    try:
        d = json.loads(text)
        total_s = float(d["summary"]["total"])
        codes = {str(k): int(v) for k, v in (d.get("statusCodeDistribution") or {}).items()}
        errors = {str(k): int(v) for k, v in (d.get("errorDistribution") or {}).items()}
        percentiles = d.get("latencyPercentiles") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return r
    r["requests"] = sum(codes.values())
    r["rps"] = r["requests"] / total_s if total_s > 0 else None
    for key in ("p50", "p99"):
        seconds = percentiles.get(key)
        r[key] = None if seconds is None else float(seconds) * 1_000_000
    r["non2xx"] = sum(n for code, n in codes.items() if not code.startswith("2"))
    r["sockerr"] = sum(n for error, n in errors.items() if error != OHA_DEADLINE_ABORT)
    return r


# The measured run's output file (R.NAME.<tool>) and its parser, per load generator.
PARSERS = {"wrk": parse_wrk, "oha": parse_oha}


def read_kv(path):
    values = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key:
                values[key] = value
    return values


def delta(before, after, key):
    try:
        return int(after[key]) - int(before[key])
    except (KeyError, ValueError):
        return None


def load(results, configs, rounds, clk_tck, tool):
    """data[name][round] = dict of metrics, for the runs that exist. `tool` is the load
    generator of the measured runs (a key of PARSERS)."""
    data = {}
    for name in configs:
        data[name] = {}
        for rnd in range(1, rounds + 1):
            base = os.path.join(results, f"{rnd}.{name}")
            if not os.path.exists(f"{base}.{tool}"):
                continue
            with open(f"{base}.{tool}") as f:
                r = PARSERS[tool](f.read())
            before, after = read_kv(base + ".before"), read_kv(base + ".after")
            ticks = delta(before, after, "proxy_ticks")
            r["died"] = os.path.exists(base + ".died")
            r["cpu_us"] = None if ticks is None else ticks * 1_000_000 / clk_tck
            r["cpu_per_req"] = r["cpu_us"] / r["requests"] if r["requests"] and ticks is not None else None
            r["b_conns"] = delta(before, after, "backend_conns")
            r["b_reqs"] = delta(before, after, "backend_reqs")
            # Load from other processes on each core, as a share of that core's time. The
            # backend row uses only the load CPU, so what runs on the proxy CPU then is irrelevant.
            us_per_tick = 1_000_000 / clk_tck
            r["foreign_proxy"] = None
            if name != "backend" and ticks is not None:
                r["foreign_proxy"] = share(
                    delta(before, after, "proxy_core_busy_us"),
                    ticks * us_per_tick,
                    delta(before, after, "proxy_core_wall_us"),
                )
            # wrk_cpu_s: the key's name in results kept (KEEP_TMP=1) before oha could run.
            try:
                cpu_s = after.get("loadgen_cpu_s", after.get("wrk_cpu_s"))
                loadgen_us = sum(float(x) for x in cpu_s.split("+")) * 1_000_000
            except (AttributeError, ValueError):
                loadgen_us = None
            backend_ticks = delta(before, after, "backend_ticks")
            r["foreign_load"] = None
            if loadgen_us is not None and backend_ticks is not None:
                r["foreign_load"] = share(
                    delta(before, after, "load_core_busy_us"),
                    loadgen_us + backend_ticks * us_per_tick,
                    delta(before, after, "load_core_wall_us"),
                )
            data[name][rnd] = r
    return data


def round_trip_p50(results, rounds, suffix, parse):
    """Median over rounds of a round-trip yardstick's p50 (µs), or None when it was not measured.
    `parse` turns one round's file (ROUND.SUFFIX) into µs, or None."""
    values = []
    for rnd in range(1, rounds + 1):
        path = os.path.join(results, f"{rnd}.{suffix}")
        if os.path.exists(path):
            with open(path) as f:
                values.append(parse(f.read()))
    return med(values)


def parse_redis_benchmark(text):
    """p50 in µs from `redis-benchmark --csv` (the last row), or None."""
    try:
        return float(list(csv.DictReader(io.StringIO(text)))[-1]["p50_latency_ms"]) * 1000
    except (IndexError, KeyError, ValueError):
        return None


def parse_client_round_trip(text):
    """p50 in µs from examples/redis_round_trip, or None."""
    m = re.search(r"p50_us=([\d.]+)", text)
    return float(m.group(1)) if m else None


def added_p50(data, name, base):
    """Median over rounds of (p50 of `name` - p50 of `base`), in µs."""
    diffs = [
        r["p50"] - data[base][rnd]["p50"]
        for rnd, r in data.get(name, {}).items()
        if rnd in data.get(base, {}) and r["p50"] is not None and data[base][rnd]["p50"] is not None
    ]
    return med(diffs) if diffs else None


def share(busy, own, total):
    """Percentage of a core's time that was busy with something other than `own`."""
    if busy is None or not total:
        return None
    return 100.0 * max(0.0, busy - own) / total


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(data, name, base, key="cpu_per_req"):
    """Median over rounds of `key` (default CPU/request) of `name` divided by that of `base` in
    the same round."""
    per_round = []
    for rnd, r in data[name].items():
        b = data.get(base, {}).get(rnd)
        if b and b.get(key) and r.get(key) is not None:
            per_round.append(r[key] / b[key])
    return med(per_round)


def fmt(v, spec, suffix=""):
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def check_cell(name, runs, tool, rate):
    """"ok" or the problems of a configuration's runs. `rate`: the offered req/s, or None."""
    problems = []
    if name != "backend":
        # With upstream keep-alive a proxy opens a handful of backend connections in warm-up and
        # none after; one per request means keep-alive is off and the row measures connects.
        worst = max((r["b_conns"] or 0) - 0.01 * (r["requests"] or 0) for r in runs)
        if worst > 64:
            conns = max(r["b_conns"] or 0 for r in runs)
            problems.append(f"upstream keep-alive not effective ({conns} new backend connections)")
    non2xx = sum(r["non2xx"] for r in runs)
    sockerr = sum(r["sockerr"] for r in runs)
    if non2xx:
        problems.append(f"{non2xx} non-2xx")
    if sockerr:
        problems.append(f"{sockerr} socket errors")
    if any(r["died"] for r in runs):
        problems.append("process died")
    if any(r["requests"] is None or r["rps"] is None for r in runs):
        problems.append(f"unparsable {tool} output")
    if rate:
        # Below the rate the server (or the load side) was saturated: its CPU µs/req then
        # includes what saturation adds, which this mode exists to leave out.
        short = [r["rps"] for r in runs if r["rps"] is not None and r["rps"] < SUSTAINED_SHARE * rate]
        if short:
            worst = min(short)
            problems.append(
                f"did not sustain {rate:,} req/s in {len(short)} of {len(runs)} rounds "
                f"(down to {worst:,.0f}, {100 * worst / rate:.0f}%): CPU µs/req not comparable"
            )
    return "ok" if not problems else "**FLAGGED: " + ", ".join(problems) + "**"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--configs", required=True, help="space-separated, in table order")
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--clk-tck", type=int, required=True)
    ap.add_argument("--duration", default="?")
    ap.add_argument("--connections", default="?")
    ap.add_argument("--rate", default="", help="run.sh's RATE: oha at this req/s; empty: wrk at saturation")
    ap.add_argument("--proxy-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--nginx-version", default="?")
    ap.add_argument("--git-rev", default="?")
    ap.add_argument("--nice", default="0")
    ap.add_argument("--build-note", default="")
    ap.add_argument("--keep-awake", default="0")
    ap.add_argument("--nginx-access-log", default="0")
    a = ap.parse_args()

    configs = a.configs.split()
    rate = int(a.rate) if a.rate else None
    tool = "oha" if rate else "wrk"
    data = load(a.results, configs, a.rounds, a.clk_tck, tool)
    out = []
    w = out.append

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    w(f"## Load benchmark, {now}")
    w("")
    w(
        f"{platform.node()} ({os.cpu_count()} CPUs, kernel {platform.release()}), git {a.git_rev}; "
        f"proxy pinned to CPU {a.proxy_cpu}, {tool} + backend nginx on CPU {a.load_cpu}; "
        + (
            f"fixed offered rate: oha -q{rate} -c{a.connections} -z{a.duration} --latency-correction "
            f"({rate:,} req/s in total for every row; latency counted from each request's scheduled send time)"
            if rate
            else f"wrk -t1 -c{a.connections} -d{a.duration} at saturation"
        )
        + f", {a.rounds} interleaved rounds, medians shown; nginx {a.nginx_version}"
        + (f"; nice {a.nice}" if a.nice not in ("", "0") else "")
        + (f"; binaries {a.build_note}" if a.build_note else "")
        + (
            "; both CPUs kept awake by nice-19 busy loops (KEEP_AWAKE=1: no idle exits, and the "
            "'other load' shares below include the loops)"
            if a.keep_awake == "1"
            else ""
        )
        + (
            "; the nginx proxy writes a buffered JSON access log (NGINX_ACCESS_LOG=1)"
            if a.nginx_access_log == "1"
            else "; the nginx proxy writes no access log"
        )
        + "."
    )
    w("")
    # Policy variants (auth, rate limits, ...) are judged against the plain route in the same run.
    w("| config | req/s | p50 | p99 | CPU µs/req | × bare Pingora | × nginx | × tollgate_plain | p99 × plain | check |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    skipped = {}
    for name in configs:
        reason_file = os.path.join(a.results, f"{name}.skipped")
        if os.path.exists(reason_file):
            with open(reason_file) as f:
                skipped[name] = f.read().strip()
        runs = list(data[name].values())
        if not runs:
            w(f"| {name} | – | – | – | – | – | – | – | – | skipped |")
            continue
        label = f"{name} (no proxy)" if name == "backend" else name
        w(
            "| "
            + " | ".join(
                [
                    label,
                    fmt(med(r["rps"] for r in runs), ",.0f"),
                    fmt(_ms(med(r["p50"] for r in runs)), ".2f", " ms"),
                    fmt(_ms(med(r["p99"] for r in runs)), ".2f", " ms"),
                    fmt(med(r["cpu_per_req"] for r in runs), ".1f"),
                    fmt(ratio(data, name, "bare_pingora"), ".2f", "×"),
                    fmt(ratio(data, name, "nginx"), ".2f", "×"),
                    fmt(ratio(data, name, "tollgate_plain"), ".2f", "×"),
                    fmt(ratio(data, name, "tollgate_plain", "p99"), ".2f", "×"),
                    check_cell(name, runs, tool, rate) + (" (partial: skipped later)" if name in skipped else ""),
                ]
            )
            + " |"
        )
    w("")
    w(
        "CPU µs/req = the measured process's utime+stime (all threads; nginx master + worker) during "
        f"the measured run ÷ requests {tool} completed. For `backend` it is the backend nginx itself, "
        f"which shares its CPU with {tool}. Ratios are per-round ratios, median over rounds."
        + (
            f" Every row was offered the same {rate:,} req/s, below saturation: its CPU µs/req leaves "
            "out what a saturated proxy pays, so these ratios are not interchangeable with a "
            f"saturation run's. A row that achieved less than {SUSTAINED_SHARE:.0%} of the rate is "
            "flagged: it (or the load side: see the backend row) was saturated."
            if rate
            else ""
        )
    )
    noisy = []
    for name in configs:
        for rnd, r in sorted(data[name].items()):
            # Only the proxy's CPU: on the wrk CPU the busy time no process is charged for is
            # mostly the kernel's own work for the traffic (loopback softirqs, idle exits at
            # tens of thousands of wake-ups a second: 20-25% at a cache hit's rates, while
            # `perf` on that CPU shows nothing but wrk and idle), so it flags the benchmark
            # itself, not other people's work. Its column stays in the per-round table.
            foreign = r["foreign_proxy"]
            if foreign is not None and foreign > 10:
                noisy.append(f"{name} round {rnd} (proxy CPU {foreign:.0f}%)")
    if noisy:
        w("")
        w(
            "**Noisy runs**: something other than the benchmark's own processes (other "
            "people's work, kernel threads, hypervisor steal) kept the proxy's CPU busy for more "
            "than 10% of the run during "
            + "; ".join(noisy)
            + ". Part of that may only have filled idle time, but contention lowers req/s, "
            "raises p99 and inflates CPU µs/req (fewer requests per wake-up, colder caches): "
            "treat differences of 10-15% as noise, or rerun on a quieter machine (or with NICE=-10)."
            + (
                " At a fixed rate the proxy's CPU is partly idle and other work takes that idle time, "
                "so these shares run higher than at saturation."
                if rate
                else ""
            )
        )
    rtt = round_trip_p50(a.results, a.rounds, "redis_rtt.csv", parse_redis_benchmark)
    if rtt is not None:
        w("")
        w(
            f"**Redis round trip** (the yardstick of cluster limits): p50 {rtt:.0f} µs for the "
            "limiter's script by EVALSHA, one call at a time from the proxy's CPU "
            "(redis-benchmark -c 1, after each round; median over rounds)."
        )
        client = round_trip_p50(a.results, a.rounds, "client_rtt", parse_client_round_trip)
        if client is not None:
            w(
                f"The same call through Tollgate's own client (examples/redis_round_trip, same CPU): "
                f"p50 {client:.0f} µs."
            )
        # Only unloaded latency compares with one round trip: under load p50 is mostly queueing.
        for name in configs if a.connections == "1" else []:
            added = added_p50(data, name, "tollgate_plain")
            if name != "tollgate_plain" and added is not None and "cluster" in name:
                line = f"- {name}: p50 +{added:.0f} µs over tollgate_plain = {added / rtt:.2f} round trips"
                if client is not None:
                    line += f" ({added / client:.2f} of Tollgate's client's)"
                w(line + ".")
    if skipped:
        w("")
        for name, reason in skipped.items():
            w(f"- **{name} skipped**: {reason}")

    # Every round, so the noise is visible next to the medians.
    w("")
    w("<details><summary>Per-round values</summary>")
    w("")
    w(
        "| config | round | req/s | p50 | p99 | requests | CPU µs/req | non-2xx | socket errors "
        f"| new backend conns | backend requests | other load, proxy CPU | unattributed busy, {tool} CPU |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in configs:
        for rnd, r in sorted(data[name].items()):
            w(
                f"| {name} | {rnd} | {fmt(r['rps'], ',.0f')} | {fmt(_ms(r['p50']), '.2f', ' ms')} | "
                f"{fmt(_ms(r['p99']), '.2f', ' ms')} | {fmt(r['requests'], ',d')} | "
                f"{fmt(r['cpu_per_req'], '.1f')} | {r['non2xx']} | {r['sockerr']} | "
                f"{fmt(r['b_conns'], 'd')} | {fmt(r['b_reqs'], ',d')} | {fmt(r['foreign_proxy'], '.0f', '%')} | "
                f"{fmt(r['foreign_load'], '.0f', '%')} |"
            )
    w("")
    w("</details>")
    print("\n".join(out))
    return 0


def _ms(us):
    return None if us is None else us / 1000.0


if __name__ == "__main__":
    sys.exit(main())
