"""The gateway with the official `openai` SDK against a real daemon and the fake.

Every reply is validated with the SDK's own pydantic types (strictly, not the SDK's lax
construction), errors must arrive as the SDK's matching exception classes, and the job,
usage and cancellation side is checked through the control socket.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codexctl import Client
from codexctl.cli import main as codexctl_main
from codexctl.events import JobFinished
from codexd.testing import fake_openai as fo
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.conftest import free_port, require_module, require_root, write_config

openai = require_module("openai", minversion="3")
httpx2 = require_module("httpx2")
pydantic = require_module("pydantic")

from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402
from openai.types.responses import Response  # noqa: E402

# The fake's usage predates this member, which the SDK's strict types require; what the
# gateway passes through is what upstream sent, so this one gap is the fake's, not ours.
FAKE_GAPS = frozenset({"cache_write_tokens"})


def strict(adapter: Any, data: Any) -> Any:
    """Validate with the SDK's pydantic types for real (the SDK itself builds leniently)."""
    try:
        return adapter.validate_python(data)
    except pydantic.ValidationError as exc:
        real = [e for e in exc.errors() if e["loc"][-1] not in FAKE_GAPS]
        if real:
            raise
        return adapter.validate_python(_fill_gaps(data))


def _fill_gaps(data: Any) -> Any:
    if isinstance(data, dict):
        out = {k: _fill_gaps(v) for k, v in data.items()}
        if "cached_tokens" in out and out.get("cache_write_tokens") is None:
            out["cache_write_tokens"] = 0
        return out
    if isinstance(data, list):
        return [_fill_gaps(v) for v in data]
    return data


RESPONSE = pydantic.TypeAdapter(Response)
CHAT_COMPLETION = pydantic.TypeAdapter(ChatCompletion)
CHAT_CHUNK = pydantic.TypeAdapter(ChatCompletionChunk)
SDK_EVENT_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 5,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gateway_env(daemon_env: dict[str, str], fake_openai: FakeOpenAI) -> dict[str, str]:
    port = free_port()
    write_config(
        daemon_env,
        f'openai_base_url = "{fake_openai.base_url}"\nmodel = "gpt-5"\n'
        "[model_providers.fake]\n"
        f'name = "fake"\nbase_url = "{fake_openai.base_url}"\nenv_key = "FAKE_KEY"\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
        f'[codexd.gateway]\nenabled = true\ntcp = "127.0.0.1:{port}"\n',
    )
    daemon_env["OPENAI_API_KEY"] = "sk-test-key-for-the-fake-0000"
    daemon_env["FAKE_KEY"] = "sk-test-key-for-the-fake-0001"
    daemon_env["GATEWAY_TCP"] = f"127.0.0.1:{port}"
    return daemon_env


@pytest.fixture
def gateway(gateway_env: dict[str, str]) -> Iterator[DaemonProcess]:
    with DaemonProcess(gateway_env) as proc:
        yield proc


def gateway_socket(daemon: DaemonProcess) -> str:
    return os.path.join(os.path.dirname(daemon.socket), "gateway.sock")


def tcp_base(daemon: DaemonProcess) -> str:
    return f"http://{daemon.env['GATEWAY_TCP']}/v1"


def unix_sdk(daemon: DaemonProcess, **headers: str) -> Any:
    """Exactly the snippet of docs/gateway.md, plus max_retries=0 (one request per call)."""
    from openai import DefaultHttpx2Client, OpenAI

    return OpenAI(
        base_url="http://codexd/v1",
        api_key="unused",
        max_retries=0,
        default_headers=headers or None,
        http_client=DefaultHttpx2Client(transport=httpx2.HTTPTransport(uds=gateway_socket(daemon))),
    )


def tcp_sdk(daemon: DaemonProcess, token: str) -> Any:
    return openai.OpenAI(base_url=tcp_base(daemon), api_key=token, max_retries=0)


def token_of(daemon: DaemonProcess, *, rotate: bool = False) -> str:
    with Client(daemon.socket) as c:
        return str(c.call("gateway/token", {"rotate": rotate})["token"])


def jobs_of(daemon: DaemonProcess) -> list[dict[str, Any]]:
    with Client(daemon.socket) as c:
        return list(c.call("job/list", {})["jobs"])


def raw_unix(daemon: DaemonProcess) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=gateway_socket(daemon))
    return httpx.Client(base_url="http://codexd", transport=transport, timeout=30)


# --------------------------------------------------------------------------- happy paths


def test_gateway_socket_is_private_and_beside_the_control_socket(gateway: DaemonProcess) -> None:
    st = os.stat(gateway_socket(gateway))
    assert st.st_mode & 0o777 == 0o600


def _ask_as_nobody(path: str, request: bytes) -> bytes:
    """Fork a child that becomes `nobody`, connects to `path`, sends `request`; return what
    happened: b"connected;" then b"eof", b"data:..." or the error.

    The child keeps root's file access (saved uid 0, then setfsuid(0)), so connect() succeeds
    despite the socket's 0600 in a 0700 directory, and only the peer-uid check can refuse it;
    the kernel reports the child's effective uid (nobody) to SO_PEERCRED."""
    nobody = pwd.getpwnam("nobody")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        report = b"?"
        try:
            os.setresgid(nobody.pw_gid, nobody.pw_gid, 0)
            os.setresuid(nobody.pw_uid, nobody.pw_uid, 0)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.setfsuid(0)
            libc.setfsgid(0)
            assert os.geteuid() == nobody.pw_uid
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            report = b"connected;"
            try:
                s.sendall(request)
            except OSError:
                pass
            try:
                data = s.recv(65536)
                report += b"eof" if data == b"" else b"data:" + data
            except ConnectionResetError:
                report += b"eof"
            except TimeoutError:
                report += b"timeout"
        except BaseException as exc:  # report, never raise out of a forked test child
            report += repr(exc).encode()
        os.write(write_fd, report)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        report = r.read()
    os.waitpid(pid, 0)
    return report


def test_gateway_socket_refuses_another_uid_without_an_answer(
    gateway: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    """gateway.sock admits only the daemon's uid and root: a request from `nobody` is closed
    unanswered and never reaches upstream, while the same request from us is served."""
    require_root("to fork a child of another uid")
    body = b'{"model":"gpt-5","input":"from nobody"}'
    request = (
        b"POST /v1/responses HTTP/1.1\r\nhost: codexd\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    report = _ask_as_nobody(gateway_socket(gateway), request)
    assert report == b"connected;eof"
    # Barrier: our own request on the same socket is answered, so the daemon had read and
    # judged the child's connection before; nothing of it went upstream or became a job.
    with raw_unix(gateway) as client:
        reply = client.post("/v1/responses", json={"model": "gpt-5", "input": "from us"})
    assert reply.status_code == 200
    inputs = [r.body.get("input") for r in fake_openai.model_requests("/v1/responses")]
    assert inputs == ["from us"]
    assert len(jobs_of(gateway)) == 1
    uid = pwd.getpwnam("nobody").pw_uid
    assert f"gateway refused a connection from uid {uid}" in gateway.stderr()


def test_responses_not_streamed(gateway: DaemonProcess, fake_openai: FakeOpenAI) -> None:
    sdk = unix_sdk(gateway)
    raw = sdk.responses.with_raw_response.create(model="gpt-5", input="Say hello")
    response = strict(RESPONSE, raw.http_response.json())
    assert response.output_text == fake_openai.reply_text
    assert response.usage is not None and response.usage.total_tokens > 0
    assert response.status == "completed"
    job_id = raw.headers["x-request-id"]
    (job,) = [j for j in jobs_of(gateway) if j["id"] == job_id]
    assert job["state"] == "completed" and job["api"] == "responses"
    # The client's own key never goes upstream: the daemon's does.
    sent = fake_openai.model_requests("/v1/responses")[-1]
    assert sent.headers["authorization"] == "Bearer sk-test-key-for-the-fake-0000"


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_responses_streamed_events_validate(
    gateway: DaemonProcess, fake_openai: FakeOpenAI, transport: str
) -> None:
    sdk = unix_sdk(gateway) if transport == "unix" else tcp_sdk(gateway, token_of(gateway))
    events = []
    with sdk.responses.create(model="gpt-5", input="Say hello", stream=True) as stream:
        for event in stream:
            events.append(strict(pydantic.TypeAdapter(type(event)), event.model_dump(mode="json")))
    assert [e.type for e in events] == SDK_EVENT_TYPES
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == fake_openai.reply_text
    assert events[-1].response.output_text == fake_openai.reply_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_chat_not_streamed(gateway: DaemonProcess, fake_openai: FakeOpenAI) -> None:
    raw = unix_sdk(gateway).chat.completions.with_raw_response.create(model="gpt-5", messages=CHAT)
    completion = strict(CHAT_COMPLETION, raw.http_response.json())
    assert completion.choices[0].message.content == fake_openai.reply_text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert fake_openai.model_requests("/v1/chat/completions")


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_streamed_chunks_validate(
    gateway: DaemonProcess, fake_openai: FakeOpenAI, include_usage: bool
) -> None:
    sdk = unix_sdk(gateway)
    options = {"include_usage": True} if include_usage else None
    chunks = []
    stream = sdk.chat.completions.create(
        model="gpt-5", messages=CHAT, stream=True, stream_options=options
    )
    for chunk in stream:
        chunks.append(strict(CHAT_CHUNK, chunk.model_dump(mode="json")))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == fake_openai.reply_text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert len({c.id for c in chunks}) == 1
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens > 0
    else:
        assert all(c.usage is None for c in chunks)


def test_chat_stream_ends_with_done(gateway: DaemonProcess) -> None:
    body = {"model": "gpt-5", "messages": CHAT, "stream": True}
    with raw_unix(gateway) as http:
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.text.endswith("data: [DONE]\n\n")


def test_models(gateway: DaemonProcess) -> None:
    sdk = unix_sdk(gateway)
    ids = [m.id for m in sdk.models.list()]
    assert "gpt-5" in ids
    assert sdk.models.retrieve("gpt-5").id == "gpt-5"
    with pytest.raises(openai.NotFoundError) as info:
        sdk.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


def test_unknown_path_is_openai_404(gateway: DaemonProcess) -> None:
    with raw_unix(gateway) as http:
        reply = http.get("/v1/nothing")
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "Invalid URL (GET /v1/nothing)"


def test_invalid_json_body_is_400(gateway: DaemonProcess) -> None:
    with raw_unix(gateway) as http:
        reply = http.post("/v1/responses", content=b"{not json")
        empty = http.post("/v1/responses", json={"model": "gpt-5"})
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"


# --------------------------------------------------------------------------- the TCP token


def test_tcp_needs_the_token(gateway: DaemonProcess) -> None:
    url = tcp_base(gateway) + "/responses"
    body = {"model": "gpt-5", "input": "hi"}
    missing = httpx.post(url, json=body)
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer not-the-token"})
    for reply in (missing, wrong):
        assert reply.status_code == 401
        error = reply.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert error["param"] is None
        assert error["message"].startswith("Incorrect API key provided")
    token = token_of(gateway)
    ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["status"] == "completed"
    with pytest.raises(openai.AuthenticationError):
        tcp_sdk(gateway, "wrong").responses.create(model="gpt-5", input="hi")


def test_token_file_is_private_and_rotates(
    gateway: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert codexctl_main(["gateway", "token", "--socket", gateway.socket]) == 0
    printed = capsys.readouterr().out.strip()
    path = os.path.join(gateway.env["CODEXD_STATE_DIR"], "gateway.token")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert printed == token_of(gateway)
    assert codexctl_main(["gateway", "token", "--rotate", "--socket", gateway.socket]) == 0
    rotated = capsys.readouterr().out.strip()
    assert rotated != printed
    sdk_old, sdk_new = tcp_sdk(gateway, printed), tcp_sdk(gateway, rotated)
    with pytest.raises(openai.AuthenticationError):
        sdk_old.models.list()
    assert sdk_new.models.retrieve("gpt-5").id == "gpt-5"


def test_unix_socket_needs_no_token(gateway: DaemonProcess) -> None:
    assert unix_sdk(gateway).models.retrieve("gpt-5").id == "gpt-5"


# --------------------------------------------------------------------------- strangers on TCP


def tcp_socket(daemon: DaemonProcess, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to the gateway (the timeout only guards against a hang)."""
    host, port = daemon.env["GATEWAY_TCP"].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_until_closed(sock: socket.socket) -> bytes:
    buf = b""
    while chunk := sock.recv(65536):
        buf += chunk
    return buf


def is_open(sock: socket.socket) -> bool:
    """The peer has not closed `sock` (and sent nothing on it)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)


def with_gateway_settings(env: dict[str, str], lines: str) -> dict[str, str]:
    """`gateway_env` with more keys in its [codexd.gateway] table (the file's last)."""
    path = os.path.join(env["CODEX_HOME"], "config.toml")
    with open(path, "a") as f:
        f.write(lines)
    return env


HALF_A_HEAD = b"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1\r\n"


@pytest.mark.parametrize("expect_continue", [True, False])
def test_a_head_without_the_token_gets_401_before_its_body(
    gateway: DaemonProcess, expect_continue: bool
) -> None:
    head = (
        b"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"authorization: Bearer not-the-token\r\ncontent-length: 1048576\r\n"
    )
    if expect_continue:
        head += b"expect: 100-continue\r\n"
    with tcp_socket(gateway) as sock:
        sock.sendall(head + b"\r\n")  # the body never follows
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 401 "), first  # not `100 Continue`, not silence
        reply = first + read_until_closed(sock)
    assert b"100 Continue" not in reply
    assert b'"code":"invalid_api_key"' in reply and b"not-the-token" not in reply


def test_the_owner_is_served_while_300_strangers_hold_tcp_connections(
    gateway: DaemonProcess,
) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        if hard != resource.RLIM_INFINITY and hard < 1024:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for 300 connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    strangers = [tcp_socket(gateway) for _ in range(300)]
    try:
        for i, sock in enumerate(strangers):
            if i % 2:
                sock.sendall(HALF_A_HEAD)
        # Barrier: one more stranger's whole head is answered (whatever the answer), so the
        # daemon has accepted every connection made before it.
        with tcp_socket(gateway) as last:
            last.sendall(b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            assert read_until_closed(last).startswith(b"HTTP/1.1 ")
        token = token_of(gateway)
        tcp = httpx.get(tcp_base(gateway) + "/models", headers={"Authorization": f"Bearer {token}"})
        assert tcp.status_code == 200, tcp.text
        with raw_unix(gateway) as http:
            unix = http.get("/v1/models")
        assert unix.status_code == 200, unix.text
    finally:
        for sock in strangers:
            sock.close()


def test_past_the_cap_the_oldest_unauthenticated_connection_is_closed(
    gateway_env: dict[str, str],
) -> None:
    # No head timeout to speak of: only the cap can close a connection here.
    with_gateway_settings(
        gateway_env, "max_unauthenticated_connections = 2\nhead_timeout_s = 3600\n"
    )
    with DaemonProcess(gateway_env) as daemon:
        token = token_of(daemon)
        with tcp_socket(daemon) as oldest, tcp_socket(daemon) as second:
            for sock in (oldest, second):
                sock.sendall(HALF_A_HEAD)
            with tcp_socket(daemon) as newest:
                assert read_until_closed(oldest) == b""  # closed without a word
                assert is_open(second)
                newest.sendall(
                    b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                    + f"authorization: Bearer {token}\r\nconnection: close\r\n\r\n".encode()
                )
                assert read_until_closed(newest).startswith(b"HTTP/1.1 200 ")
            assert is_open(second)


def test_a_head_that_does_not_arrive_and_an_idle_connection_are_closed(
    gateway_env: dict[str, str],
) -> None:
    # Long enough that a loaded machine still reads the kept request in time.
    with_gateway_settings(gateway_env, "head_timeout_s = 1\nidle_timeout_s = 1\n")
    with DaemonProcess(gateway_env) as daemon:
        token = token_of(daemon)
        with tcp_socket(daemon) as silent, tcp_socket(daemon) as half:
            half.sendall(HALF_A_HEAD)
            assert read_until_closed(silent) == b""
            assert read_until_closed(half) == b""
        request = (
            b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            + f"authorization: Bearer {token}\r\n\r\n".encode()
        )
        with tcp_socket(daemon) as kept:
            kept.sendall(request)
            reply = read_until_closed(kept)  # answered, kept alive, then closed when idle
        assert reply.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in reply
        with socket.socket(socket.AF_UNIX) as unix:
            unix.settimeout(10)
            unix.connect(gateway_socket(daemon))
            unix.sendall(HALF_A_HEAD)
            assert read_until_closed(unix) == b""


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("outcome", "exc", "status", "code"),
    [
        (fo.rate_limited(retry_after=500), "RateLimitError", 429, "rate_limit_exceeded"),
        (fo.insufficient_quota(), "RateLimitError", 429, "insufficient_quota"),
        (fo.unauthorized(), "AuthenticationError", 401, "invalid_api_key"),
        (fo.context_length_exceeded(), "BadRequestError", 400, "context_length_exceeded"),
        (fo.server_error(500), "InternalServerError", 500, None),
        (fo.server_error(502), "InternalServerError", 502, None),
    ],
)
@pytest.mark.parametrize("api", ["responses", "chat"])
def test_upstream_errors_become_sdk_exceptions(
    gateway: DaemonProcess,
    fake_openai: FakeOpenAI,
    outcome: fo.RawReply,
    exc: str,
    status: int,
    code: str | None,
    api: str,
) -> None:
    fake_openai.script(outcome)
    sdk = unix_sdk(gateway, **{"X-Codexd-Provider": "fake"})

    def call() -> Any:
        if api == "responses":
            return sdk.responses.create(model="gpt-5", input="hi", stream=True)
        return sdk.chat.completions.create(model="gpt-5", messages=CHAT)

    with pytest.raises(getattr(openai, exc)) as info:
        call()
    err = info.value
    assert err.status_code == status
    if code is not None:
        assert err.code == code
    assert err.response.headers.get("x-should-retry") == (
        None if status == 429 and code == "rate_limit_exceeded" else "false"
    )
    if code == "rate_limit_exceeded":
        assert err.response.headers["retry-after"] == "500"
    assert len(fake_openai.model_requests()) == 1


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"model": "gpt-5", "input": "\xff"}'],
    ids=["nested-too-deeply", "invalid-utf8"],
)
def test_a_body_nested_too_deeply_or_not_utf8_is_400(gateway: DaemonProcess, body: bytes) -> None:
    with raw_unix(gateway) as http:
        reply = http.post("/v1/responses", content=body)
        after = http.get("/v1/models")
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] is None
    assert "JSON" in error["message"]
    assert after.status_code == 200  # the same connection goes on
    assert "Traceback" not in gateway.stderr()


def test_no_credentials_is_401(gateway_env: dict[str, str]) -> None:
    del gateway_env["FAKE_KEY"]
    with DaemonProcess(gateway_env) as daemon:
        sdk = unix_sdk(daemon, **{"X-Codexd-Provider": "fake"})
        with pytest.raises(openai.AuthenticationError) as info:
            sdk.responses.create(model="gpt-5", input="hi")
    assert "FAKE_KEY" in info.value.message


# --------------------------------------------------------------------------- jobs and usage


def test_jobs_and_usage_carry_the_client_name(gateway: DaemonProcess) -> None:
    unix_sdk(gateway, **{"X-Codexd-Client": "my-tool"}).responses.create(model="gpt-5", input="hi")
    unix_sdk(gateway).chat.completions.create(model="gpt-5", messages=CHAT)
    clients = {j["client"] for j in jobs_of(gateway)}
    assert clients == {"my-tool", "OpenAI"}
    with Client(gateway.socket) as c:
        rows = c.call("usage/read", {"group_by": ["client"]})["rows"]
    by_client = {r["client"]: r for r in rows}
    assert by_client["my-tool"]["requests"] == 1
    assert by_client["OpenAI"]["requests"] == 1
    assert by_client["my-tool"]["output_tokens"] > 0


# --------------------------------------------------------------------------- streams that break


def test_client_disconnect_cancels_the_job(gateway: DaemonProcess, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(fo.stalled(after=6))
    body = {"model": "gpt-5", "input": "hi", "stream": True}
    with raw_unix(gateway) as http, http.stream("POST", "/v1/responses", json=body) as reply:
        job_id = reply.headers["x-request-id"]
        for line in reply.iter_lines():
            if "output_text.delta" in line:
                break
    fake_openai.wait_for(lambda s: s.disconnects >= 1, timeout=10)
    with Client(gateway.socket) as c:
        job = c.call("job/cancel", {"job_id": job_id})
    assert job["state"] == "cancelled"


def test_dropped_stream_after_output_fails_in_stream_without_repeating(
    gateway: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    # 4 preamble events and 2 deltas went out, then the upstream connection drops; the
    # daemon would retry from scratch, the gateway ends the stream with response.failed.
    fake_openai.script(fo.dropped(after=6))
    events = []
    with unix_sdk(gateway).responses.create(model="gpt-5", input="hi", stream=True) as stream:
        for event in stream:
            events.append(strict(pydantic.TypeAdapter(type(event)), event.model_dump(mode="json")))
    types = [e.type for e in events]
    assert types[-1] == "response.failed"
    assert types.count("response.created") == 1
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "".join(fo.split_deltas(fake_openai.reply_text)[:2])
    failed = events[-1]
    assert failed.response.status == "failed" and failed.response.error is not None
    assert failed.sequence_number == events[-2].sequence_number + 1


def test_dropped_chat_stream_after_output_is_an_error_chunk(
    gateway: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(fo.dropped(after=3), path="/v1/chat/completions")
    seen: list[str] = []
    stream = unix_sdk(gateway).chat.completions.create(model="gpt-5", messages=CHAT, stream=True)

    def read_all() -> None:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as info:
        read_all()
    assert not isinstance(info.value, openai.APIStatusError)  # in-stream, after a 200
    assert "".join(seen) == "".join(fo.split_deltas(fake_openai.reply_text)[:2])


def test_a_client_that_reads_only_after_its_job_ended_gets_the_whole_stream(
    gateway: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    """Far more reply than the socket holds, to a client that reads nothing until its job
    has finished: what the socket did not take waits, in order, and the stream ends whole."""
    text = "".join(f" w{i:05d}" for i in range(20_000)).lstrip()
    fake_openai.script(fo.Reply(text=text), path="/v1/chat/completions")
    body = json.dumps({"model": "gpt-5", "messages": CHAT, "stream": True}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: codexd\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    with Client(gateway.socket) as control, socket.socket(socket.AF_UNIX) as sock:
        control.subscribe_events("jobs")
        sock.settimeout(30)
        sock.connect(gateway_socket(gateway))
        sock.sendall(head + body)
        finished = next(n for n in control.notifications() if isinstance(n, JobFinished))
        assert finished.job.state == "completed"
        reply = b""
        while not reply.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(1 << 20)
            assert data, "the stream ended before its last chunk"
            reply += data
    status, _, chunked = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200")
    sse = b""
    while chunked:
        size, _, rest = chunked.partition(b"\r\n")
        sse, chunked = sse + rest[: int(size, 16)], rest[int(size, 16) + 2 :]
    events = [line.removeprefix(b"data: ") for line in sse.split(b"\n\n") if line]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_retry_before_output_is_invisible(gateway: DaemonProcess, fake_openai: FakeOpenAI) -> None:
    # The first attempt sends response.created and in_progress only, then drops: nothing
    # went out to the client yet, so the retry leaves one clean stream.
    fake_openai.script(fo.dropped(after=2))
    raw = unix_sdk(gateway).responses.with_raw_response.create(
        model="gpt-5", input="hi", stream=True
    )
    job_id = raw.headers["x-request-id"]
    events = list(raw.parse())
    assert [e.type for e in events] == SDK_EVENT_TYPES
    with Client(gateway.socket) as c:
        assert c.call("job/get", {"job_id": job_id})["attempts"] == 2
    assert len(fake_openai.model_requests()) == 2


def test_non_loopback_tcp_is_refused_at_config_load(daemon_env: dict[str, str]) -> None:
    from codexd.config.load import ConfigError
    from codexd.config.store import ConfigStore

    write_config(daemon_env, '[codexd.gateway]\nenabled = true\ntcp = "0.0.0.0:8765"\n')
    with pytest.raises(ConfigError) as info:
        ConfigStore.open(daemon_env["CODEX_HOME"], daemon_env)
    assert "tcp" in str(info.value) and "loopback" in str(info.value)


def test_the_documented_unix_socket_snippet_works(
    gateway: DaemonProcess,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "gateway.md").read_text()
    snippet = next(
        block
        for block in re.findall(r"```python\n(.*?)```", doc, re.S)
        if "httpx2.HTTPTransport(uds=sock)" in block
    )
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir()
    (runtime / "codexd").symlink_to(os.path.dirname(gateway.socket))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    exec(compile(snippet, "docs/gateway.md", "exec"), {})
    assert capsys.readouterr().out.strip() == fake_openai.reply_text


def test_the_documented_tcp_snippet_works(
    gateway: DaemonProcess,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The TCP snippet as written, with the test daemon's address for 127.0.0.1:8765: it
    runs `codexctl gateway token` from PATH and sends the token as the API key."""
    doc = (Path(__file__).parents[2] / "docs" / "gateway.md").read_text()
    snippet = next(
        block
        for block in re.findall(r"```python\n(.*?)```", doc, re.S)
        if '"gateway", "token"' in block
    )
    assert "127.0.0.1:8765" in snippet
    snippet = snippet.replace("127.0.0.1:8765", gateway.env["GATEWAY_TCP"])
    for name in ("CODEXD_SOCKET", "CODEX_HOME", "CODEXD_STATE_DIR"):
        monkeypatch.setenv(name, gateway.env[name])
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    exec(compile(snippet, "docs/gateway.md", "exec"), {})
    assert capsys.readouterr().out.strip() == fake_openai.reply_text
    assert len(fake_openai.model_requests()) == 1
