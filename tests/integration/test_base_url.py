"""Where a job's request goes, as the fake upstream (or a proxy) saw it through a real daemon.

Codex's rule: an explicit base URL wins (for `openai`: `openai_base_url`; for another provider
its `base_url`); without one, a provider using the Codex login goes to `chatgpt_base_url` +
`codex` under a ChatGPT login and to the public API (https://api.openai.com/v1) otherwise.
The rule lives in `ConfigSnapshot.route` (the runner calls it); these tests check what
is sent, not the function.

The public API cannot be reached from a test: the daemon is given HTTPS_PROXY, pointing at a
proxy here that records the CONNECT line it is sent and refuses it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from codexctl import Client
from codexd.config.load import load_config
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.conftest import write_config
from tests.integration._chatgpt import chatgpt_setup, write_login

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}
API_KEY = "sk-test-key-for-the-fake-0000"


def run_job(
    daemon: DaemonProcess, proxy: RefusingProxy | None = None, **params: Any
) -> dict[str, Any]:
    """Submit with subscribe; the terminal event. With `proxy`, the job is cancelled (from a
    second connection) as soon as the proxy saw its first request: its retries would only
    repeat it."""
    with Client(daemon.socket) as c:
        job_id = c.call("job/submit", {"body": {"input": "hi"}, **params})["job_id"]
        canceller = None
        if proxy is not None:

            def cancel_when_seen() -> None:
                proxy.wake.wait(60)
                if proxy.lines:
                    with Client(daemon.socket) as other:
                        other.call("job/cancel", {"job_id": job_id})

            canceller = threading.Thread(target=cancel_when_seen)
            canceller.start()
        try:
            while True:
                note = c.next_notification(timeout=60)
                assert note is not None, "no terminal event"
                if note.method == "job/event" and note.params["job_id"] == job_id:
                    event: dict[str, Any] = note.params["event"]
                    if event["type"] in TERMINAL:
                        return event
        finally:
            if proxy is not None and canceller is not None:
                proxy.wake.set()
                canceller.join(60)


class RefusingProxy:
    """An HTTP proxy on loopback that records each request line and answers 403."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.lines: list[str] = []
        self.wake = threading.Event()  # set by its first request (or by the test)
        self._closing = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._closing:
                conn.close()
                return
            with conn:
                conn.settimeout(10)
                head = b""
                try:
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    self.lines.append(head.split(b"\r\n", 1)[0].decode())
                    self.wake.set()
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._closing = True
        socket.create_connection(self.sock.getsockname(), timeout=10).close()  # wake accept()
        self._thread.join(10)
        self.sock.close()


@pytest.fixture
def proxy() -> Iterator[RefusingProxy]:
    p = RefusingProxy()
    try:
        yield p
    finally:
        p.close()


def api_key_env(env: dict[str, str], config: str, proxy: RefusingProxy | None = None) -> None:
    write_config(env, 'model = "gpt-5"\n' + config)
    env["OPENAI_API_KEY"] = API_KEY
    env["FAKE_KEY"] = API_KEY
    if proxy is not None:
        for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            env[name] = proxy.url
        env.pop("NO_PROXY", None)
        env.pop("no_proxy", None)


def test_api_key_default_is_the_public_api(
    daemon_env: dict[str, str], proxy: RefusingProxy
) -> None:
    api_key_env(daemon_env, "", proxy)
    with DaemonProcess(daemon_env) as d:
        assert run_job(d, proxy)["type"] == "job.cancelled"
    assert set(proxy.lines) == {"CONNECT api.openai.com:443 HTTP/1.1"}


def test_api_key_with_openai_base_url_goes_there(
    daemon_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    api_key_env(daemon_env, f'openai_base_url = "{fake_openai.base_url}"\n')
    with DaemonProcess(daemon_env) as d:
        assert run_job(d)["type"] == "job.completed"
    assert [r.path for r in fake_openai.model_requests()] == ["/v1/responses"]


def test_a_custom_provider_goes_to_its_base_url(
    daemon_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    # openai_base_url points elsewhere (nothing listens on port 9 of loopback): the
    # provider's own base_url must be used, not the openai one.
    api_key_env(
        daemon_env,
        'openai_base_url = "http://127.0.0.1:9/nowhere/v1"\n'
        "[model_providers.fake]\n"
        f'name = "fake"\nbase_url = "{fake_openai.base_url}"\nenv_key = "FAKE_KEY"\n',
    )
    with DaemonProcess(daemon_env) as d:
        assert run_job(d, provider="fake")["type"] == "job.completed"
    sent = fake_openai.model_requests()
    assert [r.path for r in sent] == ["/v1/responses"]
    assert sent[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_openai_base_url_wins_over_a_chatgpt_login(daemon_env: dict[str, str]) -> None:
    with chatgpt_setup(daemon_env) as setup:
        path = f"{daemon_env['CODEX_HOME']}/config.toml"
        with open(path) as f:
            text = f.read()
        write_config(daemon_env, f'openai_base_url = "{setup.fake.base_url}"\n' + text)
        write_login(setup.env, setup.issuer.issue_tokens())
        with setup.daemon() as d:
            assert run_job(d)["type"] == "job.completed"
        assert [r.path for r in setup.fake.model_requests()] == ["/v1/responses"]


def test_a_custom_provider_without_base_url_uses_the_public_api(
    daemon_env: dict[str, str], proxy: RefusingProxy
) -> None:
    api_key_env(
        daemon_env,
        '[model_providers.nobase]\nname = "nobase"\nenv_key = "FAKE_KEY"\n',
        proxy,
    )
    with DaemonProcess(daemon_env) as d:
        assert run_job(d, proxy, provider="nobase")["type"] == "job.cancelled"
    assert set(proxy.lines) == {"CONNECT api.openai.com:443 HTTP/1.1"}


def test_the_public_api_is_exactly_its_v1_root() -> None:
    """The path behind the proxy's CONNECT api.openai.com:443 above, which TLS hides from it:
    a unit test of the method the daemon calls (`codexd.config.schema.ConfigSnapshot.route`), as
    https://api.openai.com/v1 cannot be reached from a test."""
    snap = load_config("/nonexistent-codex-home", {})
    assert snap.route("openai", chatgpt_auth=False).base_url == "https://api.openai.com/v1"
