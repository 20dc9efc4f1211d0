from __future__ import annotations

import math
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from codexctl.results import LimitWindow
from codexd.limits.budget import (
    ADMIT,
    MAX_TOKEN_LOG,
    Admission,
    Budget,
    BudgetError,
    BudgetLimits,
)
from codexd.limits.estimate import estimate_tokens
from codexd.limits.headers import RateLimitHeaders

T0 = 1000.0
WALL = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def budget(rpm: int | None = None, tpm: int | None = None, conc: int = 64, margin: float = 1.0):
    return Budget(BudgetLimits(rpm, tpm, conc), margin_s=margin)


# --------------------------------------------------------------------------- estimate


def test_estimate_uses_the_output_cap_when_it_is_larger() -> None:
    body = {"input": "x" * 400, "max_output_tokens": 500}
    assert estimate_tokens(body, "responses", 4096) == 500


def test_estimate_uses_input_characters_over_four_when_larger() -> None:
    body = {"instructions": "a" * 1000, "input": [{"role": "user", "content": "b" * 3001}]}
    assert estimate_tokens(body, "responses", 100) == math.ceil(4001 / 4)


def test_estimate_falls_back_to_the_default_output_tokens() -> None:
    assert estimate_tokens({"input": "hi"}, "responses", 4096) == 4096


def test_estimate_reads_chat_caps_and_message_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "s" * 40},
            {"role": "user", "content": [{"type": "text", "text": "t" * 80}]},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:" + "A" * 10**6}}],
            },
        ],
        "max_completion_tokens": 7,
    }
    # the image's base64 payload is not text: 120 characters → 30 tokens > the cap of 7
    assert estimate_tokens(body, "chat", 4096) == 30
    assert estimate_tokens({"messages": [], "max_tokens": 9}, "chat", 4096) == 9


def test_estimate_ignores_bogus_caps() -> None:
    for cap in (True, -5, 0, "100", 1.5):
        assert estimate_tokens({"max_output_tokens": cap}, "responses", 64) == 64


# --------------------------------------------------------------------------- budget rules


def test_a_burst_is_not_followed_by_another_burst() -> None:
    b = budget(rpm=3)
    for i in range(3):
        b.admit(i, 0, T0)
    # a token bucket would refill here; the rolling window still holds all three
    assert b.can_admit(0, T0 + 30) == Admission(False, T0 + 61, "requests")
    assert not b.can_admit(0, T0 + 60.5).ok
    assert b.can_admit(0, T0 + 61).ok


def test_the_window_rolls_one_start_at_a_time() -> None:
    b = budget(rpm=3)
    for i, t in enumerate((0, 20, 40)):
        b.admit(i, 0, T0 + t)
    b.admit(3, 0, T0 + 61)
    assert b.can_admit(0, T0 + 61) == Admission(False, T0 + 81, "requests")
    assert b.available_requests(T0 + 81) == 1


def test_tokens_are_charged_then_corrected_by_real_usage() -> None:
    b = budget(tpm=100)
    b.admit("a", 60, T0)
    assert b.can_admit(50, T0 + 1) == Admission(False, T0 + 61, "tokens")
    assert b.correct("a", 10)
    assert b.available_tokens(T0 + 1) == 90
    b.admit("b", 50, T0 + 1)
    assert b.available_tokens(T0 + 1) == 40


def test_a_correction_after_release_is_refused() -> None:
    b = budget(tpm=100)
    b.admit("a", 60, T0)
    assert b.release("a", T0 + 1)
    assert not b.correct("a", 1)
    assert not b.release("a", T0 + 1)


def test_a_cost_above_the_minute_is_charged_the_whole_minute() -> None:
    b = budget(tpm=1000)
    assert b.can_admit(50_000, T0).ok
    b.admit("big", 50_000, T0)
    assert b.available_tokens(T0) == 0
    assert b.can_admit(1, T0 + 1).at == T0 + 61


def test_concurrency_waits_for_a_release_not_for_time() -> None:
    b = budget(conc=2)
    b.admit(1, 0, T0)
    b.admit(2, 0, T0)
    assert b.can_admit(0, T0) == Admission(False, None, "concurrency")
    b.release(1, T0 + 0.1)
    assert b.can_admit(0, T0 + 0.1).ok


def test_a_pause_stops_everything_and_is_never_shortened() -> None:
    b = budget(rpm=100)
    b.pause_until(T0 + 5)
    b.pause_until(T0 + 2)
    assert b.can_admit(0, T0 + 4.9) == Admission(False, T0 + 5, "paused")
    with pytest.raises(BudgetError):
        b.admit("x", 0, T0 + 1)
    assert b.can_admit(0, T0 + 5).ok


def test_admitting_twice_is_a_bug() -> None:
    b = budget()
    b.admit("x", 0, T0)
    with pytest.raises(BudgetError):
        b.admit("x", 0, T0)


def test_server_remaining_without_a_limit_holds_until_the_reset() -> None:
    b = budget()
    b.observe_headers(RateLimitHeaders(requests=LimitWindow(remaining=2, reset_after_s=10)), T0)
    b.admit(1, 0, T0)
    b.admit(2, 0, T0)
    assert b.can_admit(0, T0 + 1) == Admission(False, T0 + 10, "upstream_requests")
    assert b.available_requests(T0 + 1) == 0
    assert b.can_admit(0, T0 + 10).ok
    assert b.available_requests(T0 + 10) is None


def test_server_tokens_refill_linearly_to_the_limit() -> None:
    b = budget(tpm=10_000)
    tokens = LimitWindow(limit=1000, remaining=100, reset_after_s=9)  # 100 tokens a second
    b.observe_headers(RateLimitHeaders(tokens=tokens), T0)
    decision = b.can_admit(300, T0)
    assert decision.reason == "upstream_tokens"
    assert decision.at == pytest.approx(T0 + 2)
    assert decision.at is not None
    assert b.can_admit(300, decision.at).ok
    b.admit("x", 300, decision.at)
    assert b.available_tokens(decision.at) == 0


def test_headers_without_a_reset_teach_nothing() -> None:
    b = budget()
    b.observe_headers(RateLimitHeaders(requests=LimitWindow(limit=10, remaining=0)), T0)
    assert b.can_admit(0, T0).ok


def test_snapshot_has_the_spec_members() -> None:
    b = budget(rpm=10, tpm=1000, conc=4)
    b.admit("a", 100, T0)
    b.pause_until(T0 + 30)
    snap = b.snapshot(T0, wall_now=WALL, queued=3)
    assert msgspec.structs.asdict(snap) == {
        "requests_per_minute": 10,
        "tokens_per_minute": 1000,
        "max_concurrency": 4,
        "available_requests": 9,
        "available_tokens": 900,
        "in_flight": 1,
        "queued": 3,
        "paused_until": "2026-05-01T12:00:30Z",
    }
    later = b.snapshot(T0 + 31, wall_now=WALL + 31)
    assert later.paused_until is None
    unlimited = budget().snapshot(T0, wall_now=WALL)
    assert unlimited.available_requests is None
    assert unlimited.available_tokens is None


def test_the_token_log_stays_bounded_and_exact_enough() -> None:
    b = budget(tpm=10**9, conc=1)
    for i in range(MAX_TOKEN_LOG * 2):
        b.admit(i, 1, T0 + i * 0.001)
        b.release(i, T0 + i * 0.001)
    assert len(b._charges) <= MAX_TOKEN_LOG
    # merged charges expire later than they could, never earlier
    assert b.available_tokens(T0 + 10) == 10**9 - MAX_TOKEN_LOG * 2
    assert b.available_tokens(T0 + 61 + MAX_TOKEN_LOG * 0.002) == 10**9


def test_a_clock_that_steps_back_is_held() -> None:
    b = budget(rpm=1)
    b.admit(1, 0, T0)
    assert b.can_admit(0, T0 - 100).at == T0 + 61


def test_reconfigure_keeps_the_window() -> None:
    b = budget(rpm=5, tpm=1000)
    for i in range(3):
        b.admit(i, 100, T0)
    b.reconfigure(BudgetLimits(requests_per_minute=2, tokens_per_minute=1000, max_concurrency=64))
    assert b.can_admit(0, T0 + 1) == Admission(False, T0 + 61, "requests")
    assert b.available_tokens(T0 + 1) == 700


def test_a_lowered_rpm_waits_for_enough_starts_to_leave_the_window() -> None:
    # Three starts in the window, then the limit drops to 2: a new start needs two of them
    # gone, so it waits for the second start's expiry, not the first's.
    b = budget(rpm=5)
    for i, t in enumerate((T0, T0 + 10, T0 + 20)):
        b.admit(i, 0, t)
    b.reconfigure(BudgetLimits(requests_per_minute=2, max_concurrency=64))
    assert b.can_admit(0, T0 + 21) == Admission(False, T0 + 71, "requests")
    assert b.available_requests(T0 + 21) == 0
    assert b.can_admit(0, T0 + 61) == Admission(False, T0 + 71, "requests")
    assert b.can_admit(0, T0 + 71) == ADMIT
    assert b.available_requests(T0 + 71) == 1


def test_a_charge_merged_into_a_full_token_log_expires_with_the_newest_charge() -> None:
    # A reload that adds rpm = 2 bounds the token log to two entries while it holds two
    # charges: the third is merged into the newest entry, whose time moves to the third's, so
    # its tokens stay in the window a full window after they were charged, never less.
    b = budget(tpm=1000)
    b.admit(1, 100, T0)
    b.admit(2, 100, T0 + 10)
    b.reconfigure(BudgetLimits(requests_per_minute=2, tokens_per_minute=1000, max_concurrency=64))
    b.admit(3, 100, T0 + 30)
    assert len(b._charges) == 2
    assert b.available_tokens(T0 + 31) == 700
    assert b.available_tokens(T0 + 61) == 800  # the first charge left the window
    assert b.available_tokens(T0 + 75) == 800  # the merged 200 were last charged at T0 + 30
    assert b.can_admit(900, T0 + 75) == Admission(False, T0 + 91, "tokens")
    assert b.available_tokens(T0 + 91) == 1000


@pytest.mark.parametrize(
    "limits",
    [{"requests_per_minute": 0}, {"tokens_per_minute": -1}, {"max_concurrency": 0}],
)
def test_limits_are_validated(limits: dict[str, int]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(limits, BudgetLimits)


# --------------------------------------------------------------------------- properties

SERVER_WINDOW = 60.0
quarter_seconds = st.integers(0, 4 * 90).map(lambda q: q / 4)


class BudgetMachine(RuleBasedStateMachine):
    """The real budget against a list of every admission it ever made."""

    @initialize(
        rpm=st.none() | st.integers(1, 6),
        tpm=st.none() | st.integers(10, 200),
        conc=st.integers(1, 4),
        margin=st.sampled_from([0.0, 1.0]),
    )
    def setup(self, rpm: int | None, tpm: int | None, conc: int, margin: float) -> None:
        self.limits = BudgetLimits(rpm, tpm, conc)
        self.budget = Budget(self.limits, margin_s=margin)
        self.window = 60.0 + margin
        self.now = T0
        self.paused_until = -math.inf
        self.starts: list[float] = []
        self.tokens: dict[int, tuple[float, int]] = {}
        self.in_flight: list[int] = []
        self.next_ticket = 0

    # the model ------------------------------------------------------------

    def charge(self, cost: int) -> int:
        tpm = self.limits.tokens_per_minute
        return min(cost, tpm) if tpm is not None else cost

    def model_admits(self, cost: int, t: float) -> bool:
        if t < self.paused_until or len(self.in_flight) >= self.limits.max_concurrency:
            return False
        rpm, tpm = self.limits.requests_per_minute, self.limits.tokens_per_minute
        if rpm is not None and sum(s + self.window > t for s in self.starts) >= rpm:
            return False
        in_window = sum(n for s, n in self.tokens.values() if s + self.window > t)
        return tpm is None or in_window + self.charge(cost) <= tpm

    # rules ----------------------------------------------------------------

    @rule(dt=quarter_seconds)
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(cost=st.integers(0, 250))
    def admit(self, cost: int) -> None:
        decision = self.budget.can_admit(cost, self.now)
        assert decision.ok == self.model_admits(cost, self.now)
        if not decision.ok:
            if decision.at is not None:
                # `at` is the earliest time by time alone: exactly then, and not a moment before
                assert decision.at > self.now
                assert self.model_admits(cost, decision.at)
                if decision.at - 1e-6 > self.now:
                    assert not self.model_admits(cost, decision.at - 1e-6)
            else:
                assert len(self.in_flight) >= self.limits.max_concurrency
            with pytest.raises(BudgetError):
                self.budget.admit(-1, cost, self.now)
            return
        assert self.now >= self.paused_until, "granted while paused"
        ticket = self.next_ticket
        self.next_ticket += 1
        self.budget.admit(ticket, cost, self.now)
        self.starts.append(self.now)
        self.tokens[ticket] = (self.now, self.charge(cost))
        self.in_flight.append(ticket)
        self.check_window_ending_now()

    def check_window_ending_now(self) -> None:
        """The server's 60 s window ending at this admission holds no more than the limits."""
        t = self.now
        rpm, tpm = self.limits.requests_per_minute, self.limits.tokens_per_minute
        if rpm is not None:
            assert sum(t - SERVER_WINDOW < s <= t for s in self.starts) <= rpm
        if tpm is not None:
            assert sum(n for s, n in self.tokens.values() if t - SERVER_WINDOW < s <= t) <= tpm

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(self.in_flight))
        assert self.budget.release(ticket, self.now)
        self.in_flight.remove(ticket)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data(), actual=st.integers(0, 300))
    def correct(self, data: st.DataObject, actual: int) -> None:
        ticket = data.draw(st.sampled_from(self.in_flight))
        assert self.budget.correct(ticket, actual)
        self.tokens[ticket] = (self.tokens[ticket][0], actual)

    @rule(seconds=quarter_seconds)
    def pause(self, seconds: float) -> None:
        # a 429 with Retry-After
        self.budget.pause_until(self.now + seconds)
        self.paused_until = max(self.paused_until, self.now + seconds)

    # invariants -----------------------------------------------------------

    @invariant()
    def concurrency_is_bounded(self) -> None:
        assert self.budget.in_flight == len(self.in_flight) <= self.limits.max_concurrency

    @invariant()
    def reported_availability_matches_the_model(self) -> None:
        rpm, tpm = self.limits.requests_per_minute, self.limits.tokens_per_minute
        requests = self.budget.available_requests(self.now)
        tokens = self.budget.available_tokens(self.now)
        if rpm is None:
            assert requests is None
        else:
            assert requests == max(0, rpm - sum(s + self.window > self.now for s in self.starts))
        if tpm is None:
            assert tokens is None
        else:
            used = sum(n for s, n in self.tokens.values() if s + self.window > self.now)
            assert tokens == max(0, tpm - used)


BudgetMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestBudgetMachine = BudgetMachine.TestCase


@given(
    remaining=st.integers(0, 1000),
    extra=st.integers(0, 1000),
    reset=st.integers(1, 600).map(lambda x: x / 4),
    cost=st.integers(1, 3000),
)
def test_server_cap_deadline_is_exact(remaining: int, extra: int, reset: float, cost: int) -> None:
    b = budget()
    window = LimitWindow(limit=remaining + extra or None, remaining=remaining, reset_after_s=reset)
    b.observe_headers(RateLimitHeaders(tokens=window), T0)
    decision = b.can_admit(cost, T0)
    if decision.ok:
        # a cost above the server's whole limit is charged as the whole limit
        assert min(cost, window.limit or cost) <= remaining
        return
    assert decision.at is not None
    assert T0 < decision.at <= T0 + reset
    assert b.can_admit(cost, decision.at).ok
