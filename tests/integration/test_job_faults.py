"""Every upstream fault through a real daemon and the fake OpenAI: the terminal event, the
error kind and the exact number of upstream attempts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from codexctl import Client
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import (
    DEFAULT_REPLY_TEXT,
    FakeOpenAI,
    Outcome,
    RawReply,
    Reply,
    captive_portal,
    dropped,
    error_body,
    insufficient_quota,
    malformed,
    rate_limited,
    stalled,
    stream_failed,
    truncated_json,
    usage_limit_reached,
)
from tests.conftest import write_config

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}
# A Responses stream opens with four events before its first text delta.
FIRST_DELTA_EVENT = 4


def provider_config(fake: FakeOpenAI, *, provider: str = "", codexd: str = "") -> str:
    """A config whose `fake` provider has small retry counts and a short idle timeout."""
    return (
        f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n'
        + (f"[codexd]\n{codexd}\n" if codexd else "")
        + "[model_providers.fake]\n"
        f'name = "fake"\nbase_url = "{fake.base_url}"\nenv_key = "FAKE_KEY"\n'
        "request_max_retries = 2\nstream_max_retries = 1\nstream_idle_timeout_ms = 500\n" + provider
    )


@pytest.fixture
def start_daemon(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> Iterator[Callable[..., DaemonProcess]]:
    """Start a daemon with `provider_config(**kwargs)`; stopped at teardown."""
    started: list[DaemonProcess] = []

    def start(**kwargs: str) -> DaemonProcess:
        write_config(upstream_env, provider_config(fake_openai, **kwargs))
        proc = DaemonProcess(upstream_env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def run_job(
    client: Client, body: dict[str, Any] | None = None, **params: Any
) -> tuple[str, list[dict[str, Any]]]:
    """Submit (on provider `fake` unless told) and collect every event up to the terminal one."""
    params.setdefault("provider", "fake")
    result = client.call("job/submit", {"body": body or {"input": "Say hello"}, **params})
    job_id = result["job_id"]
    events: list[dict[str, Any]] = []
    while True:
        n = client.next_notification(timeout=30)
        assert n is not None, f"no terminal event; got {types(events)}"
        if n.method != "job/event" or n.params["job_id"] != job_id:
            continue
        events.append(n.params["event"])
        if n.params["event"]["type"] in TERMINAL:
            return job_id, events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def deltas_text(events: list[dict[str, Any]]) -> str:
    """The text a client shows: deltas, restarted on every `reset_output`."""
    text = ""
    for e in events:
        if e["type"] == "job.retrying" and e["reset_output"]:
            text = ""
        elif e["type"] == "response.output_text.delta":
            text += e["delta"]
    return text


@dataclass(frozen=True)
class Fault:
    name: str
    outcomes: tuple[Outcome, ...]
    kind: str
    attempts: int
    needle: str  # a piece of the message a person reads


# upstream_env's FAKE_KEY: the faults below quote it back (in the message, the code, the
# request id) as a proxy that echoes the request would, and no error may repeat it.
KEY = "sk-test-key-for-the-fake-0001"


def echoing(status: int, message: str, type_: str, code: str | None, param: str | None) -> RawReply:
    return RawReply(
        status,
        error_body(f"{message} ({KEY})", type_, code and f"{code}:{KEY}", param),
        headers=(("x-request-id", f"req_{KEY}"),),
    )


FATAL_FAULTS = [
    Fault(
        "three 5xx with request_max_retries = 2",
        tuple(
            echoing(status, "Bad gateway.", "server_error", "x", KEY) for status in (500, 502, 503)
        ),
        "upstream_error",
        3,
        "server error",
    ),
    Fault(
        "insufficient_quota",
        (insufficient_quota(),),
        "quota_exceeded",
        1,
        "platform.openai.com/account/billing",
    ),
    Fault(
        "usage_limit_reached",
        (usage_limit_reached(resets_in_seconds=4000),),
        "usage_limit_reached",
        1,
        "resets at",
    ),
    Fault(
        "context_length_exceeded",
        (
            echoing(
                400,
                "Your input exceeds the context window of this model.",
                "invalid_request_error",
                None,
                "input",
            ),
        ),
        "context_length_exceeded",
        1,
        "context window",
    ),
    Fault(
        "400 bad parameter",
        (
            echoing(
                400,
                "Unsupported parameter: 'temperature' is not supported with this model.",
                "invalid_request_error",
                "unsupported_parameter",
                "temperature",
            ),
        ),
        "bad_request",
        1,
        "Unsupported parameter: 'temperature' is not supported with this model.",
    ),
    Fault(
        "captive portal HTML, every attempt",
        (captive_portal(),) * 3,
        "upstream_error",
        3,
        "captive portal",
    ),
    Fault(
        "truncated JSON in the final event, every attempt",
        (truncated_json(),) * 2,
        "stream_error",
        2,
        "malformed event",
    ),
    Fault(
        "malformed data line, every attempt",
        (malformed(5),) * 2,
        "stream_error",
        2,
        "malformed event",
    ),
    Fault(
        "stream dropped, every attempt",
        (dropped(6),) * 2,
        "stream_error",
        2,
        "disconnected before completion",
    ),
    Fault(
        "response.failed with a server_error, every attempt",
        (stream_failed(f"server_error:{KEY}", f"It failed ({KEY})", after_deltas=1),) * 3,
        "upstream_error",
        2,
        "server_error",
    ),
]


@pytest.mark.parametrize("fault", FATAL_FAULTS, ids=lambda f: f.name)
def test_fault_fails_the_job_with_its_kind_after_exact_attempts(
    fault: Fault, start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(*fault.outcomes)
    with Client(start_daemon().socket) as c:
        job_id, events = run_job(c)
        job = c.call("job/get", {"job_id": job_id})

    assert len(fake_openai.model_requests()) == fault.attempts
    assert events[-1]["type"] == "job.failed"
    error = events[-1]["error"]
    assert error["data"]["kind"] == fault.kind
    assert fault.needle in error["message"]
    assert KEY not in msgspec.json.encode([events, job]).decode()
    assert [e["attempt"] for e in of_type(events, "job.started")] == list(
        range(1, fault.attempts + 1)
    )
    assert len(of_type(events, "job.retrying")) == fault.attempts - 1
    assert job["state"] == "failed"
    assert job["attempts"] == fault.attempts
    assert job["error"] == error


def test_usage_limit_carries_resets_at(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(usage_limit_reached(resets_in_seconds=4000))
    with Client(start_daemon().socket) as c:
        _, events = run_job(c)
    data = events[-1]["error"]["data"]
    assert data["resets_at"].endswith("Z")
    assert 3900 < data["retry_after_s"] <= 4000
    # The clock time, with the date in front when the reset falls on another day.
    assert re.search(
        r"resets at (\d{4}-\d\d-\d\d )?\d\d:\d\d \(in 1h0[67]m\)",
        events[-1]["error"]["message"],
    )


def test_bad_request_keeps_upstream_code_and_status(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(RawReply(400, error_body("Invalid model.", "invalid_request_error", "x")))
    with Client(start_daemon().socket) as c:
        _, events = run_job(c)
    data = events[-1]["error"]["data"]
    assert data["http_status"] == 400
    assert data["upstream_code"] == "x"
    assert data["request_id"].startswith("req_")


def test_429_with_retry_after_waits_that_long_then_succeeds(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(rate_limited(retry_after=1, try_again_in=None))
    with Client(start_daemon().socket) as c:
        _, events = run_job(c)
    requests = fake_openai.model_requests()
    assert len(requests) == 2
    (retrying,) = of_type(events, "job.retrying")
    assert retrying["error_kind"] == "rate_limited"
    assert retrying["delay_s"] == pytest.approx(1.0, abs=0.01)
    assert retrying["attempt"] == 2
    assert retrying["reset_output"] is False
    assert requests[1].time - requests[0].time >= 1.0
    assert events[-1]["type"] == "job.completed"
    assert events[-1]["output_text"] == DEFAULT_REPLY_TEXT


def test_retry_after_beyond_max_retry_wait_fails_now(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(rate_limited(retry_after=600, try_again_in=None))
    with Client(start_daemon(codexd="max_retry_wait_s = 30").socket) as c:
        _, events = run_job(c)
    assert len(fake_openai.model_requests()) == 1
    assert "job.retrying" not in types(events)
    error = events[-1]["error"]
    assert error["data"]["kind"] == "rate_limited"
    assert error["code"] == -32020
    assert error["data"]["retry_after_s"] == 600
    assert "max_retry_wait_s" in error["message"]


def test_still_429_after_request_max_retries_is_rate_limited(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(rate_limited(retry_after_ms=10, try_again_in=None), times=3)
    with Client(start_daemon().socket) as c:
        _, events = run_job(c)
    assert len(fake_openai.model_requests()) == 3
    assert events[-1]["error"]["data"]["kind"] == "rate_limited"
    assert [e["delay_s"] for e in of_type(events, "job.retrying")] == [0.01, 0.01]


@pytest.mark.parametrize(
    "outcome",
    [dropped(FIRST_DELTA_EVENT + 2), truncated_json(), stream_failed(after_deltas=3)],
    ids=["dropped", "truncated", "response.failed"],
)
def test_stream_restarted_after_output_holds_the_reply_once(
    outcome: Outcome, start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(outcome)
    with Client(start_daemon().socket) as c:
        job_id, events = run_job(c)
        job = c.call("job/get", {"job_id": job_id})
    assert len(fake_openai.model_requests()) == 2
    (retrying,) = of_type(events, "job.retrying")
    assert retrying["reset_output"] is True
    first_attempt = events[: events.index(retrying)]
    assert of_type(first_attempt, "response.output_text.delta"), "deltas before the failure"
    done = events[-1]
    assert done["type"] == "job.completed"
    assert done["output_text"] == DEFAULT_REPLY_TEXT
    assert deltas_text(events) == DEFAULT_REPLY_TEXT
    assert job["output_text"] == DEFAULT_REPLY_TEXT
    assert job["attempts"] == 2


def test_stream_restarted_before_output_does_not_reset(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(malformed(2))
    with Client(start_daemon().socket) as c:
        _, events = run_job(c)
    (retrying,) = of_type(events, "job.retrying")
    assert retrying["error_kind"] == "stream_error"
    assert retrying["reset_output"] is False
    assert events[-1]["output_text"] == DEFAULT_REPLY_TEXT


def test_stall_ends_at_the_idle_timeout_after_stream_max_retries(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(stalled(FIRST_DELTA_EVENT + 1), times=2)
    with Client(start_daemon().socket) as c:
        _, events = run_job(c)
    requests = fake_openai.model_requests()
    assert len(requests) == 2
    # The second attempt starts once the first one has been idle for 500 ms.
    assert requests[1].time - requests[0].time >= 0.5
    error = events[-1]["error"]
    assert error["data"]["kind"] == "stream_error"
    assert "stream_idle_timeout_ms" in error["message"]
    (retrying,) = of_type(events, "job.retrying")
    assert retrying["reset_output"] is True
    # The stalled connections were closed by the daemon, not left hanging.
    fake_openai.wait_for(lambda s: s.in_flight == 0 and s.disconnects == 2)


def test_chat_stream_drop_is_retried_too(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(drop_after=3))
    with Client(start_daemon().socket) as c:
        _, events = run_job(c, {"messages": [{"role": "user", "content": "hi"}]}, api="chat")
    assert len(fake_openai.model_requests("/v1/chat/completions")) == 2
    assert of_type(events, "job.retrying")[0]["reset_output"] is True
    assert events[-1]["output_text"] == DEFAULT_REPLY_TEXT
    assert deltas_text(events) == DEFAULT_REPLY_TEXT
