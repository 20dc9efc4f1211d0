"""The usage ledger: totals, durability, double counting, locks, a full disk, retention."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codexctl.protocol import ErrorKind, RpcError
from codexd.usage.ledger import (
    LEDGER_FILE,
    MIGRATIONS,
    SCHEMA_VERSION,
    Ledger,
    LedgerError,
    LedgerWriter,
    UsageReadParams,
    UsageRecord,
    local_day,
    migrate,
    parse_time_bound,
)

UTC_TZ = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0


def rec(n: int, **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "job_id": f"job-{n}",
        "finished_at": T0 + n,
        "client": "tool.py",
        "provider": "openai",
        "model": "gpt-5.1-codex-max",
        "api": "responses",
        "status": "completed",
        "attempts": 1,
        "input_tokens": 1_000,
        "cached_input_tokens": 200,
        "output_tokens": 300,
        "reasoning_tokens": 100,
        "cost_usd": 0.004,
        "estimated": False,
    }
    fields.update(overrides)
    return UsageRecord(**fields)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)
    yield led
    led.close()


# --------------------------------------------------------------------------- totals


records_strategy = st.lists(
    st.builds(
        lambda n, client, model, provider, day, tokens, cost, estimated: rec(
            n,
            client=client,
            model=model,
            provider=provider,
            finished_at=T0 + day * DAY + n,
            input_tokens=tokens[0] + tokens[1],
            cached_input_tokens=tokens[1],
            output_tokens=tokens[2] + tokens[3],
            reasoning_tokens=tokens[3],
            cost_usd=cost,
            estimated=estimated,
        ),
        st.integers(0, 10_000),
        st.sampled_from(["codexctl", "tool.py", "editor"]),
        st.sampled_from(["gpt-5.1-codex-max", "gpt-5.1", "my-model"]),
        st.sampled_from(["openai", "ollama"]),
        st.integers(0, 3),
        st.tuples(*[st.integers(0, 10**6)] * 4),
        st.floats(0, 5, allow_nan=False),
        st.booleans(),
    ),
    max_size=40,
    unique_by=lambda r: r.job_id,
)


@settings(max_examples=40, deadline=None)
@given(records_strategy)
def test_totals_and_groups_equal_the_sum_of_recorded_rows(records: list[UsageRecord]) -> None:
    with tempfile.TemporaryDirectory() as state:
        led = Ledger.in_state_dir(state, tz=UTC_TZ)
        try:
            led.insert_batch(records)
            for group_by in ([], ["model"], ["client", "day"], ["provider", "model", "client"]):
                result = led.read(group_by=group_by)  # type: ignore[arg-type]
                expected: dict[tuple[str, ...], list[UsageRecord]] = {}
                for r in records:
                    values = {"day": local_day(r.finished_at, UTC_TZ), **msgspec.structs.asdict(r)}
                    expected.setdefault(tuple(values[k] for k in group_by), []).append(r)
                assert [tuple(getattr(row, k) for k in group_by) for row in result.rows] == (
                    sorted(expected) if group_by else []
                )
                for row in result.rows:
                    members = expected[tuple(getattr(row, k) for k in group_by)]
                    assert row.requests == len(members)
                    assert row.input_tokens == sum(r.input_tokens for r in members)
                    assert row.cached_input_tokens == sum(r.cached_input_tokens for r in members)
                    assert row.output_tokens == sum(r.output_tokens for r in members)
                    assert row.reasoning_tokens == sum(r.reasoning_tokens for r in members)
                    assert row.cost_usd == pytest.approx(sum(r.cost_usd for r in members), abs=1e-9)
                    assert row.estimated == any(r.estimated for r in members)
                assert result.total.requests == len(records)
                assert result.total.input_tokens == sum(r.input_tokens for r in records)
                assert result.total.cost_usd == pytest.approx(
                    sum(r.cost_usd for r in records), abs=1e-9
                )
                assert result.total.estimated == any(r.estimated for r in records)
        finally:
            led.close()


def test_the_result_has_the_wire_shape_of_usage_read(ledger: Ledger) -> None:
    ledger.insert_batch([rec(1, estimated=True), rec(2, model="gpt-5.1", cost_usd=0.5)])
    wire = msgspec.to_builtins(ledger.read(group_by=["model"]))
    counters = {
        "requests",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_usd",
        "estimated",
    }
    assert set(wire) == {"rows", "total"}
    assert set(wire["total"]) == counters
    assert [set(row) for row in wire["rows"]] == [counters | {"model"}] * 2
    assert [(r["model"], r["estimated"]) for r in wire["rows"]] == [
        ("gpt-5.1", False),
        ("gpt-5.1-codex-max", True),
    ]
    assert wire["total"]["estimated"] is True


def test_rows_sort_by_the_keys_in_the_order_asked(ledger: Ledger) -> None:
    ledger.insert_batch(
        [
            rec(1, client="b", model="x"),
            rec(2, client="a", model="y"),
            rec(3, client="a", model="x"),
        ]
    )
    rows = ledger.read(group_by=["model", "client"]).rows
    assert [(r.model, r.client) for r in rows] == [("x", "a"), ("x", "b"), ("y", "a")]
    assert ledger.read(group_by=["client", "client"]).rows[0].client == "a"


def test_since_and_until_select_by_finish_time(ledger: Ledger) -> None:
    ledger.insert_batch([rec(n, finished_at=T0 + n * DAY, cost_usd=1.0) for n in range(5)])
    assert ledger.read(since=T0 + DAY, until=T0 + 3 * DAY).total.requests == 2
    assert ledger.read(since=T0 + 4 * DAY).total.requests == 1
    assert ledger.read(until=T0 + 1).total.requests == 1
    assert ledger.spend(T0 + DAY, T0 + 3 * DAY) == pytest.approx(2.0)
    assert ledger.spend(None, None) == pytest.approx(5.0)
    assert ledger.spend(T0 + 10 * DAY, None) == 0.0


def test_the_day_is_the_local_day(tmp_path: Path) -> None:
    led = Ledger.in_state_dir(str(tmp_path), tz=BERLIN)
    late = datetime(2026, 11, 25, 23, 30, tzinfo=UTC).timestamp()  # 00:30 on the 26th in Berlin
    led.insert_batch([rec(1, finished_at=late)])
    assert [r.day for r in led.read(group_by=["day"]).rows] == ["2026-11-26"]
    led.close()


def test_time_bounds_accept_dates_and_rfc3339() -> None:
    assert parse_time_bound("2026-11-25", member="since", end_of_day=False, tz=BERLIN) == (
        datetime(2026, 11, 25, tzinfo=BERLIN).timestamp()
    )
    assert parse_time_bound("2026-11-25", member="until", end_of_day=True, tz=BERLIN) == (
        datetime(2026, 11, 26, tzinfo=BERLIN).timestamp()
    )
    assert parse_time_bound(
        "2026-11-25T09:00:00.123Z", member="since", end_of_day=False, tz=BERLIN
    ) == pytest.approx(T0 + 0.123)
    with pytest.raises(RpcError) as info:
        parse_time_bound("last tuesday", member="since", end_of_day=False, tz=BERLIN)
    assert info.value.kind == ErrorKind.INVALID_PARAMS
    assert "$.since" in info.value.message


def test_read_params_give_the_time_range_with_until_a_whole_day() -> None:
    decode = msgspec.json.Decoder(UsageReadParams).decode
    params = decode(b'{"since":"2026-11-01","until":"2026-11-30"}')
    assert params.time_range(BERLIN) == (
        datetime(2026, 11, 1, tzinfo=BERLIN).timestamp(),
        datetime(2026, 12, 1, tzinfo=BERLIN).timestamp(),
    )
    assert decode(b"{}").time_range(BERLIN) == (None, None)
    with pytest.raises(RpcError, match=r"\$\.until"):
        decode(b'{"until":"soon"}').time_range(BERLIN)


def test_read_params_reject_unknown_group_keys_and_members() -> None:
    decode = msgspec.json.Decoder(UsageReadParams).decode
    assert decode(b'{"group_by":["day","model"]}').group_by == ["day", "model"]
    with pytest.raises(msgspec.ValidationError, match=r"group_by\[0\]"):
        decode(b'{"group_by":["week"]}')
    with pytest.raises(msgspec.ValidationError, match="by"):
        decode(b'{"by":"day"}')


# --------------------------------------------------------------------------- durability


def test_survives_reopen_and_is_private(tmp_path: Path) -> None:
    led = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)
    led.insert_batch([rec(1), rec(2)])
    path = tmp_path / LEDGER_FILE
    wal = tmp_path / f"{LEDGER_FILE}-wal"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    led.close()
    again = Ledger(str(path), tz=UTC_TZ)
    assert again.read().total.requests == 2
    again.close()


def test_a_duplicate_job_id_is_counted_once_across_batches_and_processes(
    tmp_path: Path,
) -> None:
    first = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)
    second = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)  # another daemon, same state dir
    assert first.insert_batch([rec(1), rec(1), rec(2)]) == 2
    assert second.insert_batch([rec(2), rec(3)]) == 1
    assert first.insert_batch([rec(1, cost_usd=99.0)]) == 0
    result = second.read()
    assert result.total.requests == 3
    assert result.total.cost_usd == pytest.approx(3 * 0.004)
    first.close()
    second.close()


def test_an_older_schema_is_migrated_forward(tmp_path: Path) -> None:
    path = str(tmp_path / LEDGER_FILE)
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == 0
    conn.execute(
        "INSERT INTO usage (job_id, finished_at, day, client, provider, model, api, status,"
        " attempts, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens,"
        " cost_usd, estimated) VALUES ('old', ?, '2026-11-25', 'c', 'openai', 'm', 'responses',"
        " 'completed', 1, 10, 0, 5, 0, 0.25, 0)",
        (T0,),
    )
    conn.close()
    led = Ledger(path, tz=UTC_TZ)
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    check.close()
    assert led.read().total.cost_usd == pytest.approx(0.25)
    assert led.compact("2026-11-26") == 1  # the table added by the later step exists
    assert led.read().total.cost_usd == pytest.approx(0.25)
    led.close()


def test_a_newer_schema_is_refused_with_a_way_out(tmp_path: Path) -> None:
    path = str(tmp_path / LEDGER_FILE)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LedgerError, match="upgrade codexd"):
        Ledger(path)


def test_a_file_that_is_not_a_database_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    path.write_bytes(b"not a database at all, not even close" * 200)
    with pytest.raises(LedgerError, match=str(path)):
        Ledger(str(path))


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, anyio
    from codexd.usage.ledger import Ledger, LedgerWriter, UsageRecord

    async def main() -> None:
        writer = LedgerWriter(Ledger(sys.argv[1]))
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            for n in range(int(sys.argv[2])):
                writer.record(UsageRecord(
                    job_id=f"job-{n}", finished_at=1.8e9 + n, client="c", provider="openai",
                    model="m", api="responses", status="completed", attempts=1,
                    input_tokens=10, cached_input_tokens=0, output_tokens=5,
                    reasoning_tokens=0, cost_usd=0.01, estimated=False))
            await writer.flush()
            print("flushed", flush=True)
            await anyio.sleep_forever()

    anyio.run(main)
    """
)


def test_the_last_flushed_row_survives_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = str(tmp_path / LEDGER_FILE)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, path, "25"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    led = Ledger(path)
    assert led.read().total.requests == 25
    assert led.insert_batch([rec(24, job_id="job-24")]) == 0  # the last one is there
    led.close()


# --------------------------------------------------------------------------- the writer


@pytest.mark.anyio
async def test_writer_records_flushes_and_closes(tmp_path: Path) -> None:
    led = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)
    writer = LedgerWriter(led, max_batch=7)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            for n in range(100):
                assert writer.record(rec(n, client=f"c{n % 3}", model=f"m{n % 4}"))
            writer.record(rec(5))  # a duplicate
            await writer.flush()
            assert writer.status().pending == 0
            result = await writer.read(group_by=["client"])
            assert [r.requests for r in result.rows] == [34, 33, 33]
            assert await writer.spend(None, None) == pytest.approx(100 * 0.004)
            await writer.close()
    status = writer.status()
    assert (status.written, status.duplicates, status.refused) == (100, 1, 0)
    assert not writer.record(rec(500))
    assert writer.status().refused == 1
    reopened = Ledger.in_state_dir(str(tmp_path))
    assert reopened.read().total.requests == 100
    reopened.close()


@pytest.mark.anyio
async def test_spend_is_read_once_per_window_until_a_batch_or_compaction_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`daemon/status` and every submit's budget check ask for the day's and the month's
    spend: the database is read once per window, then again only after it changed."""
    led = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)
    writer = LedgerWriter(led)
    queries: list[tuple[float | None, float | None]] = []
    query = led.spend

    def counted(since: float | None, until: float | None) -> float:
        queries.append((since, until))
        return query(since, until)

    monkeypatch.setattr(led, "spend", counted)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            assert await writer.commit(rec(1))
            assert await writer.spend(T0, T0 + DAY) == pytest.approx(0.004)
            assert await writer.spend(T0, T0 + DAY) == pytest.approx(0.004)
            assert await writer.spend(None, None) == pytest.approx(0.004)
            assert queries == [(T0, T0 + DAY), (None, None)]
            writer.record(rec(2))  # waiting rows are counted without a query
            assert await writer.spend(T0, T0 + DAY) == pytest.approx(0.008)
            assert len(queries) == 2
            await writer.flush()  # the batch landed: the next ask reads again
            assert await writer.spend(T0, T0 + DAY) == pytest.approx(0.008)
            assert len(queries) == 3
            await writer.compact_expired(T0 + 30 * DAY, 1)
            assert await writer.spend(T0, T0 + DAY) == pytest.approx(0.008)
            assert len(queries) == 4
            await writer.close()


def held_batches(led: Ledger) -> tuple[list[int], threading.Event, threading.Event]:
    """Count the batches `led` writes and hold each in its thread until `release` is set;
    `entered` is set once the first batch is being written."""
    batches: list[int] = []
    entered, release = threading.Event(), threading.Event()
    insert = led.insert_batch

    def held(batch: list[UsageRecord]) -> int:
        batches.append(len(batch))
        entered.set()
        release.wait(30)
        return insert(batch)

    led.insert_batch = held  # type: ignore[method-assign]
    return batches, entered, release


@pytest.mark.anyio
async def test_a_commit_returns_with_its_batch_and_rows_arriving_meanwhile_share_the_next(
    tmp_path: Path,
) -> None:
    led = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)
    batches, entered, release = held_batches(led)
    writer = LedgerWriter(led, max_batch=20, commit_wait_s=60)
    told: dict[int, bool] = {}

    async def finish(n: int) -> None:
        told[n] = await writer.commit(rec(n))
        # Told only once the row is there for any other reader of the file.
        reader = sqlite3.connect(led.path)
        try:
            assert reader.execute("SELECT 1 FROM usage WHERE job_id = ?", (f"job-{n}",)).fetchone()
        finally:
            reader.close()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            tg.start_soon(finish, 0)
            await anyio.to_thread.run_sync(entered.wait)  # written at once, no linger
            for n in range(1, 26):
                tg.start_soon(finish, n)
            await anyio.wait_all_tasks_blocked()
            assert told == {}  # the first batch is not committed yet: nobody is told
            assert batches == [1]
            release.set()
            await writer.wait_until(lambda s: s.written == 26)
            await writer.close()
    # The 25 that came while the first batch was written went together, max_batch at a time.
    assert batches == [1, 20, 5]
    assert told == dict.fromkeys(range(26), True)


@pytest.mark.anyio
async def test_a_commit_gives_up_waiting_after_commit_wait_s_and_the_row_still_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    led = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)
    batches, entered, release = held_batches(led)
    writer = LedgerWriter(led, commit_wait_s=0.05)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            assert await writer.commit(rec(1)) is False  # a stuck disk holds nobody for long
            assert entered.is_set()
            assert "not committed within" in caplog.text
            assert writer.status().pending == 1
            release.set()
            await writer.flush()
            await writer.close()
    assert batches == [1]
    reopened = Ledger.in_state_dir(str(tmp_path))
    assert reopened.read().total.requests == 1
    reopened.close()


@pytest.mark.anyio
async def test_a_commit_does_not_wait_on_a_writer_that_has_stopped(tmp_path: Path) -> None:
    writer = LedgerWriter(Ledger.in_state_dir(str(tmp_path)), commit_wait_s=60)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()  # as at shutdown, before close()
        assert await writer.commit(rec(1)) is False
        await writer.close()  # still written
        assert await writer.commit(rec(2)) is False  # refused once closing
    reopened = Ledger.in_state_dir(str(tmp_path))
    assert reopened.read().total.requests == 1
    reopened.close()


@pytest.mark.anyio
async def test_close_without_run_still_writes_everything(tmp_path: Path) -> None:
    writer = LedgerWriter(Ledger.in_state_dir(str(tmp_path)))
    for n in range(10):
        writer.record(rec(n))
    with anyio.fail_after(20):
        await writer.close()
    reopened = Ledger.in_state_dir(str(tmp_path))
    assert reopened.read().total.requests == 10
    reopened.close()


@pytest.mark.anyio
async def test_past_the_backlog_bound_rows_are_refused_and_counted(tmp_path: Path) -> None:
    led = Ledger.in_state_dir(str(tmp_path))
    writer = LedgerWriter(led, max_backlog=3)
    assert [writer.record(rec(n, cost_usd=1.0)) for n in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    status = writer.status()
    assert (status.pending, status.refused) == (3, 2)
    # Waiting rows already count against the budget before they are written.
    assert await writer.spend(None, None) == pytest.approx(3.0)
    with anyio.fail_after(20):
        await writer.close()
    reopened = Ledger.in_state_dir(str(tmp_path))
    assert reopened.read().total.requests == 3
    reopened.close()


@pytest.mark.anyio
async def test_a_locked_database_delays_rows_but_loses_none(tmp_path: Path) -> None:
    led = Ledger.in_state_dir(str(tmp_path), tz=UTC_TZ)
    writer = LedgerWriter(led, backoff_initial_s=0.01, backoff_max_s=0.05)
    blocker = sqlite3.connect(led.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            for n in range(20):
                writer.record(rec(n))
            status = await writer.wait_until(lambda s: s.last_error is not None)
            assert "locked" in (status.last_error or "")
            assert status.pending == 20
            assert led.read().total.requests == 0
            # A job finishing now is not held back by the lock: its row waits with the rest.
            assert await writer.commit(rec(20)) is False
            assert writer.status().pending == 21
            blocker.execute("ROLLBACK")
            await writer.flush()
            status = writer.status()
            assert (status.written, status.pending, status.last_error) == (21, 0, None)
            assert status.retries >= 1
            await writer.close()
    blocker.close()
    reopened = Ledger.in_state_dir(str(tmp_path))
    assert reopened.read().total.requests == 21
    reopened.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.anyio
async def test_a_full_disk_is_reported_and_retried_until_there_is_room(tiny_disk: Path) -> None:
    led = Ledger.in_state_dir(str(tiny_disk), tz=UTC_TZ)
    writer = LedgerWriter(led, max_batch=50, backoff_initial_s=0.01, backoff_max_s=0.05)
    bulky = "x" * 2_000
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            for n in range(200):
                writer.record(rec(n, model=f"{bulky}-{n % 5}"))
            status = await writer.wait_until(lambda s: s.last_error is not None)
            assert "full" in (status.last_error or "")
            assert status.pending > 0
            await anyio.run_process(["mount", "-o", "remount,size=16m", str(tiny_disk)])
            await writer.flush()
            assert writer.status().last_error is None
            await writer.close()
    reopened = Ledger.in_state_dir(str(tiny_disk))
    assert reopened.read().total.requests == 200
    reopened.close()


# --------------------------------------------------------------------------- retention


def test_compaction_keeps_every_total_and_drops_old_rows(ledger: Ledger) -> None:
    records = [
        rec(
            n,
            finished_at=T0 + (n % 10) * DAY + n,
            client=f"c{n % 3}",
            model=f"m{n % 2}",
            cost_usd=0.001 * n,
            estimated=n == 7,
        )
        for n in range(90)
    ]
    ledger.insert_batch(records)
    views = [
        [],
        ["day"],
        ["model", "client"],
        ["day", "provider", "model", "client"],
    ]
    bounds = [(None, None), (T0 - 9 * 3600, T0 + 5 * DAY - 9 * 3600), (T0 + 3 * DAY, None)]
    before = [ledger.read(s, u, v) for v in views for s, u in bounds]  # type: ignore[arg-type]
    spend_before = ledger.spend(T0, T0 + 4 * DAY)

    now = T0 + 400 * DAY + 5 * DAY  # days 0..4 are now past a 400-day retention
    assert ledger.compact_expired(now, retention_days=400) == 45
    assert ledger.compact_expired(now, retention_days=400) == 0  # idempotent

    after = [ledger.read(s, u, v) for v in views for s, u in bounds]  # type: ignore[arg-type]
    for old, new in zip(before, after, strict=True):
        assert _close(msgspec.to_builtins(new), msgspec.to_builtins(old)), (old, new)
    assert ledger.spend(T0, T0 + 4 * DAY) == pytest.approx(spend_before)
    raw = sqlite3.connect(ledger.path).execute("SELECT COUNT(*) FROM usage").fetchone()
    assert raw == (45,)

    # A late row for a compacted day folds into the same daily total.
    ledger.insert_batch([rec(1000, finished_at=T0 + 30, cost_usd=1.0)])
    ledger.compact_expired(now, retention_days=400)
    assert ledger.read().total.requests == 91


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a))
    return bool(a == b)
