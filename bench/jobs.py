"""Benchmark model streams: through codexd vs httpx straight to the same fake, same run.

Fakes run as separate processes (`python -m codexd.testing.fake_openai`), one per reply shape,
pinned with the load generator to one core; the daemon has the other core to itself.

Prints, never asserts:
- time to first delta and total time at 1, 16 and 64 concurrent streams, p50 and p99, for the
  daemon and for httpx direct, and what the daemon adds (goal: p50 ≤ 1 ms, p99 ≤ 5 ms at 64);
- delta events per second delivered to 1 and to 10 subscribers of one job, live and replayed
  (goal ≥ 20,000/s), beside the rate the fake itself streams at;
- daemon RSS per open stream (goal ≤ 100 KiB).

    .venv/bin/python bench/jobs.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import msgspec

from codexd.testing.daemon_process import DaemonProcess

DAEMON_CPU = 0
LOAD_CPU = 1  # the load generator and the fakes

DELTA = b"response.output_text.delta"
TERMINAL = (b'"job.completed"', b'"job.failed"', b'"job.cancelled"')
DROPPED = b"subscription/dropped"
PROMPT = "Tell me something short."
REPLY_WORDS = 20
# (concurrent streams, provider, streams per worker per round). The paced fakes wait between
# deltas so that the fake and the direct client, which share a core, are never saturated.
LATENCY_PLAN = [(1, "fast", 300), (16, "paced16", 10), (64, "paced64", 4)]
_encoder = msgspec.json.Encoder()


# ------------------------------------------------------------------ processes


@dataclass
class Fake:
    proc: subprocess.Popen[str]
    base_url: str

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def start_fake(*, reply: str, delta_delay_ms: float = 0, first_byte_delay_ms: float = 0) -> Fake:
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(LOAD_CPU),
            sys.executable,
            "-m",
            "codexd.testing.fake_openai",
            "--port",
            "0",
            "--reply",
            reply,
            "--delta-delay-ms",
            str(delta_delay_ms),
            "--first-byte-delay-ms",
            str(first_byte_delay_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return Fake(proc, proc.stdout.readline().strip())


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


# ------------------------------------------------------------------ one stream, two ways


def submit_line(rid: int, provider: str, **extra: object) -> bytes:
    params = {"body": {"input": PROMPT}, "provider": provider, **extra}
    return (
        _encoder.encode({"jsonrpc": "2.0", "id": rid, "method": "job/submit", "params": params})
        + b"\n"
    )


class DaemonConn:
    """One NDJSON connection; streams run one after another on it (a tool's connection)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ids = 0

    @classmethod
    async def open(cls, path: str) -> DaemonConn:
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
        return cls(reader, writer)

    async def stream(self, provider: str) -> tuple[float, float]:
        """(time to first delta, total time) of one job, in seconds."""
        self.ids += 1
        start = time.perf_counter()
        self.writer.write(submit_line(self.ids, provider))
        first = 0.0
        while True:
            line = await self.reader.readline()
            if not first and DELTA in line:
                first = time.perf_counter() - start
            if any(t in line for t in TERMINAL):
                if b'"job.completed"' not in line:
                    raise RuntimeError(f"job did not complete: {line[:300]!r}")
                return first, time.perf_counter() - start

    def close(self) -> None:
        self.writer.close()


async def direct_stream(client: httpx.AsyncClient, base_url: str) -> tuple[float, float]:
    body = {"model": "gpt-5", "input": PROMPT, "stream": True}
    start = time.perf_counter()
    first = 0.0
    async with client.stream(
        "POST",
        base_url + "/responses",
        json=body,
        headers={"Authorization": "Bearer sk-bench", "Accept": "text/event-stream"},
    ) as response:
        async for chunk in response.aiter_raw():
            if not first and DELTA in chunk:
                first = time.perf_counter() - start
    return first, time.perf_counter() - start


# ------------------------------------------------------------------ latency


@dataclass
class Samples:
    ttfd: list[float]
    total: list[float]


async def run_workers(
    concurrency: int, per_worker: int, one: Callable[[int], Awaitable[tuple[float, float]]]
) -> Samples:
    out = Samples([], [])

    async def worker(index: int) -> None:
        for _ in range(per_worker):
            first, total = await one(index)
            out.ttfd.append(first)
            out.total.append(total)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return out


async def latency(
    socket_path: str, provider: str, base_url: str, concurrency: int, per_worker: int, rounds: int
) -> tuple[Samples, Samples]:
    ours, direct = Samples([], []), Samples([], [])
    conns = [await DaemonConn.open(socket_path) for _ in range(concurrency)]
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=None) as client:
        # Warm both paths (connections, pools, first-request imports).
        await run_workers(concurrency, 1, lambda i: direct_stream(client, base_url))
        await run_workers(concurrency, 1, lambda i: conns[i].stream(provider))
        for _ in range(rounds):
            d = await run_workers(
                concurrency, per_worker, lambda i: direct_stream(client, base_url)
            )
            o = await run_workers(concurrency, per_worker, lambda i: conns[i].stream(provider))
            direct.ttfd += d.ttfd
            direct.total += d.total
            ours.ttfd += o.ttfd
            ours.total += o.total
    for c in conns:
        c.close()
    return ours, direct


# ------------------------------------------------------------------ fan-out throughput


@dataclass
class Delivery:
    deltas: int = 0
    first: float = 0.0
    last: float = 0.0
    dropped: bool = False


async def read_until_terminal(conn: DaemonConn, out: Delivery) -> None:
    buf = b""
    while True:
        chunk = await conn.reader.read(1 << 20)
        if not chunk:
            raise RuntimeError("daemon closed the connection")
        now = time.perf_counter()
        buf += chunk
        cut = buf.rfind(b"\n") + 1
        whole, buf = buf[:cut], buf[cut:]
        n = whole.count(DELTA)
        if n:
            if not out.deltas:
                out.first = now
            out.deltas += n
            out.last = now
        if DROPPED in whole:
            out.dropped = True
            return
        if any(t in whole for t in TERMINAL):
            return


async def fan_out(
    socket_path: str, provider: str, subscribers: int, replay: bool
) -> list[Delivery]:
    """One job of many deltas, read by `subscribers` connections; live, or replayed after it
    finished."""
    conns = [await DaemonConn.open(socket_path) for _ in range(subscribers)]
    submitter = conns[0]
    submitter.writer.write(submit_line(1, provider, subscribe=not replay))
    reply = msgspec.json.decode(await submitter.reader.readline())
    job_id = reply["result"]["job_id"]
    if replay:
        waiter = await DaemonConn.open(socket_path)
        waiter.writer.write(
            _encoder.encode(
                {"jsonrpc": "2.0", "id": 1, "method": "job/subscribe", "params": {"job_id": job_id}}
            )
            + b"\n"
        )
        await waiter.reader.readline()
        await read_until_terminal(waiter, Delivery())
        waiter.close()
    subscribe = [c for c in conns if replay or c is not submitter]
    for c in subscribe:
        c.writer.write(
            _encoder.encode(
                {"jsonrpc": "2.0", "id": 1, "method": "job/subscribe", "params": {"job_id": job_id}}
            )
            + b"\n"
        )
    results = [Delivery() for _ in conns]
    await asyncio.gather(*(read_until_terminal(c, r) for c, r in zip(conns, results, strict=True)))
    for c in conns:
        c.close()
    return results


async def direct_rate(base_url: str) -> float:
    """Deltas per second the fake streams to one httpx client (the ceiling for live rates)."""
    async with httpx.AsyncClient(timeout=None) as client:
        first = last = 0.0
        count = 0
        async with client.stream(
            "POST",
            base_url + "/responses",
            json={"model": "gpt-5", "input": PROMPT, "stream": True},
            headers={"Authorization": "Bearer sk-bench"},
        ) as response:
            async for chunk in response.aiter_raw():
                n = chunk.count(DELTA) // 2  # "event: <type>" and "type":"<type>"
                if n:
                    now = time.perf_counter()
                    if not count:
                        first = now
                    count += n
                    last = now
    return count / (last - first) if last > first else 0.0


def rate_of(results: list[Delivery]) -> tuple[float, float, bool]:
    """(slowest subscriber's deltas/s, all deltas delivered per second, any dropped)."""
    per = [r.deltas / (r.last - r.first) for r in results if r.last > r.first]
    span = max(r.last for r in results) - min(r.first for r in results)
    total = sum(r.deltas for r in results)
    return (
        min(per) if per else 0.0,
        total / span if span > 0 else 0.0,
        any(r.dropped for r in results),
    )


# ------------------------------------------------------------------ memory


async def rss_per_stream(socket_path: str, provider: str, pid: int, streams: int) -> float:
    per_conn = 32
    conns = [
        await DaemonConn.open(socket_path) for _ in range((streams + per_conn - 1) // per_conn)
    ]
    # Warm: one stream on this provider creates its pool and limiter.
    conns[0].writer.write(submit_line(10_000, provider, cancel_on_disconnect=True))
    await _wait_deltas(conns[0], 1)
    before = rss_kib(pid)
    counts = []
    rid = 0
    for index, conn in enumerate(conns):
        n = min(per_conn, streams - index * per_conn)
        for _ in range(n):
            rid += 1
            conn.writer.write(submit_line(rid, provider, cancel_on_disconnect=True))
        counts.append(n)
    await asyncio.gather(*(_wait_deltas(c, n) for c, n in zip(conns, counts, strict=True)))
    after = rss_kib(pid)
    for c in conns:
        c.close()
    return (after - before) / streams


async def _wait_deltas(conn: DaemonConn, jobs: int) -> None:
    """Until `jobs` distinct jobs on this connection have sent a delta."""
    seen: set[bytes] = set()
    while len(seen) < jobs:
        line = await conn.reader.readline()
        if DELTA in line:
            start = line.index(b'"job_id":"') + 10
            seen.add(line[start : line.index(b'"', start)])


# ------------------------------------------------------------------ main


def config(fakes: dict[str, Fake]) -> str:
    text = 'model = "gpt-5"\n[codexd]\nmax_connections = 4000\n'
    for name in fakes:
        text += f"[codexd.rate_limits.{name}]\nmax_concurrency = 4000\n"
    for name, fake in fakes.items():
        text += (
            f'[model_providers.{name}]\nname = "{name}"\nbase_url = "{fake.base_url}"\n'
            'env_key = "BENCH_KEY"\n'
        )
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    ap.add_argument("--rss-streams", type=int, default=500)
    ap.add_argument(
        "--only", choices=("latency", "fanout", "rss"), action="append", help="run only these parts"
    )
    ap.add_argument(
        "--streams", default="1,16,64", help="concurrency levels of the latency part (1,16,64)"
    )
    ap.add_argument("--profile", metavar="FILE", help="py-spy the daemon into FILE (collapsed)")
    args = ap.parse_args()
    rounds = 1 if args.quick else 3
    os.sched_setaffinity(0, {LOAD_CPU})

    reply = " ".join(f"word{i}" for i in range(REPLY_WORDS))
    fakes = {
        "fast": start_fake(reply=reply),
        "paced16": start_fake(reply=reply, delta_delay_ms=20),
        "paced64": start_fake(reply=reply, delta_delay_ms=50),
        "bulk": start_fake(reply="x " * 20_000, first_byte_delay_ms=200),
        "slow": start_fake(reply=reply, delta_delay_ms=1000),
    }
    tmp = tempfile.mkdtemp(prefix="codexd-bench-")
    os.chmod(tmp, 0o700)
    daemon: DaemonProcess | None = None
    try:
        home = os.path.join(tmp, "home")
        os.mkdir(home, 0o700)
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write(config(fakes))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
        env.pop("NOTIFY_SOCKET", None)
        if "CODEXD_EVENT_LOOP" in os.environ:  # the loop to measure on (default: uvloop)
            env["CODEXD_EVENT_LOOP"] = os.environ["CODEXD_EVENT_LOOP"]
        env.update(
            CODEXD_SOCKET=os.path.join(tmp, "run", "codexd.sock"),
            CODEXD_STATE_DIR=os.path.join(tmp, "state"),
            CODEX_HOME=home,
            BENCH_KEY="sk-bench-0000",
        )
        daemon = DaemonProcess(env).start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        os.sched_setaffinity(pid, {DAEMON_CPU})
        sock = daemon.socket
        parts = set(args.only or ("latency", "fanout", "rss"))
        profiler = None
        if args.profile:
            profiler = subprocess.Popen(
                [
                    os.path.join(os.path.dirname(sys.executable), "py-spy"),
                    "record",
                    "-p",
                    str(pid),
                    "-r",
                    "1000",
                    "-f",
                    "raw",
                    "-o",
                    args.profile,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)  # py-spy attaches

        if "latency" in parts:
            latency_part(args, sock, fakes, rounds)
        if "fanout" in parts:
            fanout_part(sock, fakes)
        if "rss" in parts:
            per = asyncio.run(rss_per_stream(sock, "slow", pid, args.rss_streams))
            print(f"\ndaemon RSS per open stream: {per:.1f} KiB ({args.rss_streams} slow streams)")
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait()
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.close()
        for fake in fakes.values():
            fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def latency_part(args: argparse.Namespace, sock: str, fakes: dict[str, Fake], rounds: int) -> None:
    print(f"streams of {REPLY_WORDS} deltas; times in ms; added = codexd - direct")
    print(
        f"{'':14}{'':10}{'codexd p50':>11}{'p99':>8}{'direct p50':>12}{'p99':>8}"
        f"{'added p50':>11}{'p99':>8}"
    )
    levels = {int(n) for n in args.streams.split(",")}
    for concurrency, provider, per_worker in LATENCY_PLAN:
        if concurrency not in levels:
            continue
        if args.quick:
            per_worker = max(1, per_worker // 3)
        ours, direct = asyncio.run(
            latency(sock, provider, fakes[provider].base_url, concurrency, per_worker, rounds)
        )
        for label, a, b in (
            ("first delta", ours.ttfd, direct.ttfd),
            ("total", ours.total, direct.total),
        ):
            o50, o99 = pct(a, 0.5) * 1e3, pct(a, 0.99) * 1e3
            d50, d99 = pct(b, 0.5) * 1e3, pct(b, 0.99) * 1e3
            print(
                f"{concurrency:>3} streams   {label:<10}{o50:>11.2f}{o99:>8.2f}{d50:>12.2f}"
                f"{d99:>8.2f}{o50 - d50:>11.2f}{o99 - d99:>8.2f}   (n={len(a)})"
            )


def fanout_part(sock: str, fakes: dict[str, Fake]) -> None:
    ceiling = asyncio.run(direct_rate(fakes["bulk"].base_url))
    print(f"\nfan-out of one job of 20,000 deltas (the fake streams {ceiling:,.0f} deltas/s)")
    for subscribers in (1, 10):
        for replay in (False, True):
            slowest, total, dropped = rate_of(
                asyncio.run(fan_out(sock, "bulk", subscribers, replay))
            )
            mode = "replayed" if replay else "live"
            print(
                f"{subscribers:>3} subscriber(s) {mode:<9}: {slowest:>10,.0f} deltas/s each "
                f"(slowest), {total:>10,.0f} deltas/s delivered in all"
                + ("   SUBSCRIBER DROPPED" if dropped else "")
            )


if __name__ == "__main__":
    main()
