#!/usr/bin/env python3
"""Turn the raw results of benches/load/instructions.sh into a markdown report.

Input: a directory with, per configuration NAME,
  NAME.win.K    key=value per counting window K: requests, errors, seconds (fixed_load.py),
                ir (total instructions of the window's callgrind dump), backend_reqs and
                backend_conns (what the backend saw during the window)
  NAME.strace   `requests=N` then the `strace -c -f` summary of N requests (optional)
  NAME.skipped  why NAME was not measured
  NAME.died     present if the proxy died during the measurement

Instructions per request of a configuration is the median over its windows; the spread column
is (max - min) / median over the windows, which shows how steady the count was.
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess

# The key=value files are the load benchmark's format (report.py, beside this script).
from report import read_kv


def load_windows(results, name, windows, dump_dir):
    out = []
    for k in range(1, windows + 1):
        path = os.path.join(results, f"{name}.win.{k}")
        if os.path.exists(path):
            kv = read_kv(path)
            try:
                w = {key: int(float(kv[key])) for key in ("requests", "errors", "ir", "backend_reqs", "backend_conns")}
            except (KeyError, ValueError):
                continue
            w["seconds"] = float(kv.get("seconds", "nan"))
            w["per_req"] = w["ir"] / w["requests"] if w["requests"] else None
            allocs = count_allocs(os.path.join(dump_dir, f"{name}.{k}.callgrind") if dump_dir else None)
            w["allocs"] = allocs / w["requests"] if allocs is not None and w["requests"] else None
            out.append(w)
    return out


ALLOC_FUNCTIONS = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}


def count_allocs(path):
    """Calls into the allocator (malloc, calloc, realloc, *memalign) recorded in a callgrind dump,
    not counting calls between those functions themselves; None if the dump is missing."""
    if not path or not os.path.exists(path):
        return None
    names, caller, callee, total = {}, None, None, 0
    with open(path) as f:
        for line in f:
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m:
                if m.group(3) is not None:
                    names[m.group(2)] = m.group(3)
                if m.group(1) == "fn":
                    caller = names.get(m.group(2))
                else:
                    callee = names.get(m.group(2))
            elif line.startswith("calls=") and callee in ALLOC_FUNCTIONS and caller not in ALLOC_FUNCTIONS:
                total += int(line[6:].split()[0])
    return total


def parse_strace(path):
    """(requests, total calls, {syscall: calls}) from NAME.strace, or None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    m = re.search(r"^requests=(\d+)", text, re.M)
    if not m:
        return None
    requests = int(m.group(1))
    calls, total = {}, None
    for line in text.splitlines():
        # % time, seconds, usecs/call, calls, [errors,] syscall
        parts = line.split()
        if len(parts) >= 5 and parts[-1] == "total" and parts[3].isdigit():
            total = int(parts[3])
        elif len(parts) >= 5 and re.fullmatch(r"[\d.]+", parts[0]) and parts[3].isdigit():
            calls[parts[-1]] = int(parts[3])
    if total is None:
        total = sum(calls.values())
    return requests, total, calls


def fmt_int(x):
    return "" if x is None else f"{x:,.0f}"


def ratio(a, b):
    return f"{a / b:.3f}×" if a and b else ""


def build_id(path):
    try:
        out = subprocess.run(["file", "-L", path], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"BuildID\[\w+\]=([0-9a-f]+)", out)
        return m.group(1)[:12] if m else None
    except (OSError, subprocess.SubprocessError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--windows", type=int, required=True)
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--rate", required=True)
    ap.add_argument("--connections", required=True)
    ap.add_argument("--warmup", required=True)
    ap.add_argument("--binaries", default="")
    ap.add_argument("--valgrind", default="")
    ap.add_argument("--git-rev", default="")
    ap.add_argument("--dump-dir", default="")
    args = ap.parse_args()
    configs = args.configs.split()

    rows = {}
    for name in configs:
        wins = load_windows(args.results, name, args.windows, args.dump_dir)
        r = {"wins": wins, "skipped": None, "flags": []}
        skipped = os.path.join(args.results, f"{name}.skipped")
        if os.path.exists(skipped):
            with open(skipped) as f:
                r["skipped"] = f.read().strip()
        if os.path.exists(os.path.join(args.results, f"{name}.died")):
            r["flags"].append("died")
        per = [w["per_req"] for w in wins if w["per_req"]]
        r["per_req"] = statistics.median(per) if per else None
        r["spread"] = (max(per) - min(per)) / r["per_req"] if len(per) > 1 else None
        r["requests"] = sum(w["requests"] for w in wins)
        allocs = [w["allocs"] for w in wins if w["allocs"] is not None]
        r["allocs"] = statistics.median(allocs) if allocs else None
        for w in wins:
            if w["errors"]:
                r["flags"].append(f"{w['errors']} errors")
            # A cache-hit variant answers from its cache, bare_pingora_answer by itself: the
            # backend must see none of the window's requests; every other one forwards each.
            expected = 0 if "cache_hit" in name or name == "bare_pingora_answer" else w["requests"]
            # A traced variant exports its spans to the same nginx (@OTLP@): those POSTs are
            # counted there too, a few per window, and are not forwarded requests.
            exports = "traced" in name and expected < w["backend_reqs"] <= expected + w["requests"] // 50
            if w["backend_reqs"] != expected and not exports:
                r["flags"].append(f"backend saw {w['backend_reqs']} of {w['requests']} requests (expected {expected})")
            if w["backend_conns"] > int(args.connections):
                r["flags"].append(f"{w['backend_conns']} new backend connections")
        st = parse_strace(os.path.join(args.results, f"{name}.strace"))
        r["strace"] = st
        r["sys_per_req"] = st[1] / st[0] if st and st[0] else None
        rows[name] = r

    bare = rows.get("bare_pingora", {}).get("per_req")
    plain = rows.get("tollgate_plain", {}).get("per_req")
    has_baseline = any(n.endswith("@baseline") for n in configs)
    has_strace = any(r["sys_per_req"] for r in rows.values())

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# Instructions per request (callgrind), {now}")
    print()
    print(f"- method: each proxy alone under `valgrind --tool=callgrind --instr-atstart=no`, one worker "
          f"thread; {args.warmup} s warm-up uninstrumented, then {args.windows} windows of "
          f"{args.requests:,} requests ({args.connections} keep-alive connections, paced at "
          f"{args.rate} req/s), instrumentation switched on around each window only; "
          f"user-space instructions (Ir, all threads) / requests, median over windows")
    print(f"- {args.valgrind}, tree {args.git_rev}")
    for item in args.binaries.split():
        label, _, path = item.partition("=")
        when = ""
        try:
            when = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        except OSError:
            pass
        bid = build_id(path)
        print(f"- {label}: `{path}` (built {when}{', build id ' + bid if bid else ''})")
    if args.dump_dir:
        print(f"- callgrind dumps: `{args.dump_dir}/NAME.K.callgrind` (`callgrind_annotate --inclusive=yes FILE`)")
    print()

    head = ["configuration", "requests", "instructions/request", "spread", "× bare_pingora", "× tollgate_plain"]
    if has_baseline:
        head.append("× NAME@baseline")
    head.append("allocations/request")
    if has_strace:
        head.append("syscalls/request")
    head.append("check")
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 2) + "---|")
    for name in configs:
        r = rows[name]
        if r["per_req"] is None:
            cells = [name, "", "", "", "", ""] + ([""] if has_baseline else []) + [""] + ([""] if has_strace else [])
            cells.append("SKIPPED: " + (r["skipped"] or "no result"))
            print("| " + " | ".join(cells) + " |")
            continue
        cells = [
            name,
            fmt_int(r["requests"]),
            fmt_int(r["per_req"]),
            f"{r['spread'] * 100:.1f}%" if r["spread"] is not None else "",
            ratio(r["per_req"], bare),
            ratio(r["per_req"], plain),
        ]
        if has_baseline:
            base = rows.get(f"{name}@baseline", {}).get("per_req") if not name.endswith("@baseline") else None
            cells.append(ratio(r["per_req"], base) if base else "")
        cells.append(f"{r['allocs']:.1f}" if r["allocs"] is not None else "")
        if has_strace:
            cells.append(f"{r['sys_per_req']:.2f}" if r["sys_per_req"] else "")
        flags = list(r["flags"])
        if r["skipped"]:
            flags.append(r["skipped"])
        cells.append("FLAGGED: " + "; ".join(flags) if flags else "ok")
        print("| " + " | ".join(cells) + " |")
    print()
    print("Spread: (max - min) / median of the windows' instructions per request. Allocations: "
          "calls to malloc, calloc, realloc and *memalign per request (median of the windows), an "
          "exact count where the instructions spent inside the allocator vary with the state of "
          "the heap. Kernel work (system calls, TCP) is not counted; `syscalls/request` is from a "
          "separate run without valgrind under `strace -c -f`.")
    print()

    print("<details><summary>Per window</summary>")
    print()
    print("| configuration | window | requests | instructions | instructions/request | allocations/request | seconds | backend requests | new backend conns |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in configs:
        for k, w in enumerate(rows[name]["wins"], 1):
            allocs = f"{w['allocs']:.2f}" if w["allocs"] is not None else ""
            print(f"| {name} | {k} | {w['requests']:,} | {w['ir']:,} | {fmt_int(w['per_req'])} | {allocs} | "
                  f"{w['seconds']:.1f} | {w['backend_reqs']:,} | {w['backend_conns']} |")
    print()
    print("</details>")
    if has_strace:
        print()
        print("<details><summary>System calls per request (strace -c -f)</summary>")
        print()
        names = sorted({s for r in rows.values() if r["strace"] for s in r["strace"][2]},
                       key=lambda s: -max((r["strace"][2].get(s, 0) / r["strace"][0])
                                          for r in rows.values() if r["strace"]))
        names = [s for s in names
                 if max(r["strace"][2].get(s, 0) / r["strace"][0] for r in rows.values() if r["strace"]) >= 0.01]
        print("| configuration | requests | " + " | ".join(f"`{s}`" for s in names) + " | total |")
        print("|---|---:|" + "---:|" * (len(names) + 1))
        for name in configs:
            st = rows[name]["strace"]
            if not st:
                continue
            n = st[0]
            print(f"| {name} | {n:,} | " + " | ".join(f"{st[2].get(s, 0) / n:.2f}" for s in names)
                  + f" | {st[1] / n:.2f} |")
        print()
        print("</details>")


if __name__ == "__main__":
    main()
