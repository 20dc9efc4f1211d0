"""Jobs through a real daemon against the fake OpenAI on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from codexctl import Client
from codexctl.client import Notification
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}


def run_job(
    client: Client, body: dict[str, Any], **params: Any
) -> tuple[str, list[dict[str, Any]]]:
    """Submit with subscribe and collect every event up to the terminal one."""
    result = client.call("job/submit", {"body": body, **params})
    job_id = result["job_id"]
    events: list[dict[str, Any]] = []
    while True:
        n = client.next_notification(timeout=30)
        assert n is not None, f"no terminal event; got {[e['event']['type'] for e in events]}"
        if n.method != "job/event" or n.params["job_id"] != job_id:
            continue
        events.append(n.params)
        if n.params["event"]["type"] in TERMINAL:
            return job_id, events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"]["type"] for e in events]


def test_streamed_job_completes_with_usage_and_cost(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    with Client(upstream_daemon.socket) as c:
        job_id, events = run_job(c, {"input": "Say hello"})
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        t = types(events)
        assert t[0] == "job.queued"
        assert t[1] == "job.started"
        assert events[1]["event"]["attempt"] == 1
        assert "response.output_text.delta" in t
        assert t[-1] == "job.completed"
        done = events[-1]["event"]
        assert done["output_text"] == "Hello from the fake upstream."
        assert done["usage"]["input_tokens"] > 0
        assert done["usage"]["total_tokens"] == (
            done["usage"]["input_tokens"] + done["usage"]["output_tokens"]
        )
        assert done["cost_usd"] > 0
        job = c.call("job/get", {"job_id": job_id})
        assert job["state"] == "completed"
        assert job["attempts"] == 1
        assert job["output_text"] == done["output_text"]
        assert job["model"] == "gpt-5"
    req = fake_openai.model_requests("/v1/responses")[-1]
    assert req.body["stream"] is True
    assert req.body["model"] == "gpt-5"
    assert req.headers["authorization"] == "Bearer sk-test-key-for-the-fake-0000"


def test_chat_and_responses_give_the_same_event_types(upstream_daemon: DaemonProcess) -> None:
    with Client(upstream_daemon.socket) as c:
        _, resp = run_job(c, {"input": "hi"}, api="responses")
        _, chat = run_job(c, {"messages": [{"role": "user", "content": "hi"}]}, api="chat")
    core = {"job.queued", "job.started", "response.output_text.delta", "job.completed"}
    assert core <= set(types(resp))
    assert core <= set(types(chat))
    assert resp[-1]["event"]["output_text"] == chat[-1]["event"]["output_text"]


def test_custom_provider_uses_its_env_key(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    with Client(upstream_daemon.socket) as c:
        _, events = run_job(c, {"input": "hi"}, provider="fake")
    assert events[-1]["event"]["type"] == "job.completed"
    req = fake_openai.model_requests("/v1/responses")[-1]
    assert req.headers["authorization"] == "Bearer sk-test-key-for-the-fake-0001"


def test_no_credentials_is_a_submit_error(daemon_env: dict[str, str]) -> None:
    with DaemonProcess(daemon_env) as d, Client(d.socket) as c:
        from codexctl import RpcError

        with pytest.raises(RpcError) as info:
            c.call("job/submit", {"body": {"input": "hi"}})
        assert info.value.kind == "unauthenticated"
        assert "OPENAI_API_KEY" in info.value.message
        assert "codexctl login" in info.value.message
        assert c.call("job/list") == {"jobs": []}


def test_submit_errors_name_the_member(upstream_daemon: DaemonProcess) -> None:
    from codexctl import RpcError

    with Client(upstream_daemon.socket) as c:
        for params, needle in [
            ({"body": {"input": "x"}, "provider": "nope"}, "$.provider"),
            ({"body": {"input": "x"}, "profile": "nope"}, "$.profile"),
            ({"body": {"input": "x", "model": 5}}, "$.body.model"),
            ({"body": {}}, "$.body.input"),
            ({"body": {"input": "x"}, "api": "chat"}, "$.body.messages"),
            ({"body": {"input": "x"}, "typo": 1}, "`typo`"),
            ({"body": "x"}, "$.body"),
        ]:
            with pytest.raises(RpcError) as info:
                c.call("job/submit", params)
            assert info.value.code == -32602, params
            assert needle in info.value.message, (params, info.value.message)


def _collect(c: Client, job_id: str) -> list[Notification]:
    out = []
    while True:
        n = c.next_notification(timeout=30)
        assert n is not None
        out.append(n)
        if n.method == "job/event" and n.params["event"]["type"] in TERMINAL:
            return out
