"""Benchmark the gateway: direct to the fake vs through codexd vs through the LiteLLM proxy.

One run, one fake OpenAI (a separate process) on loopback, streamed replies of 6 deltas
through both wire APIs (Chat Completions and Responses; LiteLLM only on Chat). At 1, 16 and
64 concurrent streams (16 and 64 with a per-delta delay so the fake is not the bottleneck) it
prints time-to-first-byte and total time p50/p99 for each target, what each proxy adds over
direct, each proxy's CPU per stream and streams/s as a share of direct's, then streams/s at
saturation (no delay, 64 streams, the proxy pinned to one core), each proxy's RSS and
start-up time, and the ratios.

LiteLLM (`litellm[proxy]`) is installed into its own venv under the cache dir, never into the
project; if that fails the rest is still measured. Numbers are printed, never asserted.

    .venv/bin/python bench/gateway.py [--quick] [--no-litellm] [--api chat|responses]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from codexd.testing.daemon_process import DaemonProcess

REPLY = "one two three four five six"  # six deltas
PROXY_CPU = 0
OTHERS_CPUS = {1}
DELTA_DELAY_MS = 5.0
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "codexd-bench"
LITELLM_VENV = CACHE / "litellm-venv"
BODIES = {
    "chat": b'{"model":"gpt-5","messages":[{"role":"user","content":"hi"}],"stream":true}',
    "responses": b'{"model":"gpt-5","input":"hi","stream":true}',
}
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}
# The last bytes of a whole stream of each API (before the chunked body's terminator).
ENDS = {"chat": b"[DONE]", "responses": b"response.completed"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(pid: int, cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(pid, cpus)
    except (AttributeError, OSError):
        pass


def rss_mib(pid: int) -> float:
    """RSS of a process and its children (LiteLLM may fork a worker)."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


# ------------------------------------------------------------------ the fake


def start_fake(delta_delay_ms: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codexd.testing.fake_openai",
            "--reply",
            REPLY,
            "--delta-delay-ms",
            str(delta_delay_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    pin(proc.pid, OTHERS_CPUS)
    return proc, base_url


# ------------------------------------------------------------------ the load generator


@dataclass
class Sample:
    ttfb: float
    total: float


def request_bytes(host: str, api: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    body = BODIES[api]
    return (
        f"POST {PATHS[api]} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def cpu_s(pid: int) -> float:
    """CPU time of every thread of `pid` so far, in seconds (ns-precise schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


async def one_stream(stream: anyio.abc.ByteStream, request: bytes, end: bytes) -> Sample:
    start = time.perf_counter()
    await stream.send(request)
    buf = b""
    ttfb = 0.0
    head_end = -1
    while True:
        chunk = await stream.receive(65536)
        buf += chunk
        if head_end < 0:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            if not buf.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(buf[:300].decode(errors="replace"))
        if not ttfb and len(buf) > head_end + 4:
            ttfb = time.perf_counter() - start
        if buf.endswith(b"\r\n0\r\n\r\n"):
            if end not in buf:
                raise RuntimeError(f"stream ended without {end.decode()}")
            return Sample(ttfb, time.perf_counter() - start)


async def run_load(
    address: tuple[str, int],
    request: bytes,
    end: bytes,
    concurrency: int,
    per_worker: int,
) -> tuple[list[Sample], float]:
    samples: list[Sample] = []

    async def worker() -> None:
        stream = await anyio.connect_tcp(*address)
        stream.extra(anyio.abc.SocketAttribute.raw_socket).setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        async with stream:
            for _ in range(per_worker):
                samples.append(await one_stream(stream, request, end))

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return samples, time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@dataclass
class Target:
    name: str
    address: tuple[str, int]
    token: str | None = None
    pid: int | None = None
    startup_s: float | None = None
    apis: tuple[str, ...] = ("chat", "responses")

    def request(self, api: str) -> bytes:
        host = f"{self.address[0]}:{self.address[1]}"
        return request_bytes(host, api, self.token)


@dataclass
class Run:
    samples: list[Sample]
    elapsed: float
    cpu: float | None  # the proxy's CPU seconds during the run

    @property
    def rate(self) -> float:
        return len(self.samples) / self.elapsed


def measure(target: Target, api: str, concurrency: int, per_worker: int) -> Run:
    request, end = target.request(api), ENDS[api]

    async def go() -> Run:
        # Warm the connections and the proxy's code paths first.
        await run_load(target.address, request, end, concurrency, 2)
        before = cpu_s(target.pid) if target.pid is not None else None
        samples, elapsed = await run_load(target.address, request, end, concurrency, per_worker)
        cpu = cpu_s(target.pid) - before if target.pid is not None and before is not None else None
        return Run(samples, elapsed, cpu)

    return anyio.run(go)


def wait_http(url: str, timeout: float, headers: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as reply:
                if reply.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


# ------------------------------------------------------------------ the proxies


class Codexd:
    def __init__(self, fake_base: str, workdir: str) -> None:
        self.port = free_port()
        home = os.path.join(workdir, "codex-home")
        os.makedirs(home, mode=0o700)
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write(
                f'openai_base_url = "{fake_base}"\nmodel = "gpt-5"\nmodel_provider = "openai"\n'
                "[codexd]\nmax_queued_jobs = 10000\n"
                "[codexd.rate_limits.openai]\nmax_concurrency = 256\n"
                f'[codexd.gateway]\nenabled = true\ntcp = "127.0.0.1:{self.port}"\n'
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
        if "CODEXD_EVENT_LOOP" in os.environ:  # the loop to measure on (default: uvloop)
            env["CODEXD_EVENT_LOOP"] = os.environ["CODEXD_EVENT_LOOP"]
        env.update(
            CODEXD_SOCKET=os.path.join(workdir, "run", "codexd.sock"),
            CODEXD_STATE_DIR=os.path.join(workdir, "state"),
            CODEX_HOME=home,
            OPENAI_API_KEY="sk-bench",
        )
        env.pop("NOTIFY_SOCKET", None)
        self.daemon = DaemonProcess(env, args=["--log-level", "warning"])

    def start(self) -> Target:
        start = time.perf_counter()
        self.daemon.start()
        assert self.daemon.proc is not None
        pin(self.daemon.proc.pid, {PROXY_CPU})
        from codexctl import Client

        with Client(self.daemon.socket) as c:
            token = c.call("gateway/token", {})["token"]
        url = f"http://127.0.0.1:{self.port}/v1/models"
        wait_http(url, 20, {"Authorization": f"Bearer {token}"})
        startup = time.perf_counter() - start
        return Target(
            "codexd",
            ("127.0.0.1", self.port),
            token,
            self.daemon.proc.pid,
            startup,
        )

    def stop(self) -> None:
        self.daemon.stop()


def ensure_litellm() -> Path | None:
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"installing litellm[proxy] into {LITELLM_VENV} (separate venv) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
            check=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"LiteLLM could not be installed ({exc}); measuring the rest", flush=True)
        return None
    return binary if binary.exists() else None


class LiteLLM:
    def __init__(self, binary: Path, fake_base: str, workdir: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.config = os.path.join(workdir, "litellm.yaml")
        with open(self.config, "w") as f:
            f.write(
                "model_list:\n"
                "  - model_name: gpt-5\n"
                "    litellm_params:\n"
                "      model: openai/gpt-5\n"
                f"      api_base: {fake_base}\n"
                "      api_key: sk-bench\n"
            )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(workdir, "litellm.log")
        # LiteLLM refuses to start without one; both proxies then check a bearer token.
        self.master_key = "sk-bench-" + os.urandom(16).hex()

    def start(self) -> Target:
        env = dict(
            os.environ,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_LOG="ERROR",
            LITELLM_MASTER_KEY=self.master_key,
        )
        start = time.perf_counter()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--config",
                    self.config,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--num_workers",
                    "1",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        pin(self.proc.pid, {PROXY_CPU})
        wait_http(f"http://127.0.0.1:{self.port}/health/liveliness", 120)
        startup = time.perf_counter() - start
        return Target(
            "litellm",
            ("127.0.0.1", self.port),
            self.master_key,
            self.proc.pid,
            startup,
            apis=("chat",),
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ------------------------------------------------------------------ the run


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument(
        "--api", choices=("chat", "responses"), action="append", help="only these wire APIs"
    )
    args = parser.parse_args()
    apis: tuple[str, ...] = tuple(args.api or ("chat", "responses"))
    scale = 0.25 if args.quick else 1.0
    pin(os.getpid(), OTHERS_CPUS)
    print(f"load average at start: {load_average()}", flush=True)

    workdir = tempfile.mkdtemp(prefix="codexd-bench-gw-")
    litellm_binary = None if args.no_litellm else ensure_litellm()
    plans = [
        (1, 0.0, int(400 * scale)),
        (16, DELTA_DELAY_MS, int(25 * scale)),
        (64, DELTA_DELAY_MS, int(10 * scale)),
    ]
    runs: dict[tuple[str, str, int], Run] = {}
    saturation: dict[tuple[str, str], Run] = {}
    info: dict[str, tuple[float | None, float]] = {}

    for delay in sorted({d for _, d, _ in plans} | {0.0}):
        fake, fake_base = start_fake(delay)
        proxies: list[Codexd | LiteLLM] = [Codexd(fake_base, os.path.join(workdir, f"c{delay}"))]
        if litellm_binary is not None:
            proxies.append(LiteLLM(litellm_binary, fake_base, workdir))
        fake_port = int(fake_base.rsplit(":", 1)[1].split("/")[0])
        targets = [Target("direct", ("127.0.0.1", fake_port))]
        try:
            for proxy in proxies:
                try:
                    targets.append(proxy.start())
                except Exception as exc:  # a proxy that will not start is reported, not fatal
                    print(f"{type(proxy).__name__} did not start: {exc}", flush=True)
                    if isinstance(proxy, LiteLLM) and os.path.exists(proxy.log):
                        print(Path(proxy.log).read_text()[-1500:], flush=True)
            for api in apis:
                for target in targets:
                    if api not in target.apis:
                        continue
                    for conc, plan_delay, per_worker in plans:
                        if plan_delay == delay:
                            runs[(api, target.name, conc)] = measure(
                                target, api, conc, max(per_worker, 2)
                            )
                    if delay == 0.0:
                        saturation[(api, target.name)] = measure(
                            target, api, 64, max(int(20 * scale), 2)
                        )
                        if target.pid is not None:
                            info[target.name] = (target.startup_s, rss_mib(target.pid))
        finally:
            for proxy in proxies:
                proxy.stop()
            fake.terminate()
            fake.wait()

    for api in apis:
        report(api, plans, runs, saturation)
    print("\nproxy RSS and start-up:")
    for name in NAMES[1:]:
        if name in info:
            startup, rss = info[name]
            print(f"  {name:8} RSS {rss:7.1f} MiB   start-up {startup or 0:.2f} s")
    if "litellm" in info and "codexd" in info:
        print(f"  RSS litellm / codexd: {info['litellm'][1] / info['codexd'][1]:.1f}x")
    if litellm_binary is None:
        print("\nLiteLLM was not measured (not installed)")
    print(f"\nload average at end: {load_average()}")
    shutil.rmtree(workdir, ignore_errors=True)


NAMES = ("direct", "codexd", "litellm")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(
    api: str,
    plans: list[tuple[int, float, int]],
    runs: dict[tuple[str, str, int], Run],
    saturation: dict[tuple[str, str], Run],
) -> None:
    print(f"\n== {api}: streamed, 6 deltas; delta delay {DELTA_DELAY_MS} ms at c=16/64")
    print(
        f"{'target':8} {'c':>3} {'n':>5} {'ttfb p50':>9} {'ttfb p99':>9} {'total p50':>9} "
        f"{'total p99':>9} {'streams/s':>9} {'cpu/stream':>10}  (ms)"
    )
    for conc, _, _ in plans:
        for name in NAMES:
            run = runs.get((api, name, conc))
            if not run:
                continue
            s = run.samples
            tt, tot = [x.ttfb for x in s], [x.total for x in s]
            cpu = f"{run.cpu / len(s) * 1000:10.3f}" if run.cpu is not None else f"{'':10}"
            print(
                f"{name:8} {conc:3d} {len(s):5d} {fmt_ms(pct(tt, 0.5))}  {fmt_ms(pct(tt, 0.99))}"
                f"  {fmt_ms(pct(tot, 0.5))}  {fmt_ms(pct(tot, 0.99))} {run.rate:9.1f} {cpu}"
            )

    print(f"\n{api}: added over direct (ms): ttfb p50 / p99, total p50 / p99; streams/s share")
    added: dict[tuple[str, int], tuple[float, ...]] = {}
    for conc, _, _ in plans:
        base = runs.get((api, "direct", conc))
        if not base:
            continue
        for name in NAMES[1:]:
            run = runs.get((api, name, conc))
            if not run:
                continue
            row = tuple(
                pct([getattr(x, f) for x in run.samples], p)
                - pct([getattr(x, f) for x in base.samples], p)
                for f in ("ttfb", "total")
                for p in (0.5, 0.99)
            )
            added[(name, conc)] = row
            share = run.rate / base.rate * 100
            print(
                f"  {name:8} c={conc:<3d} "
                + " / ".join(f"{v * 1000:.2f}" for v in row)
                + f"   {share:5.1f} % of direct's streams/s"
            )
    print(f"\n{api}: streams/s at saturation (64 streams, no delay; proxy pinned to one core):")
    for name in NAMES:
        run = saturation.get((api, name))
        if run:
            cpu = f"  cpu/stream {run.cpu / len(run.samples) * 1000:.3f} ms" if run.cpu else ""
            print(f"  {name:8} {run.rate:9.1f}{cpu}")
    if ("litellm", 1) in added and ("codexd", 1) in added:
        print(f"\n{api}: ratios (litellm / codexd; higher is better for codexd):")
        for conc, _, _ in plans:
            a, b = added.get(("litellm", conc)), added.get(("codexd", conc))
            if a and b:
                print(
                    f"  c={conc:<3d} added ttfb p50 {ratio(a[0], b[0])}  p99 {ratio(a[1], b[1])}"
                    f"   added total p50 {ratio(a[2], b[2])}  p99 {ratio(a[3], b[3])}"
                )
        lite, ours = saturation.get((api, "litellm")), saturation.get((api, "codexd"))
        if lite and ours:
            print(f"  streams/s codexd / litellm: {ours.rate / lite.rate:.1f}x")


def ratio(a: float, b: float) -> str:
    if b <= 0:
        return "  n/a (codexd adds ≤ 0)"
    return f"{a / b:6.1f}x"


if __name__ == "__main__":
    main()
