"""The ChatGPT plan's usage windows (`/wham/usage`) through a real daemon in ChatGPT mode:
shown by `ratelimits/read` and `codexctl limits`, gating the provider while a window is spent,
read again after a usage limit, and read once for many jobs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from codexctl import Client
from codexd.testing.fake_openai import RawReply, error_body, plan_usage, usage_limit_reached
from tests.integration._chatgpt import (
    Setup,
    assert_no_secrets,
    chatgpt_setup,
    read_auth_json,
    run_job,
    token_strings,
    wait_notification,
    write_login,
)

CHATGPT_PATH = "/backend-api/codex/responses"
MANY = 40


@pytest.fixture
def setup(daemon_env: dict[str, str]) -> Iterator[Setup]:
    extra = f"[codexd.rate_limits.openai]\nmax_concurrency = {MANY * 2}\n"
    with chatgpt_setup(daemon_env, extra_config=extra) as s:
        write_login(s.env, s.issuer.issue_tokens())
        yield s


def stamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def codexctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def limit_rows(shown: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """`codexctl limits`' rows: name → what it says."""
    assert shown.returncode == 0, shown.stderr
    return dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1)
        for line in shown.stdout.splitlines()
        if line.startswith("    ")
    )


def test_ratelimits_read_and_codexctl_limits_show_the_plans_windows_and_credits(
    setup: Setup,
) -> None:
    body = plan_usage(
        primary_used_percent=42,
        secondary_used_percent=7,
        primary_resets_in_s=2 * 3600,
        credits={"has_credits": True, "unlimited": False, "balance": "9.99"},
    )
    setup.fake.set_plan_usage(body)
    primary_reset = body["rate_limit"]["primary_window"]["reset_at"]
    secondary_reset = body["rate_limit"]["secondary_window"]["reset_at"]
    with setup.daemon() as d, Client(d.socket) as c, Client(d.socket) as watcher:
        watcher.call("events/subscribe", {"topics": ["ratelimits"]})
        assert run_job(c)[-1]["type"] == "job.completed"
        (entry,) = c.call("ratelimits/read", {"provider": "openai"})["providers"]
        updated = wait_notification(watcher, "ratelimits/updated")
        while updated["upstream"].get("primary") is None:
            updated = wait_notification(watcher, "ratelimits/updated")
        shown = codexctl(d.env, "limits", "--provider", "openai")
    assert entry["upstream"]["primary"] == {
        "used_percent": 42.0,
        "window_minutes": 300,
        "resets_at": stamp(primary_reset),
    }
    assert entry["upstream"]["secondary"] == {
        "used_percent": 7.0,
        "window_minutes": 10080,
        "resets_at": stamp(secondary_reset),
    }
    assert entry["upstream"]["credits"] == {
        "has_credits": True,
        "unlimited": False,
        "balance": "9.99",
    }
    assert updated["provider"] == "openai"
    assert updated["upstream"]["primary"]["used_percent"] == 42.0
    (read,) = setup.fake.plan_usage_requests()
    tokens_in_use = setup.fake.model_requests(CHATGPT_PATH)[-1].headers["authorization"]
    assert read.headers["authorization"] == tokens_in_use
    assert read.headers["chatgpt-account-id"] == "acct_fake0001"
    assert read.headers["user-agent"].startswith("codex_cli_rs/")

    rows = limit_rows(shown)
    five_hours = r"\[#{8}-{12}\] 42% used, resets in (?:2h|1h59m) \(.+\)"
    assert re.fullmatch(five_hours, rows["5h window"]), rows
    week = r"\[#-{19}\] 7% used, resets in (?:5d|4d23h) \(\d{4}-\d\d-\d\d .+\)"
    assert re.fullmatch(week, rows["7d window"]), rows
    assert rows["credits"] == "balance 9.99"


def test_limits_read_the_plan_before_any_job(setup: Setup) -> None:
    setup.fake.set_plan_usage(plan_usage(primary_used_percent=64, secondary_used_percent=21))
    with setup.daemon() as d, Client(d.socket) as c:
        rows = limit_rows(codexctl(d.env, "limits", "--provider", "openai"))
        everyone = c.call("ratelimits/read", {})["providers"]
    assert rows["5h window"].startswith("[#############-------] 64% used, resets in ")
    assert rows["7d window"].startswith("[####----------------] 21% used, resets in ")
    assert rows["credits"] == "none"
    # the other providers take no ChatGPT login: nothing of the plan's is theirs
    assert [p["upstream"].get("primary") is not None for p in everyone] == [
        p["provider"] == "openai" for p in everyone
    ]
    assert setup.fake.stats().plan_usage_reads == 1
    assert setup.fake.model_requests() == []


def test_a_spent_window_fails_the_job_at_once_and_nothing_goes_upstream(setup: Setup) -> None:
    body = plan_usage(primary_used_percent=100, primary_resets_in_s=3 * 3600)
    setup.fake.set_plan_usage(body)
    reset = body["rate_limit"]["primary_window"]["reset_at"]
    with setup.daemon() as d, Client(d.socket) as c:
        events = run_job(c)
        again = run_job(c)
        asked = codexctl(d.env, "ask", "hi")
        shown = codexctl(d.env, "limits", "--provider", "openai")
        jobs = c.call("job/list", {})["jobs"]
    assert [e["type"] for e in events] == ["job.failed"]
    error = events[-1]["error"]
    assert error["code"] == -32022
    assert error["data"]["kind"] == "usage_limit_reached"
    assert error["data"]["retryable"] is False
    assert epoch(error["data"]["resets_at"]) == reset
    assert "ChatGPT usage limit reached (plus plan); resets at" in error["message"]
    assert again[-1]["error"]["data"]["kind"] == "usage_limit_reached"
    assert asked.returncode == 5
    assert "usage limit reached" in asked.stderr
    assert all(job["attempts"] == 0 for job in jobs)
    rows = limit_rows(shown)
    assert re.fullmatch(r"\[#{20}\] 100% used, resets in (?:3h|2h59m) \(.+\)", rows["5h window"])
    assert rows["credits"] == "none"
    assert setup.fake.model_requests() == []
    assert setup.fake.stats().plan_usage_reads == 1  # three jobs, one read


def test_a_spent_window_that_resets_within_max_retry_wait_holds_the_job_until_then(
    setup: Setup,
) -> None:
    with setup.daemon() as d, Client(d.socket) as c:
        body = plan_usage(primary_used_percent=100, primary_resets_in_s=3)
        setup.fake.set_plan_usage(body)
        reset = body["rate_limit"]["primary_window"]["reset_at"]
        events = run_job(c)
    assert events[-1]["type"] == "job.completed", events
    (sent,) = setup.fake.model_requests(CHATGPT_PATH)
    # the fake stamps requests with this process's monotonic clock
    sent_at = time.time() - (time.monotonic() - sent.time)
    assert sent_at >= reset - 0.05


def test_a_job_ending_in_usage_limit_reached_reads_the_plan_again(setup: Setup) -> None:
    setup.fake.set_plan_usage(plan_usage(primary_used_percent=12))
    setup.fake.script(usage_limit_reached(resets_in_seconds=3600), path=CHATGPT_PATH)
    with setup.daemon() as d, Client(d.socket) as c, Client(d.socket) as watcher:
        watcher.call("events/subscribe", {"topics": ["ratelimits"]})
        failed = run_job(c)[-1]
        assert failed["error"]["data"]["kind"] == "usage_limit_reached"
        # what the windows said: the first read, the 429's x-codex headers, the read after it
        seen: list[float] = []
        while seen[-2:] != [100.0, 12.0]:
            primary = wait_notification(watcher, "ratelimits/updated")["upstream"].get("primary")
            if primary is not None and (not seen or seen[-1] != primary["used_percent"]):
                seen.append(primary["used_percent"])
        # the newer read wins over the 429's headers: the next job goes, and no read is due
        assert run_job(c)[-1]["type"] == "job.completed"
    assert seen == [12.0, 100.0, 12.0]
    assert setup.fake.stats().plan_usage_reads == 2
    first, second = setup.fake.plan_usage_requests()
    assert second.headers["authorization"] == first.headers["authorization"]
    assert [r.status for r in setup.fake.model_requests(CHATGPT_PATH)] == [429, 200]


def test_many_jobs_share_one_read(setup: Setup) -> None:
    with setup.daemon() as d, Client(d.socket) as c:
        c.call("events/subscribe", {"topics": ["jobs"]})
        ids = {
            c.call("job/submit", {"body": {"input": "hi"}, "subscribe": False})["job_id"]
            for _ in range(MANY)
        }
        states: dict[str, str] = {}
        while len(states) < len(ids):
            note = c.next_notification(timeout=60)
            assert note is not None
            if note.method == "job/finished":
                states[note.params["job"]["id"]] = note.params["job"]["state"]
        assert run_job(c)[-1]["type"] == "job.completed"
    assert set(states.values()) == {"completed"}
    assert len(setup.fake.model_requests(CHATGPT_PATH)) == MANY + 1
    assert setup.fake.stats().plan_usage_reads == 1


@pytest.mark.parametrize(
    "answer",
    [
        RawReply(500, b'{"error": {"message": "boom"}}'),
        RawReply(200, b"<html>not json</html>", content_type="text/html"),
        RawReply(200, b'{"rate_limit": "full"}'),
    ],
    ids=["http-500", "not-json", "wrong-shape"],
)
def test_a_failed_read_is_logged_once_and_jobs_go_on(setup: Setup, answer: RawReply) -> None:
    setup.fake.set_plan_usage(answer)
    with setup.daemon() as d, Client(d.socket) as c:
        assert run_job(c)[-1]["type"] == "job.completed"
        assert run_job(c)[-1]["type"] == "job.completed"
        (entry,) = c.call("ratelimits/read", {"provider": "openai"})["providers"]
        log = d.stderr()
    assert entry["upstream"].get("primary") is None
    assert log.count("cannot read the ChatGPT plan's usage windows") == 1, log
    assert len(setup.fake.model_requests(CHATGPT_PATH)) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_read_is_logged_without_the_token_and_the_job_still_completes(
    setup: Setup, status: int
) -> None:
    # The backend's refusal quotes the bearer it was sent: what a careless log would copy.
    tokens = token_strings(read_auth_json(setup.env))
    access = read_auth_json(setup.env)["tokens"]["access_token"]  # type: ignore[index]
    quoted = f"Bearer {access} is not valid for this workspace"
    setup.fake.set_plan_usage(RawReply(status, error_body(quoted, "invalid_request_error", None)))
    with setup.daemon() as d, Client(d.socket) as c:
        events = run_job(c)
        log = d.stderr()
    assert events[-1]["type"] == "job.completed"
    (read,) = setup.fake.plan_usage_requests()
    assert read.status == status
    warnings = [line for line in log.splitlines() if "usage windows" in line]
    assert len(warnings) == 1 and f"HTTP {status}" in warnings[0], warnings
    assert access in tokens
    assert_no_secrets(tokens, log)  # not the access token (nor the id or refresh token)
