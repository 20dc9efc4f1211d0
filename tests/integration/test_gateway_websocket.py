"""The gateway's Responses WebSocket (`GET /v1/responses` + `Upgrade: websocket`), end to end.

A real daemon with the gateway on loopback TCP, the fake upstream behind it, and two kinds of
client: a small one built on wsproto over a plain socket (what a client on the wire does,
message by message), and Codex CLI itself with `supports_websockets = true` on its provider.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections import deque
from pathlib import Path
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from codexctl import Client
from codexctl.protocol import JobCancelled
from codexd.testing import fake_openai as fo
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.codex_cli import codex_binary
from tests.conftest import free_port
from tests.integration.test_gateway import gateway, gateway_env, jobs_of, token_of  # noqa: F401

IO_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 120
TERMINAL = frozenset({"response.completed", "response.failed", "error"})


class WsClient:
    """A WebSocket client on a plain socket: wsproto frames, the socket's timeout bounds
    every read (a hang fails the test instead of blocking it)."""

    def __init__(self, address: str, token: str | None) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=IO_TIMEOUT_S)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._events: deque[Event] = deque()
        headers = [("user-agent", "ws-test/1.0")]
        if token is not None:
            headers.append(("authorization", f"Bearer {token}"))
        self.sock.sendall(
            self.ws.send(Request(host=address, target="/v1/responses", extra_headers=headers))
        )
        self.handshake = self.next_event()

    def next_event(self) -> Event:
        while not self._events:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send(self, message: dict[str, Any]) -> None:
        self.send_text(json.dumps(message))

    def message(self) -> dict[str, Any]:
        """The next whole text message, decoded."""
        parts: list[str] = []
        while True:
            event = self.next_event()
            assert isinstance(event, TextMessage), f"expected a text message, got {event}"
            parts.append(event.data)
            if event.message_finished:
                decoded = json.loads("".join(parts))
                assert isinstance(decoded, dict)
                return decoded

    def turn(self) -> list[dict[str, Any]]:
        """Messages up to and including the one that ends a turn."""
        out = [self.message()]
        while out[-1]["type"] not in TERMINAL:
            out.append(self.message())
        return out

    def close(self) -> CloseConnection:
        """Close cleanly: send our close frame and read the server's."""
        self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        while True:
            event = self.next_event()
            if isinstance(event, CloseConnection):
                self.sock.close()
                return event

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def create(text: str, **extra: Any) -> dict[str, Any]:
    message = {"type": "response.create", "model": "gpt-5", "store": False}
    message["input"] = [{"type": "message", "role": "user", "content": text}]
    return {**message, **extra}


def text_of(messages: list[dict[str, Any]]) -> str:
    return "".join(m["delta"] for m in messages if m["type"] == "response.output_text.delta")


def connect(gateway: DaemonProcess, token: str | None = "") -> WsClient:  # noqa: F811
    client = WsClient(gateway.env["GATEWAY_TCP"], token_of(gateway) if token == "" else token)
    assert isinstance(client.handshake, AcceptConnection), client.handshake
    return client


# --------------------------------------------------------------------------- the wire


def test_two_turns_on_one_connection_continue_the_conversation(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
) -> None:
    with connect(gateway) as ws:
        ws.send(create("first question"))
        first = ws.turn()
        ws.send(create("second question", previous_response_id=first[-1]["response"]["id"]))
        second = ws.turn()
        closed = ws.close()

    assert closed.code == 1000
    for turn in (first, second):
        assert turn[0]["type"] == "response.created"
        assert turn[-1]["type"] == "response.completed"
        assert text_of(turn) == fake_openai.reply_text
    sent = fake_openai.model_requests("/v1/responses")
    assert len(sent) == 2
    # The second turn sent only its new input; upstream got the whole conversation.
    history = sent[1].body["input"]
    assert [item.get("role") for item in history] == ["user", "assistant", "user"]
    assert history[0]["content"] == "first question"
    assert history[1]["content"][0]["text"] == fake_openai.reply_text
    assert history[2]["content"] == "second question"
    assert "previous_response_id" not in sent[1].body
    assert sent[1].body["stream"] is True
    assert [(j["client"], j["state"]) for j in jobs_of(gateway)] == [
        ("ws-test", "completed"),
        ("ws-test", "completed"),
    ]


def test_malformed_messages_get_an_error_message_and_the_connection_goes_on(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
) -> None:
    with connect(gateway) as ws:
        ws.send_text("this is not json")
        not_json = ws.message()
        ws.send({"type": "response.cancel"})
        wrong_type = ws.message()
        ws.send({"model": "gpt-5", "input": "hi"})
        no_type = ws.message()
        ws.sock.sendall(ws.ws.send(BytesMessage(data=b'{"type": "response.create"}')))
        binary = ws.message()
        ws.sock.sendall(ws.ws.send(Ping(payload=b"still there?")))
        pong = ws.next_event()
        ws.send(create("still here?"))
        after = ws.turn()

    assert not_json["type"] == "error" and not_json["status"] == 400
    assert not_json["error"]["code"] == "invalid_json"
    assert "response.create" in not_json["error"]["message"]
    assert wrong_type["error"]["param"] == "type"
    assert "'response.cancel'" in wrong_type["error"]["message"]
    assert no_type["error"]["param"] == "type"
    assert binary["status"] == 400 and "text" in binary["error"]["message"]
    assert isinstance(pong, Pong) and pong.payload == b"still there?"
    assert after[-1]["type"] == "response.completed"
    assert text_of(after) == fake_openai.reply_text
    assert len(fake_openai.model_requests("/v1/responses")) == 1
    assert "Traceback" not in gateway.stderr()


def test_an_upstream_error_before_output_is_an_error_message_with_its_status(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(fo.context_length_exceeded())
    with connect(gateway) as ws:
        ws.send(create("too long"))
        failed = ws.turn()
        ws.send(create("shorter"))
        after = ws.turn()
        ws.close()  # the server's close frame comes once the turn's job has ended

    assert [m["type"] for m in failed] == ["error"]
    assert failed[0]["status"] == 400
    assert failed[0]["error"]["code"] == "context_length_exceeded"
    assert after[-1]["type"] == "response.completed"
    assert [j["state"] for j in jobs_of(gateway)] == ["completed", "failed"]  # newest first


def test_closing_mid_stream_cancels_the_job(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(fo.stalled(after=6))
    with connect(gateway) as ws:
        ws.send(create("a long answer"))
        while ws.message()["type"] != "response.output_text.delta":
            continue
        ws.close()

    [job] = jobs_of(gateway)
    with Client(gateway.socket) as c:
        events = [e.event for e in c.events(job["id"])]
        assert isinstance(events[-1], JobCancelled)
        assert c.job(job["id"]).state == "cancelled"
    fake_openai.wait_for(lambda s: s.disconnects >= 1, timeout=10)


def test_tcp_without_the_token_is_refused_at_the_handshake(
    gateway: DaemonProcess,  # noqa: F811
) -> None:
    for token in (None, "not-the-token"):
        with WsClient(gateway.env["GATEWAY_TCP"], token) as ws:
            refused = ws.handshake
            assert isinstance(refused, RejectConnection)
            assert refused.status_code == 401
            body = b""
            while not body.endswith(b"}"):
                data = ws.next_event()
                assert isinstance(data, RejectData)
                body += data.data
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
    assert jobs_of(gateway) == []


def test_a_warm_up_is_answered_without_a_job_and_can_be_continued(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
) -> None:
    with connect(gateway) as ws:
        ws.send(create("you are a helpful assistant", generate=False))
        warm = ws.turn()
        assert jobs_of(gateway) == []
        ws.send(create("hello", previous_response_id=warm[-1]["response"]["id"]))
        turn = ws.turn()

    assert [m["type"] for m in warm] == ["response.created", "response.completed"]
    assert warm[-1]["response"]["output"] == []
    assert text_of(turn) == fake_openai.reply_text
    [sent] = fake_openai.model_requests("/v1/responses")
    assert [item["content"] for item in sent.body["input"]] == [
        "you are a helpful assistant",
        "hello",
    ]
    assert "generate" not in sent.body


# --------------------------------------------------------------------------- Codex CLI


def codex_config(gateway: DaemonProcess, home: Path, *, websockets: bool) -> None:  # noqa: F811
    (home / "config.toml").write_text(
        'model_provider = "codexd"\nmodel = "gpt-5"\n'
        "[model_providers.codexd]\n"
        'name = "codexd"\n'
        f'base_url = "http://{gateway.env["GATEWAY_TCP"]}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "CODEXD_GATEWAY_TOKEN"\n'
        "stream_max_retries = 0\n"
        f"supports_websockets = {'true' if websockets else 'false'}\n"
        "[analytics]\nenabled = false\n"
        "[features]\nplugins = false\napps = false\nshell_snapshot = false\n"
    )


def run_codex(gateway: DaemonProcess, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    env.update(CODEX_HOME=str(home), CODEXD_GATEWAY_TOKEN=token_of(gateway))
    return subprocess.run(
        [codex_binary(), "exec", "--skip-git-repo-check", "--ephemeral", "Say hello"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


_CLOSED_LINE = re.compile(
    r"WebSocket /v1/responses from (\S+) closed \((\d+)\) after (\d+) response\(s\) "
    r"and (\d+) warm-up\(s\)"
)


def test_codex_exec_over_the_websocket_needs_no_fallback(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    home = tmp_path / "codex-cli-home"
    home.mkdir()
    codex_config(gateway, home, websockets=True)
    done = run_codex(gateway, home, tmp_path)

    assert done.returncode == 0, done.stderr[-2000:]
    assert fake_openai.reply_text in done.stdout
    # One job, and it came over the WebSocket: the connection answered one response.create
    # (after Codex's warm-up), so Codex never fell back to POST /v1/responses.
    jobs = jobs_of(gateway)
    assert [(j["client"], j["state"]) for j in jobs] == [("codex_exec", "completed")]
    closed = [(c, responses, warmups) for c, _, responses, warmups in _CLOSED_LINE.findall(
        gateway.stderr()
    )]
    assert closed == [("codex_exec", "1", "1")]
    [sent] = fake_openai.model_requests("/v1/responses")
    # Codex sent the turn as a continuation of its warm-up; upstream got the whole input.
    roles = [item.get("role") for item in sent.body["input"]]
    assert roles[0] == "developer" and roles[-1] == "user"
    assert sent.body["input"][-1]["content"][0]["text"] == "Say hello"
    assert sent.headers["authorization"] == "Bearer sk-test-key-for-the-fake-0000"
    with Client(gateway.socket) as c:
        rows = c.call("usage/read", {"group_by": ["client"]})["rows"]
    assert [(r["client"], r["requests"]) for r in rows] == [("codex_exec", 1)]
    assert rows[0]["output_tokens"] > 0


def test_shutdown_closes_an_idle_websocket_with_going_away(
    gateway: DaemonProcess,  # noqa: F811
) -> None:
    with connect(gateway) as ws:
        ws.send(create("hi"))
        assert ws.turn()[-1]["type"] == "response.completed"
        with Client(gateway.socket) as c:
            c.call("daemon/shutdown", {})
        closed = ws.next_event()
    assert isinstance(closed, CloseConnection)
    assert closed.code == 1001
    assert gateway.proc is not None
    assert gateway.proc.wait(timeout=20) == 0


def test_an_idle_websocket_is_closed_after_idle_timeout_s(
    gateway_env: dict[str, str],  # noqa: F811
) -> None:
    config = os.path.join(gateway_env["CODEX_HOME"], "config.toml")
    with open(config, "a") as f:
        f.write("idle_timeout_s = 0.5\n")  # appended inside [codexd.gateway]
    with DaemonProcess(gateway_env) as daemon, connect(daemon) as ws:
        ws.send(create("hi"))
        assert ws.turn()[-1]["type"] == "response.completed"
        closed = ws.next_event()  # no turn for idle_timeout_s: the server closes
        assert isinstance(closed, CloseConnection)
        assert (closed.code, closed.reason) == (1000, "idle")


def test_moving_the_listener_closes_a_websocket_once_its_turn_is_over(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(fo.Reply(hold_after=6))
    config = Path(gateway.env["CODEX_HOME"], "config.toml")
    with connect(gateway) as ws:
        ws.send(create("hi"))
        first = ws.message()
        while first["type"] != "response.output_text.delta":
            first = ws.message()
        moved = f"127.0.0.1:{free_port()}"
        config.write_text(config.read_text().replace(gateway.env["GATEWAY_TCP"], moved))
        with Client(gateway.socket) as c:
            c.call("config/reload")  # answers once the listeners follow the file
        fake_openai.release()
        rest = ws.turn()
        closed = ws.next_event()
    assert rest[-1]["type"] == "response.completed"  # the turn under way finished
    assert isinstance(closed, CloseConnection) and closed.code == 1001
    assert [j["state"] for j in jobs_of(gateway)] == ["completed"]
