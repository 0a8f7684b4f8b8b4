#!/usr/bin/env python3
"""Where a Tollgate build's instructions go, per request, against bare Pingora.

Reads callgrind dumps written by benches/load/instructions.sh (each one window of a known number
of requests) and prints markdown:

  1. A table that adds up to the total: Tollgate's own code by part (the inclusive cost per
     request of the ProxyHttp hooks and the edge guard, which do not call one another; PARTS),
     the work Pingora does because of Tollgate's settings, in both builds (timers;
     PINGORA_PARTS), and everything else.
  2. Named pieces inside Tollgate's parts (route lookup, target resolution, access log, ...).
  3. Everything else: the functions whose self cost per request differs most between the
     Tollgate dumps and the bare Pingora dumps (allocator, copies, header maps).

    instructions_profile.py --requests N --tollgate DUMP... --bare DUMP... [--top 12]

Costs are summed over the dumps given and divided by N times their number. Function names are
taken as callgrind wrote them, with recursion suffixes ('2) removed; a call from a function to
one of the same name is not counted twice.
"""

import argparse
import collections
import re

# (part, regex on the function name[, regex on callees whose cost is not the part's]). A function
# belongs to the first part that matches; the inclusive costs of the functions of one part are
# added up, minus calls between them and calls to the excluded callees. The hooks match bare
# Pingora's `Passthrough` too (its `upstream_peer`), so both builds get the row.
HOOK = r"^<[\w:]+ as pingora_proxy::proxy_trait::ProxyHttp>::"
INNER_STREAM = r"^<pingora_core::protocols::l4::stream::Stream as "
# Tokio timers, armed by Pingora's timeouts of a second or more (Tollgate sets
# fast_timeout_to_tokio_threshold_seconds = 0) and by the edge guard: counted in the timers row.
TOKIO_TIMER = (r"^(tokio::time::sleep::sleep(_until)?$|<tokio::time::sleep::Sleep as "
               r"core::future::future::Future>::poll$|tokio::time::sleep::Sleep::reset$"
               r"|core::ptr::drop_in_place<tokio::time::sleep::Sleep>$)")
PARTS = [
    ("edge guard: head scanner around the client socket (`edge::stream`, `edge::head`), "
     "without the socket reads and writes it passes on",
     r"^(<tollgate::edge::stream::GuardedStream as |tollgate::edge::stream::GuardedStream::"
     r"|core::ptr::drop_in_place<tollgate::edge::stream::GuardedStream>)",
     INNER_STREAM + "|" + TOKIO_TIMER),
    ("context: `new_ctx` (request id, in-flight gauge) and dropping it",
     HOOK + r"new_ctx$|^core::ptr::drop_in_place<tollgate::proxy::ctx::RequestCtx>$"),
    ("`early_request_filter`: request id, keep-alive, client address", HOOK + r"early_request_filter::"),
    ("`request_filter`: target resolution, routing, framing checks, policies", HOOK + r"request_filter::"),
    ("`upstream_peer`: upstream selection, peer and its timeouts", HOOK + r"upstream_peer::"),
    ("`upstream_request_filter`: forwarded headers, hop-by-hop removal, x-request-id",
     HOOK + r"upstream_request_filter::"),
    ("`upstream_response_filter` / `response_filter`: response headers",
     HOOK + r"(upstream_)?response_filter::"),
    ("`logging`: metrics and the JSON access log", HOOK + r"logging::"),
    ("other `ProxyHttp` hooks", HOOK),
]

# Functions inside the parts worth naming on their own (inclusive, per request): shown under the
# table as "of which".
DETAILS = [
    ("request target resolution (`request_target::resolve`)", r"^tollgate::request_target::resolve$"),
    ("route lookup (`RouteTable::lookup`)", r"^tollgate::route::RouteTable<T>::lookup$"),
    ("`proxy::resolve::resolve` (route + target, whole)", r"^tollgate::proxy::resolve::resolve$"),
    ("hop-by-hop header removal (`headers_to_remove`)", r"^tollgate::proxy::headers::headers_to_remove$"),
    ("metrics (`observe::metrics::*`)", r"^tollgate::observe::metrics::"),
    ("access log line (`AccessLog::write`)", r"^tollgate::observe::access_log::AccessLog::write$"),
    ("head scanner (`RequestLine::feed` and co.)", r"^tollgate::edge::head::"),
]


def parse_dump(path, inclusive_acc, self_acc):
    """Add the dump's self and inclusive costs per function name into the two counters."""
    names = {"fn": {}, "cfn": {}}
    fn_names = {}
    current = None
    pending_call = None  # callee name of the last calls= line: the next cost line is its cost
    total = 0
    calls_out = collections.defaultdict(int)
    self_cost = collections.defaultdict(int)

    def name_of(value):
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        ident, name = m.group(1), m.group(2)
        if name is not None:
            fn_names[ident] = name
        return fn_names.get(ident, "?")

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending_call is not None:
                    if clean(pending_call) != clean(current):
                        calls_out[(clean(current), clean(pending_call))] += cost
                    pending_call = None
                else:
                    self_cost[clean(current)] += cost
                continue
            key, _, value = line.partition("=")
            if key == "fn":
                current = name_of(value)
            elif key == "cfn":
                callee = name_of(value)
            elif key == "calls":
                pending_call = callee
            elif line.startswith("totals:"):
                total += int(line.split()[1])
    inclusive = collections.defaultdict(int, self_cost)
    for (caller, _callee), cost in calls_out.items():
        inclusive[caller] += cost
    for k, v in inclusive.items():
        inclusive_acc[k] += v
    for k, v in self_cost.items():
        self_acc[k] += v
    return total, calls_out


def clean(name):
    return re.sub(r"'\d+$", "", name or "?")


def load(paths):
    inc, slf = collections.Counter(), collections.Counter()
    total = 0
    calls = collections.Counter()
    for p in paths:
        t, c = parse_dump(p, inc, slf)
        total += t
        calls.update(c)
    return total, inc, slf, calls


def part_costs(inc, calls, parts):
    """Inclusive cost per part, minus calls between functions of the same part and calls to the
    part's excluded callees."""
    member = {}
    for name in inc:
        for i, part in enumerate(parts):
            if re.search(part[1], name):
                member[name] = i
                break
    out = [0] * len(parts)
    for name, i in member.items():
        out[i] += inc[name]
    for (caller, callee), cost in calls.items():
        if caller not in member:
            continue
        part = parts[member[caller]]
        if member.get(callee) == member[caller] or (len(part) > 2 and re.search(part[2], callee)):
            out[member[caller]] -= cost
    return out


# Work done inside Pingora because of what Tollgate asks of it (both builds are measured).
PINGORA_PARTS = [
    ("timers: Pingora's timeouts (upstream read/write, pool idle; `pingora_timeout`, fast or on "
     "Tokio's wheel) and the edge guard's timer: arming, polling, dropping",
     r"^(<pingora_timeout::fast_timeout::Fast(OrTokio)?Timeout as pingora_timeout::ToTimeout>::timeout"
     r"|pingora_timeout::timer::TimerManager::(register_timer|clock_thread)"
     r"|pingora_timeout::timer::TimerStub::poll::"
     r"|core::ptr::drop_in_place<pingora_timeout::timer::TimerStub::poll::"
     r"|pingora_timeout::fast_timeout::check_clock_thread"
     r"|pingora_timeout::timer::Timer::new"
     r"|core::ptr::drop_in_place<core::pin::Pin<alloc::boxed::Box<dyn core::future::future::Future"
     r"\+Output = \(\)\+core::marker::Sync\+core::marker::Send>>>$)"
     r"|" + TOKIO_TIMER[1:]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, required=True, help="requests per dump")
    ap.add_argument("--tollgate", nargs="+", required=True)
    ap.add_argument("--bare", nargs="+", required=True)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    t_total, t_inc, t_self, t_calls = load(args.tollgate)
    b_total, b_inc, b_self, b_calls = load(args.bare)
    tn = args.requests * len(args.tollgate)
    bn = args.requests * len(args.bare)
    t_req, b_req = t_total / tn, b_total / bn
    extra = t_req - b_req

    print(f"Instructions per request: Tollgate {t_req:,.0f}, bare Pingora {b_req:,.0f}, "
          f"extra {extra:,.0f} ({t_req / b_req:.3f}×).")
    print()
    print("| part (inclusive costs) | Tollgate | bare Pingora | extra | share of the extra |")
    print("|---|---:|---:|---:|---:|")
    t_acc = b_acc = 0
    for (label, *_), tc, bc in zip(PARTS, part_costs(t_inc, t_calls, PARTS), part_costs(b_inc, b_calls, PARTS)):
        if tc or bc:
            t_acc += tc / tn
            b_acc += bc / bn
            d = tc / tn - bc / bn
            print(f"| {label} | {tc / tn:,.0f} | {bc / bn:,.0f} | {d:+,.0f} | {d / extra:.0%} |")
    tp = part_costs(t_inc, t_calls, PINGORA_PARTS)
    bp = part_costs(b_inc, b_calls, PINGORA_PARTS)
    for (label, *_), tc, bc in zip(PINGORA_PARTS, tp, bp):
        t_acc += tc / tn
        b_acc += bc / bn
        d = tc / tn - bc / bn
        print(f"| {label} | {tc / tn:,.0f} | {bc / bn:,.0f} | {d:+,.0f} | {d / extra:.0%} |")
    d = (t_req - t_acc) - (b_req - b_acc)
    print(f"| everything else: Pingora, tokio, libc (self costs below) | {t_req - t_acc:,.0f} | "
          f"{b_req - b_acc:,.0f} | {d:+,.0f} | {d / extra:.0%} |")
    print(f"| **total** | **{t_req:,.0f}** | **{b_req:,.0f}** | **{extra:+,.0f}** | 100% |")
    print()
    print("Of which, in Tollgate's own code (inclusive, already counted above):")
    print()
    for label, rx in DETAILS:
        cost = sum(v for k, v in t_inc.items() if re.search(rx, k))
        if rx.endswith("::"):
            # A module: count calls between its functions once.
            cost -= sum(v for (a, b), v in t_calls.items() if re.search(rx, a) and re.search(rx, b))
        if cost:
            print(f"- {label}: {cost / tn:,.0f}")
    print()
    print("| outside Tollgate's functions: self cost, largest differences | Tollgate | bare Pingora | difference |")
    print("|---|---:|---:|---:|")
    counted = [part[1] for part in PARTS + PINGORA_PARTS]
    names = [n for n in set(t_self) | set(b_self)
             if "tollgate::" not in n and not any(re.search(rx, n) for rx in counted)]
    diffs = sorted(((t_self[n] / tn - b_self[n] / bn, n) for n in names), key=lambda x: -abs(x[0]))
    for d, n in diffs[:args.top]:
        short = n if len(n) <= 110 else n[:107] + "..."
        print(f"| `{short}` | {t_self[n] / tn:,.0f} | {b_self[n] / bn:,.0f} | {d:+,.0f} |")
    print()
    print("Self costs per function name, wherever the function was called from: callees of the parts "
          "above (the allocator, header maps, `BTreeMap::insert` under `register_timer`, prometheus "
          "under `logging`) appear here too. The two binaries inline differently, so one function's "
          "difference can be another's with the opposite sign: compare groups, not single rows.")


if __name__ == "__main__":
    main()
