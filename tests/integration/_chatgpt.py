"""Shared by the ChatGPT login tests: a fake OpenAI with its OAuth issuer, a daemon pointed at
both, auth.json written as a login would, and a check that no secret leaked."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from codexctl import Client
from codexd.auth.authfile import AuthDocument, auth_file_path, write_auth_file
from codexd.auth.tokens import Secret
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_issuer import FakeIssuer, Tokens
from codexd.testing.fake_openai import FakeOpenAI

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}


def chatgpt_config(fake: FakeOpenAI, extra: str = "") -> str:
    return (
        'model = "gpt-5"\n'
        f'chatgpt_base_url = "{fake.chatgpt_base_url}"\n'
        "[codexd]\n"
        f'auth_issuer = "{fake.issuer.origin}"\n' + extra
    )


def write_config(env: dict[str, str], text: str) -> None:
    with open(os.path.join(env["CODEX_HOME"], "config.toml"), "w") as f:
        f.write(text)


def write_login(env: dict[str, str], tokens: Tokens, *, at: datetime | None = None) -> None:
    """auth.json as Codex's login writes it."""
    doc = AuthDocument.chatgpt_login(
        id_token=Secret(tokens.id_token),
        access_token=Secret(tokens.access_token),
        refresh_token=Secret(tokens.refresh_token),
        api_key=None,
        now=at or datetime.now(UTC),
    )
    write_auth_file(auth_file_path(env["CODEX_HOME"]), doc)


def read_auth_json(env: dict[str, str]) -> dict[str, Any] | None:
    try:
        with open(auth_file_path(env["CODEX_HOME"]), "rb") as f:
            value = msgspec.json.decode(f.read())
    except FileNotFoundError:
        return None
    assert isinstance(value, dict)
    return value


@dataclass
class Setup:
    env: dict[str, str]
    fake: FakeOpenAI

    @property
    def issuer(self) -> FakeIssuer:
        return self.fake.issuer

    def daemon(self) -> DaemonProcess:
        return DaemonProcess(self.env, args=["--log-level", "debug"])


@contextmanager
def chatgpt_setup(
    daemon_env: dict[str, str], *, extra_config: str = "", **issuer_kwargs: Any
) -> Iterator[Setup]:
    issuer_kwargs.setdefault("device_interval_s", 1)
    with FakeOpenAI.running(issuer=FakeIssuer(**issuer_kwargs)) as fake:
        write_config(daemon_env, chatgpt_config(fake, extra_config))
        yield Setup(daemon_env, fake)


class Recorder:
    """Everything a client received, re-encoded, for the secret check."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def add(self, value: Any) -> Any:
        self.seen.append(msgspec.json.encode(value))
        return value

    def text(self) -> str:
        return b"\n".join(self.seen).decode()


def run_job(
    client: Client, body: dict[str, Any] | None = None, recorder: Recorder | None = None
) -> list[dict[str, Any]]:
    """Submit with subscribe; the job's events up to the terminal one."""
    result = client.call("job/submit", {"body": body or {"input": "hi"}})
    if recorder is not None:
        recorder.add(result)
    events: list[dict[str, Any]] = []
    while True:
        note = client.next_notification(timeout=30)
        assert note is not None, f"no terminal event; got {[e['type'] for e in events]}"
        if recorder is not None:
            recorder.add(note.params)
        if note.method != "job/event" or note.params["job_id"] != result["job_id"]:
            continue
        events.append(note.params["event"])
        if note.params["event"]["type"] in TERMINAL:
            return events


def wait_notification(
    client: Client, method: str, recorder: Recorder | None = None, timeout: float = 30
) -> dict[str, Any]:
    while True:
        note = client.next_notification(timeout=timeout)
        assert note is not None, f"no {method} notification"
        if recorder is not None:
            recorder.add(note.params)
        if note.method == method:
            params: dict[str, Any] = note.params
            return params


def assert_no_secrets(secrets: Iterable[str], *texts: str) -> None:
    for secret in secrets:
        assert secret
        for text in texts:
            assert secret not in text, "a secret leaked"
            # JWT parts are long enough to be recognisable on their own.
            for part in secret.split("."):
                if len(part) > 40:
                    assert part not in text, "part of a token leaked"


def token_strings(auth_json: dict[str, Any] | None) -> list[str]:
    if not auth_json:
        return []
    out = [v for v in (auth_json.get("tokens") or {}).values() if isinstance(v, str)]
    out = [v for v in out if not v.startswith("acct_")]
    if auth_json.get("OPENAI_API_KEY"):
        out.append(auth_json["OPENAI_API_KEY"])
    return out
