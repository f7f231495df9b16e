#!/usr/bin/env python3
"""Helpers for benches/engine.sh and benches/callgrind.sh (stdlib only).

  free-ports N                 N free loopback ports, one a line
  body OUT [--stream] [--anthropic] [--hold] [--size B]
                               a ~2 KB chat request body (OpenAI Chat or
                               Anthropic Messages) written to OUT
  sse-upstream --port P        an OpenAI-style SSE upstream: headers at once,
                               the first event after --first-ms (50), then
                               --events (4) more every --gap-ms (5), finish,
                               usage and `data: [DONE]`; a request whose body
                               contains HOLD waits after its first event until
                               POST /__release (or --hold-s, 300)
  probe URL BODY [--expect S]  one request; exit 1 unless 200 and the answer
                               contains S
  ttfb URL BODY --n N          N sequential streamed requests on one
                               keep-alive connection; prints the median and
                               p10/p90 time to the first body byte (the first
                               event), in microseconds
  hold URL BODY --n N --hold-s S
                               open N streams, wait for each one's first
                               event, print "held N", keep them S seconds
                               (or until killed), then close them
  idle URL BODY --n N --hold-s S
                               open N keep-alive connections, one request on
                               each, print "open N", keep them S seconds,
                               close them, print "closed"
  seq URL BODY --n N [--expect S]
                               N sequential requests on one keep-alive
                               connection (each read to its end); exit 1
                               unless every answer is 200 and contains S
  rss PID                      VmRSS of PID in KiB
  report RESULTS [--round R]   the summary tables (one round, or median
                               [min-max] over all rounds)
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit

# ---------------------------------------------------------------- requests


def body(args):
    text = "Summarise the following notes in three bullet points. " * 4
    pad = "lorem ipsum dolor sit amet " * 200
    if args.anthropic:
        req = {"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "You are a concise assistant.", "messages": []}
    else:
        req = {"model": "gpt-4o", "max_tokens": 256, "messages": [{"role": "system", "content": "You are a concise assistant."}]}
    if args.stream:
        req["stream"] = True
    marker = "HOLD " if args.hold else ""
    req["messages"].append({"role": "user", "content": marker + text})
    req["messages"].append({"role": "assistant", "content": "Sure, paste the notes."})
    req["messages"].append({"role": "user", "content": ""})
    base = len(json.dumps(req, separators=(",", ":")))
    req["messages"][-1]["content"] = pad[: max(0, args.size - base)]
    with open(args.out, "w") as f:
        f.write(json.dumps(req, separators=(",", ":")))


def request_bytes(url, data):
    u = urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    anthropic = "/messages" in u.path
    auth = "x-api-key: sk-bench\r\nanthropic-version: 2023-06-01\r\n" if anthropic else "authorization: Bearer sk-bench\r\n"
    head = f"POST {path} HTTP/1.1\r\nhost: {u.hostname}:{u.port}\r\ncontent-type: application/json\r\n{auth}content-length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def read_response(reader, first_byte=None):
    """Read one HTTP/1.1 response; calls first_byte() when the first body
    bytes arrive. Returns (status, headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    parts = []
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            chunk = await reader.readexactly(size)
            await reader.readexactly(2)
            if first_byte and not parts:
                first_byte()
            parts.append(chunk)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            if first_byte:
                first = await reader.read(n)
                if not first:
                    raise ConnectionError("connection closed in the body")
                first_byte()
                parts.append(first)
                n -= len(first)
            parts.append(await reader.readexactly(n))
    else:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            if first_byte and not parts:
                first_byte()
            parts.append(chunk)
    return status, headers, b"".join(parts)


async def connect(url):
    u = urlsplit(url)
    return await asyncio.open_connection(u.hostname, u.port, limit=1 << 20)


def load(path):
    with open(path, "rb") as f:
        return f.read()


def probe(args):
    async def run():
        r, w = await connect(args.url)
        w.write(request_bytes(args.url, load(args.body)))
        status, headers, data = await asyncio.wait_for(read_response(r), 30)
        w.close()
        return status, headers, data

    try:
        status, headers, data = asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - a probe reports any failure
        print(f"probe {args.url}: {e!r}", file=sys.stderr)
        sys.exit(1)
    if status != 200 or args.expect.encode() not in data:
        print(f"probe {args.url}: status {status}: {data[:300]!r}", file=sys.stderr)
        sys.exit(1)


def seq(args):
    async def run():
        data = request_bytes(args.url, load(args.body))
        r, w = await connect(args.url)
        bad = 0
        for _ in range(args.n):
            w.write(data)
            status, headers, answer = await read_response(r)
            if status != 200 or args.expect.encode() not in answer:
                bad += 1
                if bad == 1:
                    print(f"seq {args.url}: status {status}: {answer[:300]!r}", file=sys.stderr)
            if headers.get("connection", "").lower() == "close":
                w.close()
                r, w = await connect(args.url)
        w.close()
        return bad

    bad = asyncio.run(run())
    if bad:
        print(f"seq {args.url}: {bad} of {args.n} answers were not 200 with {args.expect!r}", file=sys.stderr)
        sys.exit(1)


def ttfb(args):
    async def run():
        data = request_bytes(args.url, load(args.body))
        r, w = await connect(args.url)
        times = []
        for _ in range(args.n):
            mark = []
            t0 = time.perf_counter()
            w.write(data)
            status, _, answer = await read_response(r, lambda: mark.append(time.perf_counter()))
            if status != 200 or b"[DONE]" not in answer and b"message_stop" not in answer:
                raise RuntimeError(f"status {status}: {answer[:200]!r}")
            times.append((mark[0] - t0) * 1e6)
        w.close()
        return times

    times = sorted(asyncio.run(run()))
    q = statistics.quantiles(times, n=10)
    print(f"TTFB {statistics.median(times):.0f} {q[0]:.0f} {q[-1]:.0f} {len(times)}")


def hold(args):
    async def one(data, ready):
        r, w = await connect(args.url)
        w.write(data)
        await r.readuntil(b"\r\n\r\n")
        # The first body bytes are the first event (chunked or not).
        chunk = await r.read(65536)
        if not chunk:
            raise ConnectionError("closed before the first event")
        ready.append(1)
        return w

    async def run():
        data = request_bytes(args.url, load(args.body))
        ready = []
        sem = asyncio.Semaphore(200)

        async def limited():
            async with sem:
                return await one(data, ready)

        writers = await asyncio.wait_for(asyncio.gather(*[limited() for _ in range(args.n)]), args.timeout)
        print(f"held {len(ready)}", flush=True)
        await asyncio.sleep(args.hold_s)
        for w in writers:
            w.close()
        print("closed", flush=True)

    asyncio.run(run())


def idle(args):
    async def one(data):
        r, w = await connect(args.url)
        w.write(data)
        status, _, _ = await read_response(r)
        if status != 200:
            raise RuntimeError(f"status {status}")
        return w

    async def run():
        data = request_bytes(args.url, load(args.body))
        sem = asyncio.Semaphore(200)

        async def limited():
            async with sem:
                return await one(data)

        writers = await asyncio.wait_for(asyncio.gather(*[limited() for _ in range(args.n)]), args.timeout)
        print(f"open {len(writers)}", flush=True)
        await asyncio.sleep(args.hold_s)
        for w in writers:
            w.close()
        print("closed", flush=True)

    asyncio.run(run())


# ---------------------------------------------------------------- upstream


def sse_event(obj):
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def chunk(b):
    return b"%x\r\n%s\r\n" % (len(b), b)


def sse_upstream(args):
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini"}

    def delta(d, finish=None):
        return sse_event({**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]})

    first = delta({"role": "assistant", "content": "Hello"})
    more = [delta({"content": f" word{i}"}) for i in range(args.events)]
    tail = [
        delta({}, "stop"),
        sse_event({**base, "choices": [], "usage": {"prompt_tokens": 512, "completion_tokens": args.events + 1, "total_tokens": 513 + args.events}}),
        b"data: [DONE]\n\n",
    ]
    state = {"release": asyncio.Event()}

    async def handle(reader, writer):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while (await reader.readline()) not in (b"\r\n", b""):
                                pass
                            break
                        parts.append(await reader.readexactly(size))
                        await reader.readexactly(2)
                    data = b"".join(parts)
                else:
                    data = await reader.readexactly(int(headers.get("content-length", "0")))
                if path.startswith("/__release"):
                    state["release"].set()
                    state["release"] = asyncio.Event()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                    await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(args.first_ms / 1000)
                writer.write(chunk(first))
                await writer.drain()
                if b"HOLD" in data:
                    try:
                        await asyncio.wait_for(state["release"].wait(), args.hold_s)
                    except asyncio.TimeoutError:
                        pass
                for ev in more:
                    await asyncio.sleep(args.gap_ms / 1000)
                    writer.write(chunk(ev))
                writer.write(b"".join(chunk(ev) for ev in tail) + b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=4096, limit=1 << 20)
        print(f"sse upstream on 127.0.0.1:{args.port}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---------------------------------------------------------------- helpers


def free_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    for s in socks:
        print(s.getsockname()[1])
        s.close()


def rss(args):
    with open(f"/proc/{args.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                print(line.split()[1])
                return
    sys.exit(1)


# ---------------------------------------------------------------- report

TARGETS = ["direct", "nginx", "bare", "modelgate"]


def report(args):
    rows = {}  # (round, target, metric) -> float
    with open(args.results) as f:
        for line in f:
            r, target, metric, value = line.rstrip("\n").split("\t")
            rows[(int(r), target, metric)] = float(value)
    rounds = sorted({k[0] for k in rows}) if args.round is None else [args.round]
    targets = [t for t in TARGETS if any(k[1] == t for k in rows)]
    concs = sorted({int(k[2].split("@")[1]) for k in rows if k[2].startswith("rps@")})

    def val(r, t, m):
        return rows.get((r, t, m))

    def derived(r, t, m):
        """One figure of one round, raw or derived; None if not measured."""
        if m.startswith("ratio_nginx@") or m.startswith("ratio_bare@"):
            kind, c = m.split("@")
            ref = val(r, "nginx" if kind == "ratio_nginx" else "bare", "rps@" + c)
            own = val(r, t, "rps@" + c)
            return own / ref if own is not None and ref else None
        if m.startswith("added_p50@"):
            c = m.split("@")[1]
            own, ref = val(r, t, "p50@" + c), val(r, "direct", "p50@" + c)
            return own - ref if own is not None and ref is not None and t != "direct" else None
        if m == "added_ttfb":
            own, ref = val(r, t, "ttfb"), val(r, "direct", "ttfb")
            return own - ref if own is not None and ref is not None and t != "direct" else None
        return val(r, t, m)

    def cell(t, m, fmt):
        vs = [v for v in (derived(r, t, m) for r in rounds) if v is not None]
        if not vs:
            return "—"
        if len(vs) == 1:
            return fmt(vs[0])
        return f"{fmt(statistics.median(vs))} [{fmt(min(vs))}–{fmt(max(vs))}]"

    def table(title, cols):
        head = ["target"] + [c[0] for c in cols]
        body = [[t] + [cell(t, m, fmt) for _, m, fmt in cols] for t in targets]
        body = [b for b in body if any(x != "—" for x in b[1:])]
        if not body:
            return
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        print(title)
        print("  " + "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
        for b in body:
            print("  " + "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(b, widths))))

    def f0(v):
        return f"{v:.0f}"

    def f1(v):
        return f"{v:.1f}"

    def f2(v):
        return f"{v:.2f}"

    def signed(v):
        return f"{v:+.0f}"

    def mb(v):
        return f"{v / 1024:.1f}"

    what = f"round {rounds[0]}" if args.round is not None else f"median [min–max] over {len(rounds)} round(s)"
    print(f"==== {what} ====")
    for c in concs:
        table(
            f"-- JSON, c={c} (latency µs; CPU µs per request of the proxy process)",
            [
                ("rps", f"rps@{c}", f0),
                ("÷nginx", f"ratio_nginx@{c}", f2),
                ("÷bare", f"ratio_bare@{c}", f2),
                ("p50", f"p50@{c}", f0),
                ("p99", f"p99@{c}", f0),
                ("+p50", f"added_p50@{c}", signed),
                ("CPU/req", f"cpu@{c}", f1),
                ("in kernel", f"sys@{c}", f1),
                ("errors", f"errors@{c}", f0),
            ],
        )
    table(
        "-- streaming: time to the first event (µs; upstream sends it after 50 ms)",
        [("median", "ttfb", f0), ("p10", "ttfb_p10", f0), ("p90", "ttfb_p90", f0), ("+median", "added_ttfb", signed)],
    )
    table(
        "-- memory: RSS in MB",
        [
            ("idle", "rss_idle", mb),
            ("requests", "mem_requests", f0),
            ("after them", "rss_requests", mb),
            ("streams", "mem_streams", f0),
            ("streams open", "rss_streams", mb),
            ("idle conns", "mem_conns", f0),
            ("conns open", "rss_conns_open", mb),
            ("conns closed+3s", "rss_conns_closed", mb),
        ],
    )
    print()


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("free-ports")
    s.add_argument("n", type=int)
    s.set_defaults(fn=free_ports)
    s = sub.add_parser("body")
    s.add_argument("out")
    s.add_argument("--stream", action="store_true")
    s.add_argument("--anthropic", action="store_true")
    s.add_argument("--hold", action="store_true")
    s.add_argument("--size", type=int, default=2048)
    s.set_defaults(fn=body)
    s = sub.add_parser("sse-upstream")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--first-ms", type=float, default=50)
    s.add_argument("--gap-ms", type=float, default=5)
    s.add_argument("--events", type=int, default=4)
    s.add_argument("--hold-s", type=float, default=300)
    s.set_defaults(fn=sse_upstream)
    for name, fn in [("probe", probe), ("ttfb", ttfb), ("hold", hold), ("idle", idle), ("seq", seq)]:
        s = sub.add_parser(name)
        s.add_argument("url")
        s.add_argument("body")
        s.add_argument("--n", type=int, default=1)
        s.add_argument("--expect", default="")
        s.add_argument("--hold-s", type=float, default=3)
        s.add_argument("--timeout", type=float, default=120)
        s.set_defaults(fn=fn)
    s = sub.add_parser("rss")
    s.add_argument("pid")
    s.set_defaults(fn=rss)
    s = sub.add_parser("report")
    s.add_argument("results")
    s.add_argument("--round", type=int)
    s.set_defaults(fn=report)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
