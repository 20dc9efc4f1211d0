"""Embeddings through a real daemon and the fake: `job/submit` with `api: "embeddings"` over
the socket (events, vectors, usage ledger, retries), and refused at submit in ChatGPT mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from codexctl import Client
from codexctl.protocol import RpcError
from codexd.jobs import MAX_KEPT_LINE_BYTES
from codexd.testing import fake_openai as fo
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from codexd.upstream.client import MAX_REPLY_BYTES
from tests.conftest import write_config
from tests.integration._chatgpt import Setup, chatgpt_setup, run_job, write_login

EMBEDDINGS_PATH = "/v1/embeddings"
PRICED = "text-embedding-3-small"
INPUT_PRICE = 0.02  # USD per 1M input tokens, set in the config below


def embeddings_config(fake: FakeOpenAI, extra: str = "") -> str:
    return (
        f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n'
        "[model_providers.openai_like]\n"
        f'name = "openai-like"\nbase_url = "{fake.base_url}"\nenv_key = "FAKE_KEY"\n'
        f"{extra}"
        f'[codexd.prices."{PRICED}"]\ninput = {INPUT_PRICE}\ncached_input = {INPUT_PRICE}\n'
        "output = 0.0\n"
    )


@pytest.fixture
def embeddings_daemon(
    daemon_env: dict[str, str], fake_openai: FakeOpenAI
) -> Iterator[DaemonProcess]:
    write_config(daemon_env, embeddings_config(fake_openai))
    daemon_env["OPENAI_API_KEY"] = "sk-test-key-for-the-fake-0000"
    daemon_env["FAKE_KEY"] = "sk-test-key-for-the-fake-0001"
    with DaemonProcess(daemon_env) as proc:
        yield proc


def submit_embeddings(client: Client, body: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    """The job's events, to its terminal one."""
    result = client.call("job/submit", {"api": "embeddings", "body": body, **params})
    events: list[dict[str, Any]] = []
    while True:
        note = client.next_notification(timeout=30)
        assert note is not None, f"no terminal event; got {[e['type'] for e in events]}"
        if note.method != "job/event" or note.params["job_id"] != result["job_id"]:
            continue
        events.append({"job_id": result["job_id"], **note.params["event"]})
        if note.params["event"]["type"] in ("job.completed", "job.failed", "job.cancelled"):
            return events


def test_an_embeddings_job_brings_the_vectors_and_a_priced_ledger_row(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    body = {"model": PRICED, "input": ["alpha", "beta gamma"], "user": "u-7", "extra_x": 1}
    with Client(embeddings_daemon.socket) as c:
        events = submit_embeddings(c, body)
        job = c.call("job/get", {"job_id": events[0]["job_id"]})
        usage = c.call("usage/read", {"group_by": ["model"]})

    assert [e["type"] for e in events] == [
        "job.queued",
        "job.started",
        "embeddings.result",
        "job.completed",
    ]
    expected = fo.embeddings_reply(body, PRICED)
    result = events[2]
    assert result["object"] == "list"
    assert result["model"] == PRICED
    assert result["data"] == expected["data"]
    assert len(result["data"]) == 2 and len(result["data"][1]["embedding"]) == 16
    tokens = expected["usage"]["prompt_tokens"]
    assert tokens == fo.count_tokens("alpha") + fo.count_tokens("beta gamma")

    done = events[-1]
    assert "output_text" not in done
    assert done["usage"] == {
        "input_tokens": tokens,
        "cached_input_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": tokens,
    }
    assert done["cost_usd"] == pytest.approx(tokens * INPUT_PRICE / 1e6)
    assert job["api"] == "embeddings" and job["state"] == "completed"
    assert job["output_text"] is None

    # Sent as asked: the body untouched (unknown members too), not streamed, with the key.
    sent = fake_openai.model_requests(EMBEDDINGS_PATH)
    assert len(sent) == 1
    assert sent[0].body == body
    assert sent[0].headers["authorization"] == "Bearer sk-test-key-for-the-fake-0000"
    assert sent[0].headers["accept"] == "application/json"

    (row,) = [r for r in usage["rows"] if r["model"] == PRICED]
    assert row["requests"] == 1
    assert row["input_tokens"] == tokens and row["output_tokens"] == 0
    assert row["cost_usd"] == pytest.approx(tokens * INPUT_PRICE / 1e6)
    assert row["estimated"] is False


def test_base64_token_arrays_and_an_unpriced_model(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    body = {
        "model": "house-embedder",
        "input": [[1, 2, 3], [4, 5]],
        "encoding_format": "base64",
        "dimensions": 4,
    }
    with Client(embeddings_daemon.socket) as c:
        events = submit_embeddings(c, body, provider="openai_like")
        usage = c.call("usage/read", {"group_by": ["model"]})
    result = next(e for e in events if e["type"] == "embeddings.result")
    assert result["data"] == fo.embeddings_reply(body, "house-embedder")["data"]
    assert all(isinstance(d["embedding"], str) for d in result["data"])
    assert fake_openai.model_requests(EMBEDDINGS_PATH)[0].headers["authorization"] == (
        "Bearer sk-test-key-for-the-fake-0001"
    )
    (row,) = usage["rows"]
    assert row["input_tokens"] == 5  # the token arrays' lengths
    assert row["cost_usd"] == pytest.approx(5 * 1.25 / 1e6)  # the default price
    assert row["estimated"] is True


def test_a_429_is_retried_and_the_job_completes(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(fo.rate_limited(retry_after_ms=10, try_again_in=None), path=EMBEDDINGS_PATH)
    body = {"model": PRICED, "input": "retry me"}
    with Client(embeddings_daemon.socket) as c:
        events = submit_embeddings(c, body)
        job = c.call("job/get", {"job_id": events[0]["job_id"]})
    types = [e["type"] for e in events]
    assert types == [
        "job.queued",
        "job.started",
        "job.retrying",
        "job.started",
        "embeddings.result",
        "job.completed",
    ]
    retry = events[2]
    assert retry["error_kind"] == "rate_limited" and retry["attempt"] == 2
    assert events[4]["data"] == fo.embeddings_reply(body, PRICED)["data"]
    assert job["attempts"] == 2
    assert [r.status for r in fake_openai.model_requests(EMBEDDINGS_PATH)] == [429, 200]


@pytest.mark.parametrize("fault", [fo.dropped(after=0), fo.truncated_json()])
def test_a_reply_cut_short_is_retried_as_a_request(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI, fault: fo.Reply
) -> None:
    fake_openai.script(fault, path=EMBEDDINGS_PATH)
    body = {"model": PRICED, "input": "cut short"}
    with Client(embeddings_daemon.socket) as c:
        events = submit_embeddings(c, body)
    retry = next(e for e in events if e["type"] == "job.retrying")
    assert retry["error_kind"] == "upstream_error" and retry["attempt"] == 2
    assert retry["reset_output"] is False
    assert events[-2]["data"] == fo.embeddings_reply(body, PRICED)["data"]
    assert events[-1]["type"] == "job.completed"
    assert len(fake_openai.model_requests(EMBEDDINGS_PATH)) == 2


def _body_of_reply_size(low: int, high: int) -> tuple[dict[str, Any], int]:
    """A body of 8 inputs whose reply from the fake is between `low` and `high` bytes, and
    that size (the vectors' length is found from a small reply, then checked)."""
    inputs = [f"text {i}" for i in range(8)]

    def size(dimensions: int) -> int:
        body = {"model": PRICED, "input": inputs, "dimensions": dimensions}
        return len(json.dumps(fo.embeddings_reply(body, PRICED), separators=(",", ":")))

    per_dimension = size(2000) / 2000
    dimensions = int((low + high) / 2 / per_dimension)
    got = size(dimensions)
    while not low < got <= high:
        dimensions = int(dimensions * ((low + high) / 2) / got)
        got = size(dimensions)
    return {"model": PRICED, "input": inputs, "dimensions": dimensions}, got


def replay(client: Client, job_id: str) -> list[dict[str, Any]]:
    """The job's retained events, from its first, by re-attaching."""
    client.call("job/subscribe", {"job_id": job_id, "after_seq": 0})
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in ("job.completed", "job.failed"):
        note = client.next_notification(timeout=30)
        assert note is not None, f"no terminal event; got {[e['type'] for e in events]}"
        if note.method == "job/event" and note.params["job_id"] == job_id:
            events.append(note.params["event"])
    return events


def test_a_reply_just_under_the_bound_keeps_the_older_jobs(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    """One reply of nearly MAX_REPLY_BYTES comes through and stays readable, and so does the
    job that finished before it: one reply does not push out every finished job."""
    body, size = _body_of_reply_size(MAX_REPLY_BYTES * 99 // 100, MAX_REPLY_BYTES)
    with Client(embeddings_daemon.socket) as c:
        older = submit_embeddings(c, {"model": PRICED, "input": "older"})
        large = submit_embeddings(c, body)
        assert large[-1]["type"] == "job.completed", large[-1]
        older_job = c.call("job/get", {"job_id": older[0]["job_id"]})
        large_job = c.call("job/get", {"job_id": large[0]["job_id"]})
        older_again = replay(c, older[0]["job_id"])
        large_again = replay(c, large[0]["job_id"])
    assert older_job["state"] == large_job["state"] == "completed"
    assert [e["type"] for e in older_again] == [e["type"] for e in older[:-1]] + ["job.completed"]
    result = next(e for e in large_again if e["type"] == "embeddings.result")
    assert len(result["data"]) == 8 and len(result["data"][7]["embedding"]) == body["dimensions"]
    assert result["data"][7] == fo.embeddings_reply(body, PRICED)["data"][7]
    assert size > MAX_KEPT_LINE_BYTES


def test_a_reply_over_the_bound_fails_the_job_at_once(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    body, _ = _body_of_reply_size(MAX_REPLY_BYTES, MAX_REPLY_BYTES * 101 // 100)
    with Client(embeddings_daemon.socket) as c:
        events = submit_embeddings(c, body)
        job = c.call("job/get", {"job_id": events[0]["job_id"]})
    assert [e["type"] for e in events] == ["job.queued", "job.started", "job.failed"]
    error = events[-1]["error"]
    assert error["data"]["kind"] == "upstream_error" and error["data"]["retryable"] is False
    assert error["message"] == (
        f"upstream's reply is larger than {MAX_REPLY_BYTES >> 20} MiB, more than codexd holds "
        'for one job: send fewer inputs per request, or ask for encoding_format "base64"'
    )
    assert job["state"] == "failed" and job["attempts"] == 1
    assert len(fake_openai.model_requests(EMBEDDINGS_PATH)) == 1  # not asked again


def test_retries_stop_at_request_max_retries(
    daemon_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    write_config(daemon_env, embeddings_config(fake_openai, "request_max_retries = 1\n"))
    daemon_env["FAKE_KEY"] = "sk-test-key-for-the-fake-0001"
    fake_openai.script(fo.server_error(500), path=EMBEDDINGS_PATH, times=3)
    with DaemonProcess(daemon_env) as d, Client(d.socket) as c:
        events = submit_embeddings(c, {"model": PRICED, "input": "x"}, provider="openai_like")
    assert events[-1]["type"] == "job.failed"
    assert events[-1]["error"]["data"]["kind"] == "upstream_error"
    assert len(fake_openai.model_requests(EMBEDDINGS_PATH)) == 2  # 1 + request_max_retries


@pytest.mark.parametrize(
    ("body", "member"),
    [
        ({"input": "no model"}, "$.body.model"),
        ({"model": PRICED}, "$.body.input"),
        ({"model": PRICED, "input": []}, "$.body.input"),
        ({"model": PRICED, "input": ["ok", 3]}, "$.body.input"),
    ],
)
def test_a_bad_embeddings_body_is_refused_naming_the_member(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI, body: dict[str, Any], member: str
) -> None:
    with Client(embeddings_daemon.socket) as c, pytest.raises(RpcError) as info:
        c.call("job/submit", {"api": "embeddings", "body": body})
    assert info.value.kind == "invalid_params"
    assert member in info.value.message
    assert fake_openai.model_requests(EMBEDDINGS_PATH) == []


# --------------------------------------------------------------------------- ChatGPT mode


@pytest.fixture
def chatgpt(daemon_env: dict[str, str]) -> Iterator[Setup]:
    with chatgpt_setup(daemon_env) as s:
        write_login(s.env, s.issuer.issue_tokens())
        yield s


def test_chatgpt_mode_refuses_embeddings_at_submit(chatgpt: Setup) -> None:
    with chatgpt.daemon() as d, Client(d.socket) as c:
        with pytest.raises(RpcError) as info:
            c.call("job/submit", {"api": "embeddings", "body": {"model": PRICED, "input": "hi"}})
        jobs = c.call("job/list", {})["jobs"]
        # The same login still serves the Responses API.
        assert run_job(c)[-1]["type"] == "job.completed"
    err = info.value
    assert err.kind == "unauthenticated" and err.code == -32010
    assert "need an API key" in err.message
    assert "codexctl login --api-key" in err.message and "OPENAI_API_KEY" in err.message
    assert jobs == []
    assert chatgpt.fake.model_requests(EMBEDDINGS_PATH) == []


# --------------------------------------------------------------------------- codexctl embed


def codexctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_codexctl_embed_prints_one_line_of_numbers_per_text(
    embeddings_daemon: DaemonProcess,
) -> None:
    env = embeddings_daemon.env
    done = codexctl(env, "embed", "--model", PRICED, "--dimensions", "5", "alpha", "beta gamma")
    assert done.returncode == 0, done.stderr
    body = {"model": PRICED, "input": ["alpha", "beta gamma"], "dimensions": 5}
    expected = [d["embedding"] for d in fo.embeddings_reply(body, PRICED)["data"]]
    lines = done.stdout.splitlines()
    assert [[float(x) for x in line.split()] for line in lines] == expected
    assert all("e" not in line for line in lines)  # plain decimals, never exponents

    as_json = codexctl(env, "embed", "--json", "--model", PRICED, "alpha")
    assert as_json.returncode == 0, as_json.stderr
    reply = json.loads(as_json.stdout)
    assert reply == fo.embeddings_reply({"model": PRICED, "input": ["alpha"]}, PRICED)


def test_codexctl_embed_in_chatgpt_mode_exits_4_saying_what_to_do(chatgpt: Setup) -> None:
    with chatgpt.daemon() as d:
        done = codexctl(d.env, "embed", "--model", PRICED, "hello")
    assert done.returncode == 4
    assert done.stdout == ""
    assert "need an API key" in done.stderr and "codexctl login --api-key" in done.stderr


def test_codexctl_embed_says_in_one_line_when_a_vector_is_not_numbers(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    reply = fo.embeddings_reply({"model": PRICED, "input": ["a", "b"]}, PRICED)
    reply["data"][1]["embedding"] = [0.5, "x"]
    fake_openai.script(fo.RawReply(200, json.dumps(reply).encode()), path=EMBEDDINGS_PATH)
    done = codexctl(embeddings_daemon.env, "embed", "--model", PRICED, "a", "b")
    assert done.returncode == 1
    assert done.stdout == ""  # not the first vector without the second
    assert done.stderr == (
        "codexctl: the provider sent an embedding (index 1) that is not an array of numbers: "
        "check the provider's base_url, or print the reply as it came with --json\n"
    )


def test_codexctl_embed_takes_a_profile(
    embeddings_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    env = embeddings_daemon.env
    with open(os.path.join(env["CODEX_HOME"], "other.config.toml"), "w") as f:
        f.write('model_provider = "openai_like"\n')
    done = codexctl(env, "embed", "--model", PRICED, "--profile", "other", "alpha")
    assert done.returncode == 0, done.stderr
    before = codexctl(env, "--profile", "other", "embed", "--model", PRICED, "beta")
    assert before.returncode == 0, before.stderr
    sent = fake_openai.model_requests(EMBEDDINGS_PATH)
    assert [r.headers["authorization"] for r in sent] == [
        "Bearer sk-test-key-for-the-fake-0001"  # openai_like's key, not openai's
    ] * 2
    with Client(embeddings_daemon.socket) as c:
        jobs = c.call("job/list")["jobs"]
    assert [j["provider"] for j in jobs] == ["openai_like"] * 2
