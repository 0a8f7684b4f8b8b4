#!/usr/bin/env python3
"""Send exactly N keep-alive HTTP/1.1 GET requests over C connections, then close them.

Used by benches/load/instructions.sh, where the proxy runs under callgrind and what matters is
the number of requests, not their rate: wrk runs for a duration, so the requests counted vary
from run to run and the ones in flight when it stops are half-done. Here every request gets its
answer before the next one is sent on its connection, the total is fixed, and each answer must
be `200` with exactly the expected body (anything else is an error: exit status 1).

    fixed_load.py HOST:PORT PATH REQUESTS CONNECTIONS [--header 'Name: value'] [--body TEXT]
                  [--timeout SECONDS]

Prints one line: `requests=N errors=E seconds=S`.
"""

import argparse
import asyncio
import sys
import time


async def connection(host, port, request, count, expected_body, timeout, stats, schedule):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        for k in range(count):
            if schedule is not None:
                delay = schedule(k) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            lines = head.decode("latin-1").split("\r\n")
            status = lines[0].split(" ", 2)[1] if " " in lines[0] else ""
            length = None
            chunked = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            if length is not None:
                body = await asyncio.wait_for(reader.readexactly(length), timeout)
            elif chunked:
                body = b""
                while True:
                    size = int((await asyncio.wait_for(reader.readline(), timeout)).split(b";")[0], 16)
                    chunk = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                    if size == 0:
                        break
                    body += chunk[:-2]
            else:
                raise RuntimeError(f"answer without a length (status {status})")
            if status != "200" or (expected_body is not None and body != expected_body):
                stats["errors"] += 1
                if stats["errors"] <= 3:
                    print(f"unexpected answer: {status} {body[:80]!r}", file=sys.stderr)
            stats["requests"] += 1
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("path")
    ap.add_argument("requests", type=int)
    ap.add_argument("connections", type=int)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--body", default=None, help="expected body (default: not checked)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per read, seconds")
    ap.add_argument("--rate", type=float, default=0,
                    help="requests per second over all connections (0: as fast as answered)")
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")
    head = [f"GET {args.path} HTTP/1.1", f"Host: {args.addr}", "User-Agent: tollgate-fixed-load"]
    head += args.header
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    expected = args.body.encode() if args.body is not None else None
    # The requests split as evenly as possible over the connections.
    per = [args.requests // args.connections + (i < args.requests % args.connections)
           for i in range(args.connections)]
    stats = {"requests": 0, "errors": 0}
    t0 = time.monotonic()

    def schedule_for(c):
        # Request k of connection c is request k*C + c of the run, due at t0 + (k*C + c) / rate.
        if args.rate <= 0:
            return None
        return lambda k: t0 + (k * args.connections + c) / args.rate

    results = await asyncio.gather(
        *(connection(host, int(port), request, n, expected, args.timeout, stats, schedule_for(c))
          for c, n in enumerate(per) if n),
        return_exceptions=True)
    seconds = time.monotonic() - t0
    failed = [r for r in results if isinstance(r, BaseException)]
    for r in failed[:3]:
        print(f"connection failed: {r!r}", file=sys.stderr)
    print(f"requests={stats['requests']} errors={stats['errors'] + len(failed)} seconds={seconds:.2f}")
    return 1 if failed or stats["errors"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
