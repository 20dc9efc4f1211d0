"""Usage ledger benchmark: what recording a job costs the event loop, and `usage/read` at scale.

    .venv/bin/python bench/ledger.py [--rows 1000000] [--records 100000]

Goals (issue F6): `record()` <= 50 µs per job on the event loop; `usage/read` over 1,000,000
rows grouped by day <= 500 ms. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import anyio.lowlevel

from codexd.usage.ledger import Ledger, LedgerWriter, UsageRecord

UTC = ZoneInfo("UTC")
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def make(n: int, spacing_s: float) -> UsageRecord:
    return UsageRecord(
        job_id=f"job-{n:09d}",
        finished_at=START + n * spacing_s,
        client=("codexctl", "tool.py", "editor", "ci", "notebook")[n % 5],
        provider=("openai", "ollama")[n % 2],
        model=("gpt-5.1-codex-max", "gpt-5.1", "gpt-5.1-mini", "my-model")[n % 4],
        api="responses",
        status="completed",
        attempts=1,
        input_tokens=1_200,
        cached_input_tokens=300,
        output_tokens=400,
        reasoning_tokens=120,
        cost_usd=0.0051,
        estimated=n % 4 == 3,
    )


async def bench_record(records: int) -> None:
    rows = [make(n, 0.5) for n in range(records)]
    chunk = 1_000
    with tempfile.TemporaryDirectory() as state:
        writer = LedgerWriter(Ledger.in_state_dir(state, tz=UTC), max_backlog=records + 1)
        per_call: list[float] = []
        baseline: list[float] = []
        plain: deque[UsageRecord] = deque()
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            for i in range(0, records, chunk):
                part = rows[i : i + chunk]
                t0 = time.perf_counter()
                for row in part:
                    writer.record(row)
                t1 = time.perf_counter()
                for row in part:
                    plain.append(row)
                t2 = time.perf_counter()
                per_call.append((t1 - t0) / len(part))
                baseline.append((t2 - t1) / len(part))
                await (
                    anyio.lowlevel.checkpoint()
                )  # let the writer take a batch, as a busy daemon would
            await writer.flush()
            elapsed = time.perf_counter() - began
            await writer.close()
        status = writer.status()
    us = [x * 1e6 for x in per_call]
    base = statistics.median(baseline) * 1e6
    print(f"record(): {records} jobs, chunks of {chunk} between loop turns")
    print(
        f"  per call on the event loop: median {statistics.median(us):.2f} µs, "
        f"p99 {sorted(us)[int(len(us) * 0.99) - 1]:.2f} µs, max {max(us):.2f} µs "
        f"(goal <= 50 µs); deque.append baseline {base:.3f} µs, "
        f"ratio {statistics.median(us) / base:.1f}x"
    )
    print(
        f"  committed {status.written} rows in {elapsed:.2f} s "
        f"({status.written / elapsed:,.0f} rows/s, WAL + synchronous=FULL, batched)"
    )


def timed(label: str, fn: Callable[..., Any], *args: object, repeat: int = 3) -> None:
    times = []
    result: Any = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - t0)
    if hasattr(result, "rows"):
        shown = f"{len(result.rows)} rows, {result.total.requests:,} requests"
    else:
        shown = f"${result:,.2f}"
    best, median = min(times) * 1e3, statistics.median(times) * 1e3
    print(f"  {label}: best {best:.0f} ms, median {median:.0f} ms -> {shown}")


def bench_read(total_rows: int) -> None:
    # One job every 30 s: a million rows span about 347 days.
    spacing = 30.0
    with tempfile.TemporaryDirectory() as state:
        ledger = Ledger.in_state_dir(state, tz=UTC)
        t0 = time.perf_counter()
        batch = 20_000
        for i in range(0, total_rows, batch):
            ledger.insert_batch([make(n, spacing) for n in range(i, min(i + batch, total_rows))])
        fill = time.perf_counter() - t0
        print(f"usage/read over {total_rows:,} rows (filled in {fill:.1f} s)")
        end = START + total_rows * spacing
        timed("group_by day (goal <= 500 ms)", ledger.read, None, None, ["day"])
        timed("group_by day, last 30 days", ledger.read, end - 30 * 86_400, None, ["day"])
        timed("group_by model", ledger.read, None, None, ["model"])
        timed(
            "group_by day+model+client+provider",
            ledger.read,
            None,
            None,
            ["day", "model", "client", "provider"],
        )
        timed("total only", ledger.read, None, None, [])
        timed("spend today (budget check)", ledger.spend, end - 86_400, end)
        timed("spend this month (budget check)", ledger.spend, end - 30 * 86_400, end)
        t0 = time.perf_counter()
        folded = ledger.compact_expired(end, 200)
        print(
            f"  compaction of {folded:,} rows older than 200 days: {time.perf_counter() - t0:.2f} s"
        )
        timed("group_by day after compaction", ledger.read, None, None, ["day"])
        ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    anyio.run(bench_record, args.records)
    bench_read(args.rows)


if __name__ == "__main__":
    main()
