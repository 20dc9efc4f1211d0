"""The ChatGPT plan's usage windows as values: the body parsed (whole, partial, garbage), the
once-a-minute schedule, the gate, where the windows are read, and how a read merges."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest

from codexctl.results import Credits, LimitWindow, UpstreamLimits, UsageWindow
from codexd.config.load import load_config
from codexd.limits.headers import rfc3339
from codexd.limits.plan import (
    MAX_BODY_BYTES,
    PASS,
    POLL_INTERVAL_S,
    PlanUsage,
    PlanUsageError,
    Refuse,
    Wait,
    blocked_until,
    epoch_of,
    gate,
    parse_plan_usage,
)
from codexd.limits.poll import PollSchedule
from codexd.security.scrub import Scrubber

NOW = 1_761_541_724.0  # 2025-10-27T05:08:44Z

# As the ChatGPT backend sends it (a Pro plan, the shape Codex's backend client decodes).
FULL = {
    "plan_type": "pro",
    "rate_limit": {
        "allowed": True,
        "limit_reached": False,
        "primary_window": {
            "used_percent": 8,
            "limit_window_seconds": 17940,
            "reset_after_seconds": 6625,
            "reset_at": 1761548349,
        },
        "secondary_window": {
            "used_percent": 43.5,
            "limit_window_seconds": 604800,
            "reset_after_seconds": 300000,
            "reset_at": 1761841724,
        },
    },
    "code_review_rate_limit": None,
    "credits": {"has_credits": True, "unlimited": False, "balance": "12.50"},
    "additional_rate_limits": [{"limit_name": "x", "metered_feature": "y", "rate_limit": None}],
    "rate_limit_reached_type": None,
}


def parse(body: object, **kwargs: object) -> PlanUsage:
    return parse_plan_usage(msgspec.json.encode(body), wall_now=NOW, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the body


def test_a_full_body_gives_both_windows_credits_and_the_plan() -> None:
    assert parse(FULL) == PlanUsage(
        plan_type="pro",
        primary=UsageWindow(
            used_percent=8.0, window_minutes=299, resets_at="2025-10-27T06:59:09Z"
        ),
        secondary=UsageWindow(
            used_percent=43.5, window_minutes=10080, resets_at="2025-10-30T16:28:44Z"
        ),
        credits=Credits(has_credits=True, unlimited=False, balance="12.50"),
    )


def test_window_minutes_round_up_and_a_zero_length_is_unknown() -> None:
    def minutes(seconds: object) -> int | None:
        window = {"used_percent": 1, "limit_window_seconds": seconds}
        got = parse({"rate_limit": {"primary_window": window}}).primary
        assert got is not None
        return got.window_minutes

    assert minutes(18000) == 300
    assert minutes(18001) == 301
    assert minutes(59) == 1
    assert minutes(0) is None
    assert minutes(-5) is None
    assert minutes(None) is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"plan_type": None, "rate_limit": None, "credits": None},
        {"rate_limit": {}},
        {"rate_limit": {"primary_window": None, "secondary_window": None}},
        {"rate_limit": {"primary_window": {}, "secondary_window": {"used_percent": None}}},
        {"credits": {}},
        {"credits": {"has_credits": None, "unlimited": None, "balance": None}},
    ],
)
def test_every_member_may_be_missing_or_null(body: object) -> None:
    assert parse(body) == PlanUsage()


def test_a_partial_body_keeps_what_it_says() -> None:
    got = parse(
        {
            "rate_limit": {
                "allowed": False,
                "secondary_window": {"used_percent": 100, "reset_after_seconds": 60},
            },
            "credits": {"unlimited": True, "balance": 3.5},
        }
    )
    assert got == PlanUsage(
        secondary=UsageWindow(used_percent=100.0, resets_at="2025-10-27T05:09:44Z"),
        credits=Credits(unlimited=True, balance="3.5"),
    )


def test_reset_at_wins_over_reset_after_and_a_zero_reset_at_is_unknown() -> None:
    window = {"used_percent": 5, "reset_at": 0, "reset_after_seconds": 10}
    got = parse({"rate_limit": {"primary_window": window}}).primary
    assert got is not None and got.resets_at == "2025-10-27T05:08:54Z"
    window = {"used_percent": 5, "reset_at": 1761548349, "reset_after_seconds": 10}
    got = parse({"rate_limit": {"primary_window": window}}).primary
    assert got is not None and got.resets_at == "2025-10-27T06:59:09Z"


def test_text_from_the_body_is_scrubbed() -> None:
    scrubber = Scrubber.for_request({"Authorization": "Bearer tok-abcdefghijklmnop"})
    got = parse(
        {"plan_type": "tok-abcdefghijklmnop", "credits": {"balance": "tok-abcdefghijklmnop"}},
        scrubber=scrubber,
    )
    assert "tok-abcdefghijklmnop" not in msgspec.json.encode(got).decode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"<html>Sign in</html>",
        b'{"plan_type": "pro"',
        b"[]",
        b"null",
        b'{"rate_limit": "full"}',
        b'{"rate_limit": {"primary_window": {"used_percent": "8%"}}}',
        b'{"rate_limit": {"allowed": "yes"}}',
        b'{"credits": []}',
        b'{"plan_type": 3}',
    ],
)
def test_garbage_is_an_error_not_a_plan(raw: bytes) -> None:
    with pytest.raises(PlanUsageError):
        parse_plan_usage(raw, wall_now=NOW)


def test_an_oversized_body_is_refused_before_decoding() -> None:
    raw = b'{"plan_type": "' + b"x" * MAX_BODY_BYTES + b'"}'
    with pytest.raises(PlanUsageError, match="larger than"):
        parse_plan_usage(raw, wall_now=NOW)


def test_a_read_replaces_what_headers_said_and_keeps_the_request_windows() -> None:
    before = UpstreamLimits(
        requests=LimitWindow(limit=10, remaining=9),
        primary=UsageWindow(used_percent=100.0, window_minutes=300),
        secondary=UsageWindow(used_percent=50.0),
        credits=Credits(balance="1"),
    )
    read = PlanUsage(primary=UsageWindow(used_percent=3.0, window_minutes=300))
    assert read.merged_into(before) == UpstreamLimits(
        requests=LimitWindow(limit=10, remaining=9),
        primary=UsageWindow(used_percent=3.0, window_minutes=300),
        secondary=UsageWindow(used_percent=50.0),
        credits=Credits(balance="1"),
    )


# --------------------------------------------------------------------------- when to read


def test_reads_on_demand_at_most_once_per_interval() -> None:
    schedule = PollSchedule(POLL_INTERVAL_S)
    assert POLL_INTERVAL_S == 60.0
    assert schedule.due(1000.0)
    schedule.started(1000.0)
    assert not schedule.due(1000.0)
    assert not schedule.due(1059.9)
    assert schedule.due(1060.0)
    with pytest.raises(ValueError):
        PollSchedule(0)


def test_a_usage_limit_asks_for_one_read_that_later_ones_share() -> None:
    schedule = PollSchedule(POLL_INTERVAL_S)
    assert schedule.wanted_since(5.0)
    schedule.started(10.0)
    assert schedule.wanted_since(12.0)  # the limit came after the last read started
    schedule.started(12.0)
    assert not schedule.wanted_since(12.0)
    assert not schedule.wanted_since(11.0)  # a burst: the read made since answers them all


# --------------------------------------------------------------------------- the gate


def window(used: float, resets_in: float | None) -> UsageWindow:
    resets = None if resets_in is None else rfc3339(NOW + resets_in)
    return UsageWindow(used_percent=used, window_minutes=300, resets_at=resets)


def test_a_spent_window_blocks_until_its_reset() -> None:
    until = blocked_until([window(100, 3600), window(40, 86400)], wall_now=NOW)
    assert until == NOW + 3600


def test_two_spent_windows_block_until_the_later_reset() -> None:
    until = blocked_until([window(100, 60), window(100.5, 7200)], wall_now=NOW)
    assert until == NOW + 7200


def test_nothing_blocks_below_100_percent_or_without_a_reset_ahead() -> None:
    assert blocked_until([window(99.9, 60), None], wall_now=NOW) is None
    assert blocked_until([window(100, None)], wall_now=NOW) is None
    assert blocked_until([window(100, -1), window(40, 86400)], wall_now=NOW) is None
    assert blocked_until([], wall_now=NOW) is None


@pytest.mark.parametrize(
    "rate_limit",
    [
        {"allowed": False},  # e.g. a plan without Codex: no reset fixes that
        {"limit_reached": True},
        {"allowed": False, "limit_reached": True},
    ],
)
def test_the_bodys_own_verdict_without_a_spent_window_gates_nothing(
    rate_limit: dict[str, object],
) -> None:
    windows = {
        "primary_window": {"used_percent": 80, "reset_after_seconds": 600},
        "secondary_window": {"used_percent": 90, "reset_after_seconds": 60},
    }
    plan = parse({"rate_limit": rate_limit | windows})
    until = blocked_until([plan.primary, plan.secondary], wall_now=NOW)
    assert until is None
    assert gate(until, wall_now=NOW, max_wait_s=120) is PASS


def test_the_gate_passes_waits_or_refuses() -> None:
    assert gate(None, wall_now=NOW, max_wait_s=120) is PASS
    assert gate(NOW, wall_now=NOW, max_wait_s=120) is PASS
    assert gate(NOW + 120, wall_now=NOW, max_wait_s=120) == Wait(delay_s=120, resets_at=NOW + 120)
    assert gate(NOW + 121, wall_now=NOW, max_wait_s=120) == Refuse(resets_at=NOW + 121)
    assert gate(NOW + 1, wall_now=NOW, max_wait_s=0) == Refuse(resets_at=NOW + 1)


def test_reset_times_read_back() -> None:
    assert epoch_of("2025-10-27T06:59:09Z") == 1761548349.0
    assert epoch_of("2025-10-27T06:59:09.500Z") == 1761548349.5
    assert epoch_of(None) is None
    assert epoch_of("soon") is None


# --------------------------------------------------------------------------- where


def test_the_builtin_provider_reads_wham_usage_under_the_backend(tmp_path: Path) -> None:
    snap = load_config(str(tmp_path), {})
    assert snap.chatgpt_backend("openai")
    assert snap.plan_usage_url() == "https://chatgpt.com/backend-api/wham/usage"


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:8080/backend-api/", "http://127.0.0.1:8080/backend-api/wham/usage"),
        ("https://chatgpt.com", "https://chatgpt.com/backend-api/wham/usage"),
        ("https://chat.openai.com/", "https://chat.openai.com/backend-api/wham/usage"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/codex/usage"),
    ],
)
def test_the_usage_path_follows_the_base_as_codex_does(
    tmp_path: Path, base: str, url: str
) -> None:
    (tmp_path / "config.toml").write_text(f'chatgpt_base_url = "{base}"\n')
    assert load_config(str(tmp_path), {}).plan_usage_url() == url


def test_providers_elsewhere_are_not_the_backends(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        textwrap.dedent(
            """
            chatgpt_base_url = "http://127.0.0.1:8080/backend-api/"
            [model_providers.backend]
            name = "backend"
            base_url = "http://127.0.0.1:8080/backend-api/codex"
            requires_openai_auth = true
            [model_providers.upper]
            name = "upper"
            base_url = "HTTP://127.0.0.1:8080/backend-api//codex/"
            requires_openai_auth = true
            [model_providers.proxy]
            name = "proxy"
            base_url = "https://llm.example.com/v1"
            requires_openai_auth = true
            [model_providers.sibling]
            name = "sibling: a longer path segment, not under the backend"
            base_url = "http://127.0.0.1:8080/backend-api-proxy/codex"
            requires_openai_auth = true
            [model_providers.port]
            name = "port: a longer port, not the same origin"
            base_url = "http://127.0.0.1:80801/backend-api/codex"
            requires_openai_auth = true
            [model_providers.keyless]
            name = "keyless: never takes the login"
            base_url = "http://127.0.0.1:8080/backend-api/codex"
            """
        )
    )
    snap = load_config(str(tmp_path), {})
    assert snap.chatgpt_backend("backend") and snap.chatgpt_backend("upper")
    for other in ("proxy", "sibling", "port", "keyless", "ollama"):
        assert not snap.chatgpt_backend(other), other
    assert snap.plan_usage_url() == "http://127.0.0.1:8080/backend-api/wham/usage"
    (tmp_path / "config.toml").write_text('openai_base_url = "http://127.0.0.1:9999/v1"\n')
    assert not load_config(str(tmp_path), {}).chatgpt_backend("openai")
    (tmp_path / "config.toml").write_text(
        'chatgpt_base_url = "https://chatgpt.com:443/backend-api"\n'
        'openai_base_url = "https://chatgpt.com/backend-api/codex"\n'
    )
    assert load_config(str(tmp_path), {}).chatgpt_backend("openai")  # the default port
