"""Benchmark the control socket: codexd vs bare NDJSON echo servers, same run.

The baselines are echo servers that decode each line and answer `{"jsonrpc", "id",
"result": {}}`: on stdlib asyncio streams, on the same code under uvloop, and on anyio's
streams. Beside them the daemon of this checkout on each event loop, and with `--base DIR`
the daemon of another checkout (a `git worktree` of main, say) on its default loop. Every
server runs at once, pinned to one core, and the round trips are taken in rounds that visit
each server in turn, so a change in the machine's load falls on all of them alike.

Prints `daemon/ping` round trips (p50/p99) on one connection and their ratio to the asyncio
echo, `daemon/status` round trips and their ratio to ping, requests/s with 1, 8 and 64
connections, the daemon's idle RSS and the extra RSS of 1000 idle connections, and the load
average at the start and end. (`bench/client_start.py` times `codexctl status`.) Numbers are
printed, never asserted.

    .venv/bin/python bench/rpc.py [--quick] [--base /tmp/perf-base]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from codexd.testing.daemon_process import DaemonProcess

PING = b'{"jsonrpc":"2.0","id":1,"method":"daemon/ping"}\n'
STATUS = b'{"jsonrpc":"2.0","id":1,"method":"daemon/status"}\n'
SERVER_CPU = "0"
CLIENT_CPU = 1


# ------------------------------------------------------------------ the baseline servers


ANYIO_ECHO = r"""
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

ASYNCIO_ECHO = r"""
import asyncio, sys, msgspec
enc = msgspec.json.Encoder(); dec = msgspec.json.Decoder()
async def handle(reader, writer):
    try:
        while True:
            msg = dec.decode(await reader.readuntil(b"\n"))
            writer.write(enc.encode({"jsonrpc": "2.0", "id": msg["id"], "result": {}}) + b"\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_unix_server(handle, sys.argv[1], limit=1 << 20, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()
if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def start_echo(path: str, code: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, sys.executable, "-c", code, path, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


# ------------------------------------------------------------------ load


def rtt(path: str, n: int, line: bytes = PING) -> list[float]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        s.sendall(line)
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


@dataclass
class Server:
    label: str
    path: str
    daemon: bool
    pid: int
    stop: Callable[[], None]
    ping: list[float] = field(default_factory=list)
    status: list[float] = field(default_factory=list)
    rps: dict[int, float] = field(default_factory=dict)


def start_daemon(tmp: str, name: str, env_extra: dict[str, str]) -> tuple[DaemonProcess, str]:
    root = os.path.join(tmp, name)
    home = os.path.join(root, "home")
    os.makedirs(home, 0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("[codexd]\nmax_connections = 2000\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    env.update(
        CODEXD_SOCKET=os.path.join(root, "run", "codexd.sock"),
        CODEXD_STATE_DIR=os.path.join(root, "state"),
        CODEX_HOME=home,
        **env_extra,
    )
    env.pop("NOTIFY_SOCKET", None)
    daemon = DaemonProcess(env)
    daemon.start()
    assert daemon.proc is not None
    os.sched_setaffinity(daemon.proc.pid, {int(SERVER_CPU)})
    return daemon, daemon.socket


def idle_connections_rss(server: Server) -> tuple[int, int]:
    """The daemon's RSS idle, and with 1000 idle connections (each served once)."""
    idle = rss_kib(server.pid)
    socks = []
    for _ in range(1000):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(server.path)
        socks.append(s)
    for s in socks:
        s.sendall(PING)
    for s in socks:
        s.recv(4096)
    loaded = rss_kib(server.pid)
    for s in socks:
        s.close()
    return idle, loaded


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    ap.add_argument(
        "--base", metavar="DIR", help="also the daemon of this checkout (e.g. a worktree of main)"
    )
    args = ap.parse_args()
    rounds, per_round, seconds = (6, 500, 0.5) if args.quick else (20, 1000, 2.0)
    os.sched_setaffinity(0, {CLIENT_CPU})

    tmp = tempfile.mkdtemp(prefix="codexd-bench-")
    os.chmod(tmp, 0o700)
    servers: list[Server] = []
    try:
        for label, code, extra in [
            ("asyncio echo", ASYNCIO_ECHO, ("asyncio",)),
            ("uvloop echo", ASYNCIO_ECHO, ("uvloop",)),
            ("anyio echo", ANYIO_ECHO, ()),
        ]:
            path = os.path.join(tmp, label.replace(" ", "-") + ".sock")
            proc = start_echo(path, code, *extra)
            servers.append(Server(label, path, False, proc.pid, proc.terminate))
        daemons: list[tuple[str, dict[str, str]]] = [
            ("codexd uvloop", {"CODEXD_EVENT_LOOP": "uvloop"}),
            ("codexd asyncio", {"CODEXD_EVENT_LOOP": "asyncio"}),
        ]
        if args.base:
            base = os.path.abspath(args.base)
            pythonpath = os.pathsep.join([base, os.path.join(base, "clients", "codexctl")])
            # PYTHONSAFEPATH: not the working directory (this checkout) before PYTHONPATH.
            daemons.append(("base codexd", {"PYTHONPATH": pythonpath, "PYTHONSAFEPATH": "1"}))
        for i, (label, extra_env) in enumerate(daemons):
            daemon, path = start_daemon(tmp, f"d{i}", extra_env)
            assert daemon.proc is not None

            def stop(d: DaemonProcess = daemon) -> None:
                d.stop()
                d.close()

            servers.append(Server(label, path, True, daemon.proc.pid, stop))

        print(f"load average at start: {load()}")
        for server in servers:
            rtt(server.path, 1000)  # warm up
        for _ in range(rounds):
            for server in servers:
                server.ping += rtt(server.path, per_round)
                if server.daemon:
                    server.status += rtt(server.path, per_round, STATUS)
        for conns in (1, 8, 64):
            for server in servers:
                server.rps[conns] = throughput(server.path, conns, seconds)
        print(f"load average at end:   {load()}")
        idle, loaded = idle_connections_rss(servers[3])
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    base_p50 = pct(servers[0].ping, 0.5)
    print(
        f"\n{'':16}{'ping p50':>10}{'p99':>8}{'vs asyncio':>11}"
        f"{'status p50':>12}{'p99':>8}{'vs ping':>8}{'req/s 1':>10}{'8':>9}{'64':>9}"
    )
    for server in servers:
        p50, p99 = pct(server.ping, 0.5) * 1e6, pct(server.ping, 0.99) * 1e6
        line = f"{server.label:16}{p50:>8.1f}µs{p99:>6.1f}µs{p50 / (base_p50 * 1e6):>10.2f}x"
        if server.daemon:
            s50, s99 = pct(server.status, 0.5) * 1e6, pct(server.status, 0.99) * 1e6
            line += f"{s50:>10.1f}µs{s99:>6.1f}µs{s50 / p50:>7.2f}x"
        else:
            line += " " * 27
        line += "".join(f"{server.rps[c]:>{w},.0f}" for c, w in ((1, 10), (8, 9), (64, 9)))
        print(line)
    print(f"\n{servers[3].label}: idle RSS {idle / 1024:.1f} MiB, ", end="")
    print(f"1000 idle connections +{(loaded - idle) / 1024:.1f} MiB")
    print(
        msgspec.json.encode(
            {
                s.label: {
                    "ping_p50_us": pct(s.ping, 0.5) * 1e6,
                    "ping_p99_us": pct(s.ping, 0.99) * 1e6,
                    **({"status_p50_us": pct(s.status, 0.5) * 1e6} if s.daemon else {}),
                    **{f"rps_{c}": v for c, v in s.rps.items()},
                }
                for s in servers
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
