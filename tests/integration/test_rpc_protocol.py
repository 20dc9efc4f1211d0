"""JSON-RPC over a real socket: every error row reachable, framing, ordering, status."""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec
import pytest

from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, stalled
from tests.conftest import LineConn, write_config


def error_of(reply: dict[str, object]) -> tuple[int, str, str]:
    err = reply["error"]
    assert isinstance(err, dict), reply
    assert reply["jsonrpc"] == "2.0"
    assert err["data"]["retryable"] is (err["code"] == -32001), err  # present even when false
    return err["code"], err["data"]["kind"], err["message"]


def test_ping_and_initialize(connect: type[LineConn]) -> None:
    c = connect()
    assert c.call("daemon/ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}
    reply = c.call("initialize", {"client": {"name": "tool.py", "version": "1.0"}}, rid="a")
    assert reply["id"] == "a"
    assert reply["result"] == {
        "server": {"name": "codexd", "version": reply["result"]["server"]["version"]},
        "protocol_version": 1,
    }


def test_parse_error_keeps_connection_usable(connect: type[LineConn]) -> None:
    c = connect()
    c.send(b'{"id": 1, "method": \n')
    reply = c.recv()
    assert reply["id"] is None
    assert error_of(reply)[:2] == (-32700, "parse_error")
    assert c.call("daemon/ping", rid=2)["result"] == {}


@pytest.mark.parametrize(
    ("line", "expected_id", "needle"),
    [
        (b"5", None, "request object"),
        (b'"daemon/ping"', None, "request object"),
        (b'[{"jsonrpc":"2.0","id":1,"method":"daemon/ping"}]', None, "batches are not supported"),
        (b'{"jsonrpc":"1.0","id":7,"method":"daemon/ping"}', 7, '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"daemon/ping"}', None, "$.id"),
        (b'{"jsonrpc":"2.0","id":{"a":1},"method":"daemon/ping"}', None, "$.id"),
        (b'{"jsonrpc":"2.0","id":null,"method":"daemon/ping"}', None, "$.id"),
        (b'{"jsonrpc":"2.0","id":3}', 3, "method"),
        (b'{"jsonrpc":"2.0","id":4,"method":5}', 4, "$.method"),
    ],
)
def test_invalid_requests(
    connect: type[LineConn], line: bytes, expected_id: object, needle: str
) -> None:
    c = connect()
    c.send(line + b"\n")
    reply = c.recv()
    code, kind, message = error_of(reply)
    assert (code, kind) == (-32600, "invalid_request")
    assert reply["id"] == expected_id
    assert needle in message
    assert c.call("daemon/ping", rid=9)["result"] == {}


def test_missing_jsonrpc_member_is_accepted(connect: type[LineConn]) -> None:
    c = connect()
    c.send({"id": 1, "method": "daemon/ping"})
    assert c.recv() == {"jsonrpc": "2.0", "id": 1, "result": {}}


def test_oversize_line_is_refused_and_closed(connect: type[LineConn]) -> None:
    c = connect()
    c.send(b'{"id":1,"method":"daemon/ping","params":{"x":"' + b"a" * (1 << 20) + b'"}}\n')
    reply = c.recv()
    code, kind, message = error_of(reply)
    assert (code, kind) == (-32600, "invalid_request")
    assert "1048576" in message
    assert c.at_eof()


def test_line_of_exactly_the_limit_is_accepted(connect: type[LineConn]) -> None:
    c = connect()
    prefix = b'{"id":1,"method":"daemon/ping","x":"'
    suffix = b'"}'
    pad = (1 << 20) - len(prefix) - len(suffix)
    c.send(prefix + b"a" * pad + suffix + b"\n")
    assert c.recv()["result"] == {}


def test_unknown_method(connect: type[LineConn]) -> None:
    c = connect()
    reply = c.call("nope/nothing", rid="x")
    assert reply["id"] == "x"
    code, kind, message = error_of(reply)
    assert (code, kind) == (-32601, "method_not_found")
    assert "nope/nothing" in message


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ([1, 2], "object"),
        ({"client": {"name": "t"}, "extra": 1}, "`extra`"),
        ({"client": {"name": 5}}, "$.client.name"),
        ({}, "`client`"),
        ({"client": {"name": "t", "nickname": "x"}}, "`nickname`"),
    ],
)
def test_invalid_params_name_the_member(
    connect: type[LineConn], params: object, needle: str
) -> None:
    c = connect()
    code, kind, message = error_of(c.call("initialize", params))
    assert (code, kind) == (-32602, "invalid_params")
    assert needle in message


def test_params_on_a_method_without_params(connect: type[LineConn]) -> None:
    c = connect()
    code, kind, message = error_of(c.call("daemon/ping", {"x": 1}))
    assert (code, kind) == (-32602, "invalid_params")
    assert "`x`" in message


def test_notifications_get_no_reply(connect: type[LineConn]) -> None:
    c = connect()
    c.send({"jsonrpc": "2.0", "method": "daemon/ping"})
    c.send({"jsonrpc": "2.0", "method": "no/such/method"})
    c.send({"jsonrpc": "2.0", "method": "initialize", "params": {"bad": 1}})
    c.send({"jsonrpc": "2.0", "id": 2, "method": "daemon/ping"})
    assert c.recv() == {"jsonrpc": "2.0", "id": 2, "result": {}}


def test_empty_lines_are_ignored(connect: type[LineConn]) -> None:
    c = connect()
    c.send(b"\n\n   \n" + msgspec.json.encode({"id": 1, "method": "daemon/ping"}) + b"\n")
    assert c.recv()["id"] == 1


def test_pipelined_requests_all_answered(connect: type[LineConn]) -> None:
    c = connect()
    n = 500
    c.send(
        b"".join(msgspec.json.encode({"id": i, "method": "daemon/ping"}) + b"\n" for i in range(n))
    )
    ids = {c.recv()["id"] for _ in range(n)}
    assert ids == set(range(n))


def test_byte_by_byte_request(connect: type[LineConn]) -> None:
    c = connect()
    for b in msgspec.json.encode({"id": 1, "method": "daemon/ping"}) + b"\n":
        c.send(bytes([b]))
    assert c.recv()["result"] == {}


def test_status_members(daemon: DaemonProcess, connect: type[LineConn]) -> None:
    st = connect().call("daemon/status")["result"]
    assert isinstance(st, dict)
    assert set(st) == {
        "version", "protocol_version", "pid", "started_at", "started_by", "uptime_s", "socket",
        "codex_home", "state_dir", "connections", "jobs", "config", "account", "budget",
        "gateway",
    }  # fmt: skip
    assert st["budget"] is None  # no [codexd.budget] caps
    assert st["gateway"] is None  # off
    assert st["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert st["socket"] == daemon.socket
    assert st["codex_home"] == daemon.env["CODEX_HOME"]
    assert st["state_dir"] == daemon.env["CODEXD_STATE_DIR"]
    assert st["started_by"] == "manual"
    assert st["connections"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", st["started_at"])


def test_methods_table_has_schemas(connect: type[LineConn]) -> None:
    methods = connect().call("daemon/methods")["result"]
    assert isinstance(methods, list)
    by_name = {m["name"]: m for m in methods}
    assert {"initialize", "daemon/ping", "daemon/status", "daemon/methods"} <= set(by_name)
    init = by_name["initialize"]["params_schema"]
    text = msgspec.json.encode(init).decode()
    assert "client" in text and "name" in text
    assert all(m["summary"] for m in methods)


def test_socket_and_runtime_dir_modes(daemon: DaemonProcess) -> None:
    assert os.stat(daemon.socket).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(daemon.socket)).st_mode & 0o777 == 0o700
    assert os.stat(daemon.env["CODEXD_STATE_DIR"]).st_mode & 0o777 == 0o700


def test_connection_past_max_connections_gets_overloaded(daemon_env: dict[str, str]) -> None:
    write_config(daemon_env, "[codexd]\nmax_connections = 2\n")
    with DaemonProcess(daemon_env) as d:
        first, second = LineConn(d.socket), LineConn(d.socket)
        for c in (first, second):
            assert c.call("daemon/ping")["result"] == {}
        third = LineConn(d.socket)
        reply = third.recv()
        code, kind, message = error_of(reply)
        assert (code, kind) == (-32001, "overloaded")
        assert reply["id"] is None
        assert "max_connections" in message
        assert third.at_eof()
        # The two accepted connections are unaffected, and a slot that frees up is reusable.
        assert first.call("daemon/ping", rid=2)["result"] == {}
        second.close()
        # Wait until the daemon has seen the close (asked on the surviving connection).
        rid = 3
        while first.call("daemon/status", rid=rid)["result"]["connections"] != 1:
            rid += 1
        fourth = LineConn(d.socket)
        assert fourth.call("daemon/status")["result"]["connections"] == 2
        for c in (first, third, fourth):
            c.close()


def test_idle_connections_are_closed_so_a_new_client_is_served(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    write_config(
        upstream_env,
        (Path(upstream_env["CODEX_HOME"]) / "config.toml").read_text()
        + "[codexd]\nmax_connections = 5\nconnection_idle_timeout_s = 2\n",
    )
    # 2 s, not less: the four connections below must fill the table before the first idle one
    # is closed, and a loaded machine takes its time.
    with DaemonProcess(upstream_env) as d:
        # Connected first, so idle the longest: one waits on a topic, one on a running job.
        topic = LineConn(d.socket)
        assert topic.call("events/subscribe", {"topics": ["config"]})["result"] == {}
        job = LineConn(d.socket)
        fake_openai.script(stalled(2))  # the job runs, and sends nothing more, until cancelled
        job_id = job.call("job/submit", {"body": {"input": "hi"}})["result"]["job_id"]
        fake_openai.wait_for(lambda s: s.in_flight == 1)
        idle = [LineConn(d.socket) for _ in range(3)]
        for c in idle:
            assert c.call("daemon/ping")["result"] == {}
        full = LineConn(d.socket)
        assert error_of(full.recv())[:2] == (-32001, "overloaded")
        for c in idle:  # the daemon closes each, without a word
            assert c.at_eof()
        newcomer = LineConn(d.socket)
        assert newcomer.call("daemon/ping")["result"] == {}
        # The two waiting connections outlived the idle ones and still work.
        assert topic.call("daemon/ping", rid=2)["result"] == {}
        job.send({"jsonrpc": "2.0", "id": 2, "method": "job/cancel", "params": {"job_id": job_id}})
        while (reply := job.recv()).get("id") != 2:
            pass  # the job's events
        assert reply["result"]["state"] == "cancelled"
