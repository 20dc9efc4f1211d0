"""`[codexd.budget]` caps: pure checks over the local day and the local month.

Nothing here reads the clock or the ledger: the caller passes `now`, the spend so far (from
`Ledger.spend` over `day_bounds` / `month_bounds`) and the job's estimated cost, and gets back
`None` or a `BudgetExceeded` value that turns into the `budget_exceeded` error. `tz=None` means
the system's local time zone, with its own DST rules; tests pass a `zoneinfo.ZoneInfo`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal, Protocol

import msgspec

from codexctl.fmt import date_time_of, format_usd
from codexctl.protocol import BudgetStatus, ErrorKind, RpcError

Period = Literal["daily", "monthly"]


class CapsLike(Protocol):
    """`[codexd.budget]`: a cap left out (None) is no cap."""

    @property
    def daily_usd(self) -> float | None: ...

    @property
    def monthly_usd(self) -> float | None: ...


class BudgetCaps(msgspec.Struct, frozen=True):
    daily_usd: float | None = None
    monthly_usd: float | None = None


def _local_midnight(year: int, month: int, day: int, tz: tzinfo | None) -> datetime:
    if tz is None:
        # A naive local time made aware by the C library applies the DST rule of that date,
        # which a fixed offset taken from `now` would not.
        return datetime(year, month, day).astimezone()
    return datetime(year, month, day, tzinfo=tz)


def _local(now: datetime, tz: tzinfo | None) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(tz)


def day_bounds(now: datetime, tz: tzinfo | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the local day holding `now`, as aware datetimes (23 or 25 h on DST days)."""
    local = _local(now, tz)
    start = _local_midnight(local.year, local.month, local.day, tz)
    following = local.date() + timedelta(days=1)
    return start, _local_midnight(following.year, following.month, following.day, tz)


def month_bounds(now: datetime, tz: tzinfo | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the local calendar month holding `now`."""
    local = _local(now, tz)
    start = _local_midnight(local.year, local.month, 1, tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return start, _local_midnight(year, month, 1, tz)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BudgetExceeded(msgspec.Struct, frozen=True):
    """A cap the next job would pass: which one, where spend stands, and when it resets."""

    period: Period
    cap_usd: float
    spent_usd: float
    estimated_usd: float
    resets_at: datetime

    @property
    def message(self) -> str:
        span = "today" if self.period == "daily" else "this month"
        key = "daily_usd" if self.period == "daily" else "monthly_usd"
        local_reset = date_time_of(self.resets_at)  # in the zone the budget's days are kept in
        return (
            f"{self.period} budget of {format_usd(self.cap_usd)} would be passed: "
            f"{format_usd(self.spent_usd)} spent {span}, this request is estimated at "
            f"{format_usd(self.estimated_usd)}; it resets at {local_reset}. "
            f"Wait until then or raise [codexd.budget] {key} in config.toml"
        )

    def to_error(self) -> RpcError:
        return RpcError(ErrorKind.BUDGET_EXCEEDED, self.message, resets_at=_rfc3339(self.resets_at))


def check(
    estimated_cost: float,
    spent_today: float,
    spent_month: float,
    caps: CapsLike,
    *,
    now: datetime,
    tz: tzinfo | None = None,
) -> BudgetExceeded | None:
    """None when the job fits under every cap, else the cap it would pass.

    A job may bring spend exactly to a cap, not beyond. When both caps would be passed the
    monthly one is reported: waiting for the daily reset would not help.
    """
    if caps.monthly_usd is not None and spent_month + estimated_cost > caps.monthly_usd:
        return BudgetExceeded(
            period="monthly",
            cap_usd=caps.monthly_usd,
            spent_usd=spent_month,
            estimated_usd=estimated_cost,
            resets_at=month_bounds(now, tz)[1],
        )
    if caps.daily_usd is not None and spent_today + estimated_cost > caps.daily_usd:
        return BudgetExceeded(
            period="daily",
            cap_usd=caps.daily_usd,
            spent_usd=spent_today,
            estimated_usd=estimated_cost,
            resets_at=day_bounds(now, tz)[1],
        )
    return None


def status(
    spent_today: float,
    spent_month: float,
    caps: CapsLike,
    *,
    now: datetime,
    tz: tzinfo | None = None,
) -> BudgetStatus:
    return BudgetStatus(
        daily_usd=caps.daily_usd,
        monthly_usd=caps.monthly_usd,
        spent_today_usd=spent_today,
        spent_month_usd=spent_month,
        day_resets_at=_rfc3339(day_bounds(now, tz)[1]),
        month_resets_at=_rfc3339(month_bounds(now, tz)[1]),
    )
