"""`POST /v1/embeddings` through the gateway with the official `openai` SDK: the same vectors
as straight from the fake (base64, the SDK's default, and floats), the provider's reply
passed on as it came, and in ChatGPT mode an OpenAI error saying an API key is needed."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codexctl import Client
from codexctl.protocol import JobCancelled
from codexd.testing import fake_openai as fo
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.conftest import require_module, write_config
from tests.integration._chatgpt import Setup, chatgpt_setup, write_login
from tests.integration.test_gateway import gateway_socket, jobs_of, raw_unix, unix_sdk

openai = require_module("openai", minversion="3")

MODEL = "text-embedding-3-small"
KEY = "sk-test-key-for-the-fake-0000"
TEXTS = ["the quick brown fox", "jumps over", "the lazy dog"]


@pytest.fixture
def gateway(daemon_env: dict[str, str], fake_openai: FakeOpenAI) -> Iterator[DaemonProcess]:
    write_config(
        daemon_env,
        f'openai_base_url = "{fake_openai.base_url}"\nmodel = "gpt-5"\n'
        "[codexd.gateway]\nenabled = true\n",
    )
    daemon_env["OPENAI_API_KEY"] = KEY
    with DaemonProcess(daemon_env) as proc:
        yield proc


def direct_sdk(fake: FakeOpenAI) -> Any:
    return openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)


def vectors(reply: Any) -> list[list[float]]:
    return [list(d.embedding) for d in sorted(reply.data, key=lambda d: d.index)]


@pytest.mark.parametrize("encoding_format", [None, "float"])
def test_the_sdk_gets_the_same_vectors_as_from_upstream(
    gateway: DaemonProcess, fake_openai: FakeOpenAI, encoding_format: str | None
) -> None:
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    via_gateway = unix_sdk(gateway).embeddings.create(model=MODEL, input=TEXTS, **extra)
    direct = direct_sdk(fake_openai).embeddings.create(model=MODEL, input=TEXTS, **extra)

    assert vectors(via_gateway) == vectors(direct)
    assert len(vectors(via_gateway)) == 3 and len(vectors(via_gateway)[0]) == 16
    assert via_gateway.model == MODEL
    assert via_gateway.usage.prompt_tokens == direct.usage.prompt_tokens > 0
    assert via_gateway.usage.total_tokens == direct.usage.total_tokens
    sent = [r.body for r in fake_openai.model_requests("/v1/embeddings")]
    # What the SDK asked the gateway for is what went upstream.
    assert sent[0] == sent[1]
    assert sent[0]["encoding_format"] == (encoding_format or "base64")

    (job,) = [j for j in jobs_of(gateway) if j["api"] == "embeddings"]
    assert job["state"] == "completed" and job["client"] == "OpenAI"
    assert job["usage"]["input_tokens"] == direct.usage.prompt_tokens


def test_the_reply_is_the_providers_as_it_came(
    gateway: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    body = {"model": MODEL, "input": "one", "encoding_format": "base64", "dimensions": 8}
    with raw_unix(gateway) as http:
        via_gateway = http.post("/v1/embeddings", json=body)
    direct = httpx.post(
        fake_openai.base_url + "/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert via_gateway.status_code == 200, via_gateway.text
    assert via_gateway.headers["content-type"].startswith("application/json")
    assert via_gateway.json() == direct.json()
    assert via_gateway.headers["x-request-id"].startswith("job_")


def test_the_documented_embeddings_snippet_works(
    gateway: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "gateway.md").read_text()
    snippet = next(
        block
        for block in re.findall(r"```python\n(.*?)```", doc, re.S)
        if "client.embeddings.create" in block
    )
    exec(compile(snippet, "docs/gateway.md", "exec"), {"client": unix_sdk(gateway)})
    assert capsys.readouterr().out.strip() == str(fo.DEFAULT_EMBEDDING_DIMENSIONS)


def test_a_bad_embeddings_body_is_an_openai_400(gateway: DaemonProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        unix_sdk(gateway).embeddings.create(model=MODEL, input=[])
    assert info.value.status_code == 400
    assert info.value.body["param"] == "input"


def test_a_client_that_goes_away_cancels_its_embeddings_job(
    gateway: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(fo.stalled(after=0), path="/v1/embeddings")
    body = b'{"model": "text-embedding-3-small", "input": "never answered"}'
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(gateway_socket(gateway))
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nhost: codexd\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        fake_openai.wait_for(lambda s: s.in_flight == 1, timeout=10)
    # The daemon closes the upstream request of the job it cancelled.
    fake_openai.wait_for(lambda s: s.disconnects == 1, timeout=10)
    (job,) = jobs_of(gateway)
    with Client(gateway.socket) as c:
        events = [note.event for note in c.events(job["id"])]
        state = c.job(job["id"]).state
    assert isinstance(events[-1], JobCancelled) and state == "cancelled"


@pytest.fixture
def chatgpt(daemon_env: dict[str, str]) -> Iterator[Setup]:
    with chatgpt_setup(daemon_env, extra_config="[codexd.gateway]\nenabled = true\n") as s:
        write_login(s.env, s.issuer.issue_tokens())
        yield s


def test_chatgpt_mode_answers_that_an_api_key_is_needed(chatgpt: Setup) -> None:
    with chatgpt.daemon() as d:
        with pytest.raises(openai.AuthenticationError) as info:
            unix_sdk(d).embeddings.create(model=MODEL, input="hi")
        assert jobs_of(d) == []
    err = info.value
    assert err.status_code == 401
    assert "need an API key" in err.message and "codexctl login --api-key" in err.message
    assert err.body["type"] == "invalid_request_error"
    assert err.response.headers["x-should-retry"] == "false"
    assert chatgpt.fake.model_requests("/v1/embeddings") == []
