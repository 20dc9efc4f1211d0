"""Budget rules the mutation run (`make mutate`) found untested: exact boundaries, the server
caps' bookkeeping, corrections across a header update, reconfiguring the token cap, and
`next_change`. Kept apart from test_budget.py so both can grow without conflicts."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from codexd.limits.budget import Admission, Budget, BudgetError, BudgetLimits
from codexd.limits.headers import LimitWindow, RateLimitHeaders

T0 = 1000.0
WALL = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def budget(rpm: int | None = None, tpm: int | None = None, conc: int = 64) -> Budget:
    return Budget(BudgetLimits(rpm, tpm, conc), margin_s=1.0)


def tokens_left(remaining: int, reset_after_s: float, limit: int | None = None) -> RateLimitHeaders:
    window = LimitWindow(limit=limit, remaining=remaining, reset_after_s=reset_after_s)
    return RateLimitHeaders(tokens=window)


def requests_left(remaining: int, reset_after_s: float) -> RateLimitHeaders:
    return RateLimitHeaders(requests=LimitWindow(remaining=remaining, reset_after_s=reset_after_s))


# --------------------------------------------------------------------------- errors


def test_invalid_limits_say_what_is_wrong() -> None:
    with pytest.raises(msgspec.ValidationError) as exc:
        msgspec.convert({"max_concurrency": 0}, BudgetLimits)
    assert str(exc.value) == "max_concurrency must be a positive integer"
    with pytest.raises(msgspec.ValidationError) as exc:
        msgspec.convert({"tokens_per_minute": 0}, BudgetLimits)
    assert str(exc.value) == "tokens_per_minute must be a positive integer (or left out for no cap)"
    with pytest.raises(ValueError, match=r"^margin_s must not be negative$"):
        Budget(BudgetLimits(), margin_s=-0.5)


def test_protocol_errors_say_what_was_broken() -> None:
    b = budget(conc=1)
    b.admit("a", 0, T0)
    with pytest.raises(BudgetError, match="ticket 'a' is already admitted"):
        b.admit("a", 0, T0)
    with pytest.raises(BudgetError, match="cannot admit now: concurrency"):
        b.admit("b", 0, T0)


# --------------------------------------------------------------------------- reading


def test_holds_and_is_paused_report_the_current_state() -> None:
    b = budget()
    b.admit("a", 0, T0)
    assert b.holds("a")
    assert not b.holds("b")
    b.pause_until(T0 + 5)
    assert b.is_paused(T0 + 4.9)
    assert not b.is_paused(T0 + 5)


def test_repr_shows_limits_and_the_window() -> None:
    b = budget(rpm=10, tpm=1000, conc=4)
    b.admit("a", 100, T0)
    assert repr(b) == ("<Budget rpm=10 tpm=1000 in_flight=1/4 window_requests=1 window_tokens=100>")


def test_snapshot_defaults_to_no_queue_and_a_pause_ends_at_its_instant() -> None:
    b = budget(rpm=10)
    b.pause_until(T0 + 30)
    snap = b.snapshot(T0 + 30, wall_now=WALL)
    assert snap.queued == 0
    assert snap.paused_until is None


def test_on_a_tie_the_first_reason_in_order_is_reported() -> None:
    # paused, requests, tokens, upstream_requests, upstream_tokens: all free at T0 + 61
    b = budget(rpm=1)
    b.admit("a", 0, T0)
    b.pause_until(T0 + 61)
    assert b.can_admit(0, T0 + 1) == Admission(False, T0 + 61, "paused")


# --------------------------------------------------------------------------- the token window


def test_a_charge_expires_exactly_one_window_later() -> None:
    b = budget(tpm=100)
    b.admit("a", 100, T0)
    assert b.can_admit(1, T0 + 60.9) == Admission(False, T0 + 61, "tokens")
    assert b.available_tokens(T0 + 61) == 100
    assert b.can_admit(100, T0 + 61).ok


def test_the_tokens_wait_is_for_the_oldest_charges_that_free_enough() -> None:
    b = budget(tpm=100)
    b.admit("a", 60, T0)
    b.admit("b", 40, T0 + 10)
    # needs 30 (or exactly 60): a's expiry frees enough; 61 needs b's too
    assert b.can_admit(30, T0 + 20) == Admission(False, T0 + 61, "tokens")
    assert b.can_admit(60, T0 + 20) == Admission(False, T0 + 61, "tokens")
    assert b.can_admit(61, T0 + 20) == Admission(False, T0 + 71, "tokens")


def test_a_full_token_log_merges_into_its_newest_entry() -> None:
    # Without a request cap the log may hold MAX_TOKEN_LOG entries; a request cap of 2 set
    # later bounds it to 2, so the next charge is merged into the newest entry (T0 + 2).
    b = budget(tpm=1000)
    for i, cost in enumerate((100, 200, 300)):
        b.admit(i, cost, T0 + i)
    b.reconfigure(BudgetLimits(requests_per_minute=2, tokens_per_minute=1000))
    b.admit("merged", 50, T0 + 3)
    assert b.available_tokens(T0 + 3) == 1000 - 650
    # T0 and T0 + 1 have expired; the merged entry (300 + 50) now dates from T0 + 3
    assert b.available_tokens(T0 + 63.5) == 1000 - 350
    assert b.available_tokens(T0 + 64) == 1000


def test_turning_the_token_cap_off_forgets_the_token_window() -> None:
    b = budget(tpm=1000)
    b.admit("a", 300, T0)
    b.reconfigure(BudgetLimits(tokens_per_minute=None))
    assert b.available_tokens(T0 + 1) is None
    b.reconfigure(BudgetLimits(tokens_per_minute=1000))
    assert b.available_tokens(T0 + 1) == 1000
    # the forgotten charge is not brought back by a late correction
    assert b.correct("a", 500)
    assert b.available_tokens(T0 + 1) == 1000


def test_turning_the_token_cap_on_starts_from_an_empty_window() -> None:
    b = budget()
    b.admit("a", 300, T0)
    b.reconfigure(BudgetLimits(tokens_per_minute=1000))
    assert b.available_tokens(T0) == 1000
    assert repr(b).endswith("window_tokens=0>")


# --------------------------------------------------------------------------- server caps


def test_admissions_and_corrections_count_against_the_servers_tokens() -> None:
    b = budget()
    b.observe_headers(tokens_left(500, 30), T0)
    b.admit("a", 100, T0)
    b.admit("b", 100, T0)
    assert b.available_tokens(T0) == 300
    assert b.correct("a", 50)
    assert b.available_tokens(T0) == 350
    assert b.correct("b", 0)
    assert b.correct("a", 0)
    assert b.available_tokens(T0) == 500


def test_a_correction_does_not_touch_a_cap_observed_after_the_admission() -> None:
    b = budget()
    b.observe_headers(tokens_left(500, 30), T0)
    b.admit("a", 300, T0)
    # the server's newer answer already counts what "a" really used
    b.observe_headers(tokens_left(150, 30), T0 + 1)
    assert b.correct("a", 400)
    assert b.available_tokens(T0 + 1) == 150


def test_headers_that_teach_nothing_keep_corrections_flowing_to_the_cap() -> None:
    b = budget()
    b.observe_headers(tokens_left(500, 30), T0)
    b.admit("a", 300, T0)
    b.observe_headers(RateLimitHeaders(), T0 + 1)
    assert b.correct("a", 100)
    assert b.available_tokens(T0 + 1) == 400


def test_a_short_server_reset_still_refills_linearly() -> None:
    b = budget()
    b.observe_headers(tokens_left(0, 0.5, limit=1000), T0)
    assert b.available_tokens(T0 + 0.25) == 500


def test_a_slow_server_refill_gives_an_exact_deadline() -> None:
    b = budget()
    b.observe_headers(tokens_left(0, 200, limit=100), T0)  # half a token a second
    assert b.can_admit(10, T0) == Admission(False, T0 + 20, "upstream_tokens")


def test_the_server_deadline_counts_what_was_already_admitted() -> None:
    b = budget()
    b.observe_headers(tokens_left(100, 9, limit=1000), T0)  # 100 tokens a second
    b.admit("a", 100, T0)
    decision = b.can_admit(100, T0)
    assert decision.reason == "upstream_tokens"
    assert decision.at == pytest.approx(T0 + 1)


# --------------------------------------------------------------------------- next_change


def test_next_change_is_none_when_nothing_is_pending() -> None:
    b = budget(rpm=1)
    b.admit("a", 0, T0)  # the window rolling does not count
    assert b.next_change(T0) is None


def test_next_change_walks_through_the_pause_and_the_server_resets() -> None:
    b = budget()
    b.observe_headers(requests_left(5, 10), T0)
    b.observe_headers(tokens_left(500, 8), T0)
    b.pause_until(T0 + 5)
    assert b.next_change(T0) == T0 + 5
    assert b.next_change(T0 + 5) == T0 + 8
    assert b.next_change(T0 + 6) == T0 + 8
    assert b.next_change(T0 + 8) == T0 + 10
    assert b.next_change(T0 + 10) is None
    assert b.next_change(T0 + 11) is None


def test_a_request_cap_alone_ends_at_its_reset() -> None:
    b = budget()
    b.observe_headers(requests_left(0, 10), T0)
    assert b.next_change(T0 + 3) == T0 + 10
    assert b.available_requests(T0 + 9.9) == 0
    assert b.next_change(T0 + 10) is None


def test_a_server_cap_is_gone_at_its_reset_instant() -> None:
    """From the reset on, only the configured limits apply: no cap is reported, not a full one."""
    b = budget()
    b.observe_headers(tokens_left(0, 10.0, limit=1000), T0)
    assert b.available_tokens(T0) == 0
    assert b.available_tokens(T0 + 10.0) is None
