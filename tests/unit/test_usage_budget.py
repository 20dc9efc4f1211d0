"""`[codexd.budget]` caps over the local day and month, with an injected time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from codexctl.protocol import ErrorKind
from codexd.usage.budget import BudgetCaps, check, day_bounds, month_bounds, status

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def test_the_local_day_not_the_utc_day() -> None:
    # 23:30 UTC on 25 Nov is already 26 Nov in Berlin.
    now = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    start, end = day_bounds(now, BERLIN)
    assert start == datetime(2026, 11, 26, tzinfo=BERLIN)
    assert end == datetime(2026, 11, 27, tzinfo=BERLIN)
    assert start.astimezone(UTC) == datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def test_a_dst_day_is_23_hours_long() -> None:
    start, end = day_bounds(datetime(2026, 3, 8, 15, 0, tzinfo=UTC), NEW_YORK)
    assert end.timestamp() - start.timestamp() == 23 * 3600


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (datetime(2026, 11, 25, 12, tzinfo=UTC), (2026, 11, 1), (2026, 12, 1)),
        (datetime(2026, 12, 31, 23, 30, tzinfo=UTC), (2027, 1, 1), (2027, 2, 1)),
        (datetime(2026, 12, 15, tzinfo=UTC), (2026, 12, 1), (2027, 1, 1)),
    ],
)
def test_month_bounds(
    now: datetime, start: tuple[int, int, int], end: tuple[int, int, int]
) -> None:
    assert month_bounds(now, BERLIN) == (
        datetime(*start, tzinfo=BERLIN),
        datetime(*end, tzinfo=BERLIN),
    )


def test_system_local_time_when_no_zone_is_given() -> None:
    now = datetime.now(UTC)
    start, end = day_bounds(now)
    assert start <= now < end
    assert timedelta(hours=22) <= end - start <= timedelta(hours=26)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        day_bounds(datetime(2026, 1, 1), BERLIN)


NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def test_no_caps_never_refuse() -> None:
    assert check(1e9, 1e9, 1e9, BudgetCaps(), now=NOW, tz=BERLIN) is None


def test_reaching_the_cap_exactly_is_allowed_passing_it_is_not() -> None:
    caps = BudgetCaps(daily_usd=20.0)
    assert check(0.5, 19.5, 19.5, caps, now=NOW, tz=BERLIN) is None
    refused = check(0.51, 19.5, 19.5, caps, now=NOW, tz=BERLIN)
    assert refused is not None
    assert refused.period == "daily"
    assert refused.resets_at == datetime(2026, 11, 26, tzinfo=BERLIN)


def test_the_error_names_the_cap_the_spend_and_the_reset() -> None:
    refused = check(
        0.04, 19.98, 50.0, BudgetCaps(daily_usd=20.0, monthly_usd=200.0), now=NOW, tz=BERLIN
    )
    assert refused is not None
    err = refused.to_error()
    assert err.kind == ErrorKind.BUDGET_EXCEEDED
    assert err.code == -32023
    assert err.data.retryable is False
    assert err.data.resets_at == "2026-11-25T23:00:00.000Z"
    assert "daily budget of $20.00" in err.message
    assert "$19.98 spent today" in err.message
    assert "$0.0400" in err.message
    assert "it resets at 2026-11-26 00:00:00 +01:00." in err.message
    assert "daily_usd" in err.message


def test_when_both_caps_are_passed_the_monthly_one_is_reported() -> None:
    caps = BudgetCaps(daily_usd=10.0, monthly_usd=100.0)
    refused = check(1.0, 10.0, 100.0, caps, now=NOW, tz=BERLIN)
    assert refused is not None
    assert refused.period == "monthly"
    assert refused.resets_at == datetime(2026, 12, 1, tzinfo=BERLIN)
    assert "this month" in refused.message


def test_status_reports_spend_against_the_caps() -> None:
    report = status(1.5, 12.25, BudgetCaps(monthly_usd=200.0), now=NOW, tz=BERLIN)
    assert report.daily_usd is None
    assert report.monthly_usd == 200.0
    assert (report.spent_today_usd, report.spent_month_usd) == (1.5, 12.25)
    assert report.day_resets_at == "2026-11-25T23:00:00.000Z"
    assert report.month_resets_at == "2026-11-30T23:00:00.000Z"
