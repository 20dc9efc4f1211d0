"""The usage ledger: one SQLite row per finished job, shared by every tool.

`Ledger` is the blocking part (sqlite3): schema and migrations, batch inserts, the
`usage/read` aggregation, spend for the budget caps, and retention. `LedgerWriter` is the
shell the event loop talks to: `commit()` appends a finished job to a bounded in-memory
backlog and returns once the batch holding it is committed; one task writes batches through
a worker thread, one transaction per batch.

Durability: a job's row is committed before its terminal event is released to anyone (the
daemon awaits `commit()` first), so a client told that a job finished, and what it cost, finds
it in the ledger even if the daemon is killed that instant. WAL with `synchronous=FULL`: each
committed batch is fsynced, so that also holds across a power cut or kernel panic.

Batching keeps throughput without a delay: the writer commits as soon as it is woken, taking
every row waiting then; rows that arrive while a batch is being committed go together into
the next one. One job at a time pays one commit each; many jobs finishing together share one.
When the ledger cannot be written (disk full, locked by another process), `commit()` returns
without waiting, so a job's result is never held back by it; the row stays in the backlog
and is retried until it lands.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any, Final, Literal

import anyio
import msgspec

from codexctl.protocol import BudgetStatus, ErrorKind, RpcError
from codexctl.results import UsageResult, UsageRow, UsageTotals
from codexd.security.files import restore_private
from codexd.usage import budget as usage_budget
from codexd.usage.budget import CapsLike

log = logging.getLogger("codexd.usage")

LEDGER_FILE: Final = "usage.sqlite3"
DEFAULT_RETENTION_DAYS: Final = 400
DEFAULT_MAX_BACKLOG: Final = 100_000
DEFAULT_MAX_BATCH: Final = 1_000
READ_FLUSH_TIMEOUT_S: Final = 2.0
# The longest a finished job's terminal event waits for its row's commit. A commit is a few
# milliseconds; past this the disk is in trouble and the job's result goes out anyway (the
# row stays in the backlog, as when a write fails).
COMMIT_WAIT_S: Final = 2.0

GroupKey = Literal["model", "client", "provider", "day"]
Status = Literal["completed", "failed", "cancelled"]
GROUP_KEYS: Final[tuple[GroupKey, ...]] = ("day", "model", "client", "provider")

# Forward migrations: step i takes the schema from user_version i to i + 1. Never edit a step
# that has shipped; append a new one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL UNIQUE,
            finished_at REAL NOT NULL,
            day TEXT NOT NULL,
            client TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            api TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            cached_input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            estimated INTEGER NOT NULL
        )
        """,
        # Covering, in the order `read` groups by: a million rows aggregate by a scan of this
        # index alone, already sorted, with no temporary B-tree and no table lookups.
        """
        CREATE INDEX usage_by_day ON usage (
            day, model, client, provider, finished_at, input_tokens, cached_input_tokens,
            output_tokens, reasoning_tokens, cost_usd, estimated
        )
        """,
    ),
    (
        """
        CREATE TABLE usage_daily (
            day TEXT NOT NULL,
            model TEXT NOT NULL,
            client TEXT NOT NULL,
            provider TEXT NOT NULL,
            first_at REAL NOT NULL,
            requests INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            cached_input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            estimated INTEGER NOT NULL,
            PRIMARY KEY (day, model, client, provider)
        ) WITHOUT ROWID
        """,
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

_INSERT: Final = """
    INSERT OR IGNORE INTO usage (
        job_id, finished_at, day, client, provider, model, api, status, attempts, input_tokens,
        cached_input_tokens, output_tokens, reasoning_tokens, cost_usd, estimated
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_COUNTERS: Final = """
    SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens), SUM(reasoning_tokens),
    SUM(cost_usd), MAX(estimated)
"""
# Rows past retention, folded into one row per (day, model, client, provider). The upsert
# makes compaction safe to repeat and to run over a day that was partly compacted before.
_COMPACT: Final = f"""
    INSERT INTO usage_daily (
        day, model, client, provider, first_at, requests, input_tokens, cached_input_tokens,
        output_tokens, reasoning_tokens, cost_usd, estimated
    )
    SELECT day, model, client, provider, MIN(finished_at), COUNT(*), {_COUNTERS}
    FROM usage WHERE day < ? GROUP BY day, model, client, provider
    ON CONFLICT (day, model, client, provider) DO UPDATE SET
        first_at = MIN(first_at, excluded.first_at),
        requests = requests + excluded.requests,
        input_tokens = input_tokens + excluded.input_tokens,
        cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_usd = cost_usd + excluded.cost_usd,
        estimated = MAX(estimated, excluded.estimated)
"""


class LedgerError(Exception):
    """The ledger cannot be opened (a newer schema, not a database): a start-up failure."""


# --------------------------------------------------------------------------- values


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One finished job, as the ledger keeps it. `finished_at` is UTC epoch seconds."""

    job_id: str
    finished_at: float
    client: str
    provider: str
    model: str
    api: str
    status: Status
    attempts: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float
    estimated: bool


def add_counts(
    totals: UsageTotals,
    requests: int,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    reasoning_tokens: int,
    cost: float,
    estimated: int,
) -> None:
    """Adds one aggregated ledger record's counters (as `_groups` yields them) to `totals`."""
    totals.requests += requests
    totals.input_tokens += input_tokens
    totals.cached_input_tokens += cached_input_tokens
    totals.output_tokens += output_tokens
    totals.reasoning_tokens += reasoning_tokens
    totals.cost_usd += cost
    totals.estimated = totals.estimated or bool(estimated)


class UsageReadParams(msgspec.Struct, forbid_unknown_fields=True):
    """`usage/read` params: `since`/`until` are RFC 3339 times or local dates (YYYY-MM-DD)."""

    since: str | None = None
    until: str | None = None
    group_by: list[GroupKey] = msgspec.field(default_factory=list)

    def time_range(self, tz: tzinfo | None) -> tuple[float | None, float | None]:
        """(since, until) as epoch seconds for `Ledger.read`; raises RpcError(invalid_params)."""
        since = until = None
        if self.since is not None:
            since = parse_time_bound(self.since, member="since", end_of_day=False, tz=tz)
        if self.until is not None:
            until = parse_time_bound(self.until, member="until", end_of_day=True, tz=tz)
        return since, until


def parse_time_bound(value: str, *, member: str, end_of_day: bool, tz: tzinfo | None) -> float:
    """An RFC 3339 time, or a local date: `since` a date is its first instant, `until` a date
    is the end of it (so `--since 2026-11-01 --until 2026-11-30` is all of November)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").date()
            if end_of_day:
                day += timedelta(days=1)
            if tz is None:
                return datetime(day.year, day.month, day.day).timestamp()
            return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RpcError(
            ErrorKind.INVALID_PARAMS,
            f"{member} {value!r} is neither a date (2026-11-25) nor an RFC 3339 time "
            f"(2026-11-25T09:00:00Z) - at `$.{member}`",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz) if tz is not None else moment.astimezone()
    return moment.timestamp()


def local_day(epoch: float, tz: tzinfo | None) -> str:
    """The daemon's local day of a UTC epoch time, as YYYY-MM-DD."""
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------- the database


def _connect(path: str, *, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def migrate(conn: sqlite3.Connection, steps: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Bring the schema to `len(steps)`, one transaction per step; returns the old version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(steps):
        raise LedgerError(
            f"the usage ledger has schema version {version}, newer than this codexd knows "
            f"({len(steps)}): upgrade codexd, or move the file away to start a new ledger"
        )
    for number in range(version, len(steps)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in steps[number]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(version)


class Ledger:
    """The SQLite file: blocking calls, meant for worker threads (see `LedgerWriter`).

    Writes go through one connection that only one thread uses at a time; every query opens
    its own short-lived connection, so reads run beside writes (WAL) and beside each other.
    """

    def __init__(self, path: str, *, tz: tzinfo | None = None, busy_timeout_ms: int = 250) -> None:
        self.path = path
        self.tz = tz
        self._busy_timeout_ms = busy_timeout_ms
        self._reopen_lock = threading.Lock()
        self._open()

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _reopen_if_gone(self) -> None:
        """The file (or the state dir) was deleted or replaced while we ran: rows written now
        would go to a file nobody can open again. Start a new ledger where it belongs, and
        say so: the usage recorded before is gone with the old file."""
        with self._reopen_lock:
            if self._identity() == self._ident:
                return
            log.error(
                "usage ledger %s was deleted or replaced while codexd ran: starting a new one "
                "there (usage recorded before is gone unless the old file was kept)",
                self.path,
            )
            self._conn.close()
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            self._open()

    def _open(self) -> None:
        path = self.path
        # Created 0600 before SQLite sees it; SQLite gives -wal and -shm the same mode.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            restore_private(fd, path, "usage ledger")
            st = os.fstat(fd)
            self._ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
        finally:
            os.close(fd)
        try:
            self._conn = _connect(path, busy_timeout_ms=self._busy_timeout_ms)
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise LedgerError(f"cannot switch {path} to WAL mode (got {mode})")
            migrate(self._conn)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"cannot open the usage ledger {path}: {exc}; if the file is damaged, "
                "move it away and codexd starts a new one"
            ) from None

    @classmethod
    def in_state_dir(cls, state_dir: str, *, tz: tzinfo | None = None) -> Ledger:
        return cls(os.path.join(state_dir, LEDGER_FILE), tz=tz)

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------ writes

    def insert_batch(self, records: Sequence[UsageRecord]) -> int:
        """Insert in one transaction; returns how many were new (a known job_id is ignored).

        Raises sqlite3.Error (busy, disk full, ...) with nothing written.
        """
        rows = [
            (
                r.job_id,
                r.finished_at,
                local_day(r.finished_at, self.tz),
                r.client,
                r.provider,
                r.model,
                r.api,
                r.status,
                r.attempts,
                r.input_tokens,
                r.cached_input_tokens,
                r.output_tokens,
                r.reasoning_tokens,
                r.cost_usd,
                int(r.estimated),
            )
            for r in records
        ]
        self._reopen_if_gone()
        conn = self._conn
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn.total_changes - before

    def compact(self, before_day: str) -> int:
        """Fold rows of local days before `before_day` into daily totals; returns rows folded."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_COMPACT, (before_day,))
            folded = conn.execute("DELETE FROM usage WHERE day < ?", (before_day,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int(folded)

    def compact_expired(self, now: float, retention_days: int = DEFAULT_RETENTION_DAYS) -> int:
        """Retention (`usage_retention_days`): whole local days older than the window."""
        return self.compact(local_day(now - retention_days * 86_400, self.tz))

    # ------------------------------------------------------------------ queries

    def _reader(self) -> sqlite3.Connection:
        if self._identity() != self._ident:
            self._reopen_if_gone()
        return _connect(self.path, busy_timeout_ms=5_000)

    def _where(
        self, since: float | None, until: float | None, time_column: str
    ) -> tuple[str, list[Any]]:
        # The day range (widened: a tz change may shift a stored day) lets the covering index
        # seek; the time comparison is what decides.
        clauses: list[str] = []
        args: list[Any] = []
        if since is not None:
            clauses.append(f"day >= ? AND {time_column} >= ?")
            args += [local_day(since - 2 * 86_400, self.tz), since]
        if until is not None:
            clauses.append(f"day <= ? AND {time_column} < ?")
            args += [local_day(until + 2 * 86_400, self.tz), until]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _groups(self, since: float | None, until: float | None) -> Iterable[tuple[Any, ...]]:
        """(day, model, client, provider, requests, counters...) from both tables.

        A compacted day counts inside [since, until) when its first job does.
        """
        raw_where, raw_args = self._where(since, until, "finished_at")
        daily_where, daily_args = self._where(since, until, "first_at")
        sql = (
            f"SELECT day, model, client, provider, COUNT(*), {_COUNTERS} FROM usage{raw_where}"
            " GROUP BY day, model, client, provider"
            " UNION ALL"
            " SELECT day, model, client, provider, requests, input_tokens, cached_input_tokens,"
            " output_tokens, reasoning_tokens, cost_usd, estimated"
            f" FROM usage_daily{daily_where}"
        )
        conn = self._reader()
        try:
            return conn.execute(sql, raw_args + daily_args).fetchall()
        finally:
            conn.close()

    def read(
        self,
        since: float | None = None,
        until: float | None = None,
        group_by: Sequence[GroupKey] = (),
    ) -> UsageResult:
        """`usage/read`: rows per distinct value of the `group_by` keys, sorted by those keys,
        and the total. Times are UTC epoch seconds; `since` inclusive, `until` exclusive."""
        keys: list[GroupKey] = list(dict.fromkeys(group_by))
        positions = [GROUP_KEYS.index(key) for key in keys]
        total = UsageTotals()
        groups: dict[tuple[str, ...], UsageRow] = {}
        for record in self._groups(since, until):
            counters = record[4:]
            add_counts(total, *counters)
            if not keys:
                continue
            group = tuple(record[i] for i in positions)
            row = groups.get(group)
            if row is None:
                row = groups[group] = UsageRow()
                for key, value in zip(keys, group, strict=True):
                    setattr(row, key, value)
            add_counts(row, *counters)
        rows = [groups[group] for group in sorted(groups)]
        for counted in (*rows, total):
            # Sums of binary floats grow tails like 14.688000000000514; nano-dollars are plenty.
            counted.cost_usd = round(counted.cost_usd, 9)
        return UsageResult(rows=rows, total=total)

    def spend(self, since: float | None, until: float | None) -> float:
        """USD recorded in [since, until): what the budget caps are checked against."""
        raw_where, raw_args = self._where(since, until, "finished_at")
        daily_where, daily_args = self._where(since, until, "first_at")
        sql = (
            f"SELECT (SELECT TOTAL(cost_usd) FROM usage{raw_where})"
            f" + (SELECT TOTAL(cost_usd) FROM usage_daily{daily_where})"
        )
        conn = self._reader()
        try:
            (spent,) = conn.execute(sql, raw_args + daily_args).fetchone()
        finally:
            conn.close()
        return float(spent)


# --------------------------------------------------------------------------- the writer


# Windows whose committed spend the writer keeps (today, this month, and a few a client asked).
MAX_CACHED_SPEND_WINDOWS = 8


class WriterStatus(msgspec.Struct):
    """For `daemon/status` and the log: a non-null `last_error` means rows are waiting."""

    pending: int
    written: int
    duplicates: int
    refused: int
    retries: int
    last_error: str | None


class LedgerWriter:
    """The event loop's side of the ledger.

    `record()` never blocks and never raises: it appends to a bounded backlog and wakes
    `run()`, which takes every row waiting (up to `max_batch`) and writes them as one batch in
    a worker thread; `commit()` is `record()` plus waiting for that batch. When a
    batch fails (disk full, database locked by another process), the error is kept in
    `status()` and logged, and the same batch is retried with backoff until it lands; rows are
    never dropped. While that lasts the backlog fills, and past `max_backlog` `record()`
    refuses the row, counts it in `refused`, logs it and returns False: memory stays bounded
    and the job's own result is untouched.

    Run `run()` in the daemon's task group; on shutdown call `close()` (shielded, under the
    drain deadline) before the group is cancelled: it refuses new rows and returns once every
    accepted row is committed. Construct it inside the event loop.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_batch: int = DEFAULT_MAX_BATCH,
        commit_wait_s: float = COMMIT_WAIT_S,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 5.0,
        caps: Callable[[], CapsLike] | None = None,
    ) -> None:
        if max_backlog < 1 or max_batch < 1:
            raise ValueError("max_backlog and max_batch must be at least 1")
        self.ledger = ledger
        self._caps = caps
        self._max_backlog = max_backlog
        self._max_batch = max_batch
        self._commit_wait_s = commit_wait_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._queue: deque[UsageRecord] = deque()
        self._inflight: list[UsageRecord] = []
        self._limiter = anyio.CapacityLimiter(1)
        self._wake = anyio.Event()
        self._changed = anyio.Event()
        self._stopped = anyio.Event()
        self._running = False
        self._closing = False
        self._accepted = 0
        self._done = 0
        self._duplicates = 0
        self._refused = 0
        self._retries = 0
        self._last_error: str | None = None
        # Committed spend by window, for `daemon/status` and the budget check of every submit:
        # read from the database once, then from memory until this writer changes the
        # database (a batch or a compaction bumps `_writes`). Bounded: the windows asked are
        # today's and this month's, and a new day or month starts new ones.
        self._spent: dict[tuple[float | None, float | None], float] = {}
        self._writes = 0

    def __repr__(self) -> str:
        s = self.status()
        return (
            f"<LedgerWriter pending={s.pending} written={s.written} refused={s.refused}"
            f" last_error={s.last_error!r}>"
        )

    def status(self) -> WriterStatus:
        return WriterStatus(
            pending=len(self._queue) + len(self._inflight),
            written=self._done - self._duplicates,
            duplicates=self._duplicates,
            refused=self._refused,
            retries=self._retries,
            last_error=self._last_error,
        )

    def record(self, row: UsageRecord) -> bool:
        """Queue one finished job; False (counted and logged) when closing or backlogged."""
        if self._closing or len(self._queue) + len(self._inflight) >= self._max_backlog:
            self._refused += 1
            if self._refused == 1 or self._refused % 1000 == 0:
                log.error(
                    "usage ledger: %d finished job(s) not recorded (job %s): %s",
                    self._refused,
                    row.job_id,
                    "the writer is closed"
                    if self._closing
                    else f"{self._max_backlog} rows already wait; last error: {self._last_error}",
                )
            self._notify()
            return False
        self._queue.append(row)
        self._accepted += 1
        if not self._wake.is_set():
            self._wake.set()
        return True

    async def commit(self, row: UsageRecord) -> bool:
        """Record one finished job and return once its batch is committed: True then, False
        (without waiting longer) when the row was refused, a write fails, `run()` has
        stopped or `commit_wait_s` passes; an accepted row is still written once the ledger
        can be (at the latest by `close()`)."""
        if not self.record(row):
            return False
        target = self._accepted  # rows are committed in the order they were accepted
        with anyio.move_on_after(self._commit_wait_s):
            while self._done < target:
                if self._last_error is not None or self._stopped.is_set():
                    return False
                changed = self._changed
                await changed.wait()
            return True
        log.warning(
            "usage ledger %s: job %s's row not committed within %.1fs; its result goes out "
            "first and the row is written when the disk catches up",
            self.ledger.path,
            row.job_id,
            self._commit_wait_s,
        )
        return False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: Callable[[WriterStatus], bool]) -> WriterStatus:
        """Wait until the status satisfies `predicate` (it is re-checked on every change)."""
        while True:
            changed = self._changed
            current = self.status()
            if predicate(current):
                return current
            await changed.wait()

    async def run(self) -> None:
        """Write batches until `close()` has been called and everything accepted is written."""
        self._running = True
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                count = min(len(self._queue), self._max_batch)
                self._inflight = [self._queue.popleft() for _ in range(count)]
                inserted = await self._write(self._inflight)
                self._database_changed()
                self._duplicates += len(self._inflight) - inserted
                self._done += len(self._inflight)
                self._inflight = []
                self._notify()
        finally:
            self._running = False
            self._stopped.set()
            self._notify()  # `commit()` waiters: nobody writes their rows now

    async def _write(self, batch: list[UsageRecord]) -> int:
        delay = self._backoff_initial_s
        while True:
            try:
                # Not abandoned on cancel: a transaction in progress finishes or rolls back.
                inserted = await anyio.to_thread.run_sync(
                    self.ledger.insert_batch, batch, limiter=self._limiter
                )
            except sqlite3.Error as exc:
                self._retries += 1
                first = self._last_error is None
                self._last_error = f"{exc}"
                self._notify()
                (log.error if first else log.warning)(
                    "usage ledger %s: cannot write %d row(s): %s; retrying in %.2fs "
                    "(free disk space or stop the process holding the lock)",
                    self.ledger.path,
                    len(self._queue) + len(batch),
                    exc,
                    delay,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, self._backoff_max_s)
                continue
            if self._last_error is not None:
                log.warning(
                    "usage ledger %s: writing again after: %s", self.ledger.path, self._last_error
                )
                self._last_error = None
            return inserted

    async def flush(self) -> None:
        """Return once every row accepted before this call is committed (needs `run()`)."""
        target = self._accepted
        while self._done < target:
            changed = self._changed
            await changed.wait()

    async def close(self) -> None:
        """Refuse new rows, commit every accepted one, stop `run()`, close the database."""
        self._closing = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()
        elif self._queue:
            await self.run()
        await anyio.to_thread.run_sync(self.ledger.close, limiter=self._limiter)

    async def compact_expired(self, now: float, retention_days: int) -> int:
        """Retention, on the writer's connection so it never races a batch."""
        try:
            return await anyio.to_thread.run_sync(
                self.ledger.compact_expired, now, retention_days, limiter=self._limiter
            )
        finally:
            self._database_changed()

    def _database_changed(self) -> None:
        self._writes += 1
        self._spent.clear()

    async def read(
        self,
        since: float | None = None,
        until: float | None = None,
        group_by: Sequence[GroupKey] = (),
    ) -> UsageResult:
        if self._running:
            # Read your writes: a client told `job.completed` finds that job in the totals.
            # Bounded, so a locked or full database delays an answer, never blocks it.
            with anyio.move_on_after(READ_FLUSH_TIMEOUT_S):
                await self.flush()
        result = await anyio.to_thread.run_sync(self.ledger.read, since, until, group_by)
        if self._caps is not None:
            result.budget = await self.budget_status(datetime.now().astimezone())
        return result

    async def budget_status(self, now: datetime) -> BudgetStatus:
        """Spend of the local day and month holding `now` (aware) against the caps."""
        caps = self._caps() if self._caps is not None else usage_budget.BudgetCaps()
        tz = self.ledger.tz
        day_start, day_end = usage_budget.day_bounds(now, tz)
        month_start, month_end = usage_budget.month_bounds(now, tz)
        today = await self.spend(day_start.timestamp(), day_end.timestamp())
        month = await self.spend(month_start.timestamp(), month_end.timestamp())
        return usage_budget.status(round(today, 9), round(month, 9), caps, now=now, tz=tz)

    async def spend(self, since: float | None, until: float | None) -> float:
        """Spend in [since, until): committed rows plus those still waiting to be written.

        The committed part is read from the database once per window and then kept until this
        writer next changes the database (the daemon is its only writer)."""
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        # Taken before the query: a batch that commits meanwhile is counted twice, never
        # missed, and a budget check errs on the safe side.
        waiting = sum(
            r.cost_usd for r in [*self._inflight, *self._queue] if lo <= r.finished_at < hi
        )
        key = (since, until)
        committed = self._spent.get(key)
        if committed is None:
            writes = self._writes
            committed = await anyio.to_thread.run_sync(self.ledger.spend, since, until)
            if writes == self._writes:  # else a batch landed meanwhile: the sum may predate it
                if len(self._spent) >= MAX_CACHED_SPEND_WINDOWS:
                    self._spent.clear()
                self._spent[key] = committed
        return committed + waiting
