"""Benchmark the control socket: codexd vs a bare anyio NDJSON echo server, same run.

Prints `daemon/ping` round trips (p50/p99) on one connection, requests/s with 1, 8 and 64
connections, the daemon's idle RSS and the extra RSS of 1000 idle connections, and
`codexctl status` wall time against `python3 -c pass`. Numbers are printed, never asserted.

    .venv/bin/python bench/rpc.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import msgspec

from codexd.testing.daemon_process import DaemonProcess

PING = b'{"jsonrpc":"2.0","id":1,"method":"daemon/ping"}\n'
SERVER_CPU = "0"
CLIENT_CPU = 1


# ------------------------------------------------------------------ the baseline server


ECHO_SERVER = r"""
import os, sys, anyio, msgspec
from anyio.streams.buffered import BufferedByteReceiveStream
enc = msgspec.json.Encoder(); dec = msgspec.json.Decoder()
async def handle(stream):
    buf = BufferedByteReceiveStream(stream)
    async with stream:
        try:
            while True:
                msg = dec.decode(await buf.receive_until(b"\n", 1 << 20))
                reply = {"jsonrpc": "2.0", "id": msg["id"], "result": {}}
                await stream.send(enc.encode(reply) + b"\n")
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            pass
async def main():
    listener = await anyio.create_unix_listener(sys.argv[1], mode=0o600, backlog=4096)
    print("ready", flush=True)
    await listener.serve(handle)
anyio.run(main)
"""


def start_echo(path: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, sys.executable, "-c", ECHO_SERVER, path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


# ------------------------------------------------------------------ load


def rtt(path: str, n: int) -> list[float]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        s.sendall(PING)
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(65536)
        lat.append(time.perf_counter() - t)
    s.close()
    return lat


async def _conn_loop(path: str, deadline: float, counter: list[int]) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    n = 0
    while time.perf_counter() < deadline:
        writer.write(PING)
        await reader.readuntil(b"\n")
        n += 1
    counter.append(n)
    writer.close()


def throughput(path: str, connections: int, seconds: float) -> float:
    async def main() -> float:
        counter: list[int] = []
        start = time.perf_counter()
        await asyncio.gather(
            *(_conn_loop(path, start + seconds, counter) for _ in range(connections))
        )
        return sum(counter) / (time.perf_counter() - start)

    return asyncio.run(main())


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(path: str, n_rtt: int, seconds: float) -> dict[str, float]:
    rtt(path, 2000)  # warm up
    lat = rtt(path, n_rtt)
    out = {"p50_us": pct(lat, 0.5) * 1e6, "p99_us": pct(lat, 0.99) * 1e6}
    for c in (1, 8, 64):
        out[f"rps_{c}"] = throughput(path, c, seconds)
    return out


def wall(cmd: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    args = ap.parse_args()
    n_rtt, seconds = (3000, 1.0) if args.quick else (20000, 3.0)
    os.sched_setaffinity(0, {CLIENT_CPU})

    tmp = tempfile.mkdtemp(prefix="codexd-bench-")
    os.chmod(tmp, 0o700)
    try:
        echo_path = os.path.join(tmp, "echo.sock")
        echo = start_echo(echo_path)
        try:
            base = measure(echo_path, n_rtt, seconds)
        finally:
            echo.terminate()
            echo.wait()

        home = os.path.join(tmp, "home")
        os.mkdir(home, 0o700)
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write("[codexd]\nmax_connections = 2000\n")
        env = dict(os.environ)
        env.update(
            CODEXD_SOCKET=os.path.join(tmp, "run", "codexd.sock"),
            CODEXD_STATE_DIR=os.path.join(tmp, "state"),
            CODEX_HOME=home,
        )
        env.pop("NOTIFY_SOCKET", None)
        daemon = DaemonProcess(env)
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        os.sched_setaffinity(pid, {int(SERVER_CPU)})
        try:
            ours = measure(daemon.socket, n_rtt, seconds)
            idle_rss = rss_kib(pid)
            socks = []
            for _ in range(1000):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(daemon.socket)
                socks.append(s)
            # Every connection is accepted and served once it answers a ping.
            for s in socks:
                s.sendall(PING)
            for s in socks:
                s.recv(4096)
            conn_rss = rss_kib(pid)
            for s in socks:
                s.close()
            status_s = wall([sys.executable, "-m", "codexctl", "status"], env, 15)
            pass_s = wall([sys.executable, "-c", "pass"], env, 15)
        finally:
            daemon.stop()
            daemon.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'':24}{'codexd':>12}{'bare echo':>12}{'ratio':>8}")
    for key, label in [
        ("p50_us", "ping p50 (µs)"),
        ("p99_us", "ping p99 (µs)"),
        ("rps_1", "req/s, 1 conn"),
        ("rps_8", "req/s, 8 conns"),
        ("rps_64", "req/s, 64 conns"),
    ]:
        ratio = ours[key] / base[key] if key.endswith("_us") else base[key] / ours[key]
        print(f"{label:24}{ours[key]:>12.1f}{base[key]:>12.1f}{ratio:>7.2f}x")
    print(f"idle RSS: {idle_rss / 1024:.1f} MiB")
    print(f"1000 idle connections: +{(conn_rss - idle_rss) / 1024:.1f} MiB")
    print(
        f"codexctl status: {status_s * 1e3:.1f} ms vs python3 -c pass {pass_s * 1e3:.1f} ms "
        f"({status_s / pass_s:.2f}x)"
    )
    print(msgspec.json.encode({"codexd": ours, "echo": base}).decode())


if __name__ == "__main__":
    main()
