"""A provider that points back at codexd's own gateway fails at once, saying why.

Codex and codexd share config.toml, so the provider Codex is meant to use through the gateway
can become codexd's own default. Without a guard, each job would send its request to the
gateway, which would make another job for the same provider, and so on.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import httpx
import pytest

from codexctl import Client
from codexctl.cli import main as codexctl_main
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.conftest import free_port, write_config


@pytest.fixture
def looped(daemon_env: dict[str, str], fake_openai: FakeOpenAI) -> Iterator[DaemonProcess]:
    """A daemon whose default provider is its own gateway, holding the gateway's token."""
    port = free_port()
    token = secrets.token_urlsafe(32)
    state = daemon_env["CODEXD_STATE_DIR"]
    os.makedirs(state, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state, "gateway.token"), os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    write_config(
        daemon_env,
        'model_provider = "codexd"\nmodel = "gpt-5"\n'
        f'openai_base_url = "{fake_openai.base_url}"\n'
        "[model_providers.codexd]\n"
        f'name = "codexd"\nbase_url = "http://127.0.0.1:{port}/v1"\nenv_key = "LOOP_TOKEN"\n'
        f'[codexd.gateway]\nenabled = true\ntcp = "127.0.0.1:{port}"\n',
    )
    daemon_env["LOOP_TOKEN"] = token
    daemon_env["OPENAI_API_KEY"] = "sk-test-key-for-the-fake-0000"
    daemon_env["GATEWAY_TCP"] = f"127.0.0.1:{port}"
    with DaemonProcess(daemon_env) as proc:
        yield proc


def test_a_job_sent_to_its_own_gateway_fails_once_and_says_why(
    looped: DaemonProcess, fake_openai: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    code = codexctl_main(["ask", "hi", "--socket", looped.socket])
    err = capsys.readouterr().err
    assert code != 0
    assert "its own gateway" in err
    with Client(looped.socket) as c:
        jobs = c.call("job/list", {})["jobs"]
    # One job: the request that came back was refused before it became a second job.
    assert len(jobs) == 1
    [job] = jobs
    assert job["state"] == "failed"
    assert job["attempts"] == 1  # a 4xx: never retried
    assert job["error"]["data"]["kind"] == "bad_request"
    assert job["error"]["data"]["upstream_code"] == "codexd_gateway_loop"
    assert job["error"]["data"]["http_status"] == 400
    assert fake_openai.stats().model_requests == 0


def test_another_daemons_mark_passes(looped: DaemonProcess, fake_openai: FakeOpenAI) -> None:
    """Only this daemon's own mark is refused: one codexd may use another's gateway."""
    token = looped.env["LOOP_TOKEN"]
    reply = httpx.post(
        f"http://{looped.env['GATEWAY_TCP']}/v1/responses",
        json={"model": "gpt-5", "input": "hi"},
        headers={
            "Authorization": f"Bearer {token}",
            "X-Codexd-Hop": "another-daemon",
            "X-Codexd-Provider": "openai",
        },
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "completed"
    assert fake_openai.stats().model_requests == 1
