"""A provider's `experimental_bearer_token`, as Codex CLI uses it: the provider's bearer token
(`Authorization: Bearer <token>`) when its `env_key` gives none, before any login
(codexd/auth/session.py `_choose`). The token is a secret: it never reaches the log, the
daemon's status or `config/read`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from codexctl import Client
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.conftest import write_config

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}
TOKEN = "tok-bearer-from-config-7f3a9c21"
ENV_KEY_VALUE = "sk-env-key-for-the-fake-0000"


@pytest.fixture
def keyed_fake() -> Iterator[FakeOpenAI]:
    """A fake that takes only these two keys and answers 401 to any other, as the API does."""
    with FakeOpenAI.running(api_keys=[TOKEN, ENV_KEY_VALUE]) as fake:
        yield fake


def run_job(client: Client, provider: str) -> dict[str, Any]:
    """Submit to `provider`; the job's terminal event."""
    job_id = client.call(
        "job/submit", {"provider": provider, "subscribe": True, "body": {"input": "hi"}}
    )["job_id"]
    while True:
        note = client.next_notification(timeout=30)
        assert note is not None, "the job did not finish"
        if note.method == "job/event" and note.params["job_id"] == job_id:
            event: dict[str, Any] = note.params["event"]
            if event["type"] in TERMINAL:
                return event


def test_the_bearer_token_is_sent_and_never_shown(
    daemon_env: dict[str, str], keyed_fake: FakeOpenAI
) -> None:
    base = keyed_fake.base_url
    write_config(
        daemon_env,
        '[codexd]\nlog_level = "debug"\n'
        f'[model_providers.tok]\nname = "tok"\nbase_url = "{base}"\n'
        f'experimental_bearer_token = "{TOKEN}"\n'
        # env_key set and present: Codex takes it before the bearer token
        f'[model_providers.both]\nname = "both"\nbase_url = "{base}"\nenv_key = "BOTH_KEY"\n'
        f'experimental_bearer_token = "{TOKEN}-unused"\n'
        # env_key set but absent: the bearer token stands in for it
        f'[model_providers.fallback]\nname = "fallback"\nbase_url = "{base}"\n'
        f'env_key = "ABSENT_KEY"\nexperimental_bearer_token = "{TOKEN}"\n'
        f'[model_providers.wrong]\nname = "wrong"\nbase_url = "{base}"\n'
        'experimental_bearer_token = "tok-refused-by-upstream-0000"\n',
    )
    daemon_env["BOTH_KEY"] = ENV_KEY_VALUE
    daemon_env.pop("OPENAI_API_KEY", None)
    daemon_env.pop("ABSENT_KEY", None)
    with DaemonProcess(daemon_env) as d, Client(d.socket) as c:
        assert run_job(c, "tok")["type"] == "job.completed"
        assert run_job(c, "both")["type"] == "job.completed"
        assert run_job(c, "fallback")["type"] == "job.completed"
        refused = run_job(c, "wrong")
        shown = [c.call("daemon/status"), c.call("config/read"), c.call("job/list")]
        d.stop()
        log = d.stderr()
    sent = [r.headers.get("authorization") for r in keyed_fake.model_requests()]
    assert sent[:3] == [f"Bearer {TOKEN}", f"Bearer {ENV_KEY_VALUE}", f"Bearer {TOKEN}"]
    assert refused["type"] == "job.failed"
    assert refused["error"]["data"]["kind"] == "auth_expired"
    message = refused["error"]["message"]
    assert "experimental_bearer_token of provider wrong" in message, message
    assert "tok-refused" not in message
    for text in [log, *map(repr, shown)]:
        assert TOKEN not in text
        assert "tok-refused" not in text
