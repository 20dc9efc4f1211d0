"""Rate-limit benchmark: what one admission costs, and how much of a strict server's rate the
daemon uses without a single 429, beside the official openai SDK's own retry policy.

    .venv/bin/python bench/limits.py [--admissions 100000] [--rpm 10] [--skip-rate]

Goals (issue F5): a local admission <= 20 µs; a Redis admission <= one round trip (the
baseline printed beside it is a bare PING on the same connection kind). The rate part runs
2N requests against a fake that enforces N requests per rolling minute, once through codexd
(budget N) and once straight from the openai SDK (`max_retries` at its default, 2): each takes
a little over one minute. Needs `redis-server` for the Redis line and the `openai` package for
the SDK line; each is skipped with a note when missing. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio

from codexd.limits.budget import BudgetLimits
from codexd.limits.limiter import Limiter
from codexd.limits.redis import RedisWindow, RespConnection, parse_redis_url
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI

WINDOW_S = 60.0
OPEN_LIMITS = BudgetLimits(requests_per_minute=None, tokens_per_minute=None, max_concurrency=64)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- admission cost


@asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    yield


async def local_admissions(n: int) -> None:
    limited = BudgetLimits(
        requests_per_minute=n * 10, tokens_per_minute=n * 10_000, max_concurrency=64
    )
    runs = (
        ("warm-up", OPEN_LIMITS),
        ("no caps", OPEN_LIMITS),
        ("rpm + tpm + concurrency", limited),
    )
    for label, limits in runs:
        limiter = Limiter("bench", limits)
        clients = [f"tool-{i}" for i in range(8)]
        t0 = time.perf_counter()
        for i in range(n):
            async with limiter.acquire(clients[i % 8], 500) as slot:
                slot.correct(480)
        took = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n):
            async with nothing():
                pass
        base = time.perf_counter() - t0
        if label == "warm-up":
            continue
        print(
            f"  local, {label}: {took / n * 1e6:.1f} µs per admission (acquire + correct +"
            f" release); baseline empty async with: {base / n * 1e6:.2f} µs (goal <= 20 µs)"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str | None]:
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Ready to accept connections" in line:
                break
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def redis_admissions(url: str, n: int) -> None:
    conn = await RespConnection.open(parse_redis_url(url))
    pings: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await conn.command("PING")
        pings.append(time.perf_counter() - t0)
    await conn.aclose()
    limits = BudgetLimits(
        requests_per_minute=n * 10, tokens_per_minute=n * 10_000, max_concurrency=64
    )
    window = RedisWindow(url, "bench-script")
    scripts: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await window.admit(limits, WINDOW_S + 1, 500)
        scripts.append(time.perf_counter() - t0)
    await window.aclose()
    ping_us = statistics.median(pings) * 1e6
    script_us = statistics.median(scripts) * 1e6
    print(
        f"  Redis baselines: one PING round trip median {ping_us:.0f} µs; one admission"
        f" script call (EVALSHA) median {script_us:.0f} µs"
    )
    for label, correct in (("admission", False), ("admission + usage correction", True)):
        limiter = Limiter("bench", limits, remote=RedisWindow(url, label))
        admissions: list[float] = []
        async with anyio.create_task_group() as tg:
            await tg.start(limiter.run)
            for i in range(n):
                t0 = time.perf_counter()
                async with limiter.acquire(f"tool-{i % 8}", 500) as slot:
                    if correct:
                        slot.correct(480)
                    admissions.append(time.perf_counter() - t0)
            tg.cancel_scope.cancel()
        adm_us = statistics.median(admissions) * 1e6
        print(
            f"  Redis, {label}: median {adm_us:.0f} µs, p99"
            f" {percentile(admissions, 0.99) * 1e6:.0f} µs per job"
            f" ({adm_us / script_us:.2f} script calls; goal <= 1 round trip)"
        )


# --------------------------------------------------------------------------- rate achieved


def private_env(root: str) -> dict[str, str]:
    home = os.path.join(root, "codex-home")
    os.mkdir(home, 0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(
        CODEXD_SOCKET=os.path.join(root, "run", "codexd.sock"),
        CODEXD_STATE_DIR=os.path.join(root, "state"),
        CODEX_HOME=home,
        OPENAI_API_KEY="sk-bench-key-for-the-fake-0000",
    )
    return env


def report(label: str, fake: FakeOpenAI, rpm: int, took: float, failed: int) -> None:
    log = sorted(fake.model_requests(), key=lambda r: r.time)
    ok = [r.time for r in log if r.status == 200]
    throttled = sum(1 for r in log if r.status == 429)
    gaps = [ok[i] - ok[i - rpm] for i in range(rpm, len(ok))]
    used = f"{WINDOW_S / max(gaps):.1%}" if gaps else "n/a"
    print(
        f"  {label}: {len(ok)} ok, {failed} failed, {throttled} x 429 seen by the server,"
        f" {took:.1f} s in all; rate used (60 s / longest slot reuse): {used}"
    )


def through_daemon(rpm: int, jobs: int) -> None:
    from codexctl import Client

    with FakeOpenAI.running(rpm_limit=rpm) as fake, tempfile.TemporaryDirectory() as root:
        env = private_env(root)
        with open(os.path.join(env["CODEX_HOME"], "config.toml"), "w") as f:
            f.write(
                f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n'
                f"[codexd.rate_limits.openai]\nrequests_per_minute = {rpm}\n"
            )
        with DaemonProcess(env) as proc, Client(proc.socket, timeout=None) as c:
            t0 = time.perf_counter()
            ids = {
                c.call("job/submit", {"body": {"input": f"job {i}"}})["job_id"] for i in range(jobs)
            }
            failed = 0
            while ids:
                note = c.next_notification(timeout=WINDOW_S * 3)
                if note is None:
                    raise SystemExit("jobs did not finish")
                if note.method != "job/event":
                    continue
                kind = note.params["event"]["type"]
                if kind in ("job.completed", "job.failed", "job.cancelled"):
                    ids.discard(note.params["job_id"])
                    failed += kind != "job.completed"
            took = time.perf_counter() - t0
        report(f"codexd (budget {rpm}/min)", fake, rpm, took, failed)


def through_sdk(rpm: int, jobs: int) -> None:
    try:
        import openai
    except ImportError:
        print("  openai SDK: not installed (.venv/bin/pip install openai); skipped")
        return
    with FakeOpenAI.running(rpm_limit=rpm) as fake:
        client = openai.AsyncOpenAI(api_key="sk-bench", base_url=fake.base_url)
        failures: list[str] = []

        async def one(i: int) -> None:
            try:
                await client.responses.create(model="gpt-5", input=f"job {i}")
            except openai.OpenAIError as exc:
                failures.append(type(exc).__name__)

        async def run() -> None:
            async with anyio.create_task_group() as tg:
                for i in range(jobs):
                    tg.start_soon(one, i)
            await client.close()

        t0 = time.perf_counter()
        anyio.run(run)
        took = time.perf_counter() - t0
        report(
            f"openai SDK {openai.__version__} (max_retries={client.max_retries}, no budget)",
            fake,
            rpm,
            took,
            len(failures),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admissions", type=int, default=100_000)
    parser.add_argument("--redis-admissions", type=int, default=5_000)
    parser.add_argument("--rpm", type=int, default=10)
    parser.add_argument("--skip-rate", action="store_true")
    args = parser.parse_args()
    print("admission cost per job")
    anyio.run(local_admissions, args.admissions)
    with redis_server() as url:
        if url is None:
            print("  Redis: redis-server not installed; skipped")
        else:
            anyio.run(redis_admissions, url, args.redis_admissions)
    if args.skip_rate:
        return
    jobs = 2 * args.rpm
    print(f"{jobs} requests against a server enforcing {args.rpm} requests per rolling minute")
    sys.stdout.flush()
    through_daemon(args.rpm, jobs)
    through_sdk(args.rpm, jobs)


if __name__ == "__main__":
    main()
