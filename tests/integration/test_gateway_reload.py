"""The gateway follows reloads (gateway/listeners.py), shows in `daemon/status` and
`codexctl status`, and its errors speak HTTP: a real daemon, real HTTP, the fake upstream.

`config/reload` answers once the listeners follow the new config, so every test waits on
that reply (never on time) before it looks at the sockets.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from codexctl import Client
from codexd.testing import fake_openai as fo
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.conftest import free_port, write_config


def config_text(fake: FakeOpenAI, gateway: str) -> str:
    return (
        f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n'
        "[model_providers.fake]\n"
        f'name = "fake"\nbase_url = "{fake.base_url}"\nenv_key = "FAKE_KEY"\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
        f"[codexd.gateway]\n{gateway}"
    )


@pytest.fixture
def env(daemon_env: dict[str, str], fake_openai: FakeOpenAI) -> dict[str, str]:
    write_config(daemon_env, config_text(fake_openai, "enabled = false\n"))
    daemon_env["OPENAI_API_KEY"] = "sk-test-key-for-the-fake-0000"
    daemon_env["FAKE_KEY"] = "sk-test-key-for-the-fake-0001"
    return daemon_env


@pytest.fixture
def daemon(env: dict[str, str]) -> Iterator[DaemonProcess]:
    with DaemonProcess(env) as proc:
        yield proc


def gateway_socket(daemon: DaemonProcess) -> str:
    return os.path.join(os.path.dirname(daemon.socket), "gateway.sock")


def reload_with(daemon: DaemonProcess, fake: FakeOpenAI, gateway: str) -> None:
    """Write the [codexd.gateway] table and reload; returns once the listeners follow."""
    write_config(daemon.env, config_text(fake, gateway))
    with Client(daemon.socket) as c:
        assert c.call("config/reload")["generation"] >= 1


def status_gateway(daemon: DaemonProcess) -> Any:
    with Client(daemon.socket) as c:
        return c.call("daemon/status")["gateway"]


def token_of(daemon: DaemonProcess) -> str:
    with Client(daemon.socket) as c:
        return str(c.call("gateway/token", {})["token"])


def unix_http(daemon: DaemonProcess) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=gateway_socket(daemon))
    return httpx.Client(base_url="http://codexd", transport=transport, timeout=30)


def tcp_http(daemon: DaemonProcess, address: str) -> httpx.Client:
    headers = {"authorization": f"Bearer {token_of(daemon)}"}
    return httpx.Client(base_url=f"http://{address}", headers=headers, timeout=30)


BODY = {"model": "gpt-5", "input": "hi"}


def answered(http: httpx.Client) -> str:
    reply = http.post("/v1/responses", json=BODY)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["output"][0]["content"][0]["text"])


def refused_on_unix(daemon: DaemonProcess) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(gateway_socket(daemon))
        except (FileNotFoundError, ConnectionRefusedError):
            return True
    return False


def refused_on_tcp(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


def codexctl_on_a_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run codexctl on a pseudo-terminal, as a person would; its screen and exit code."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60  # a hang guard only
    try:
        while True:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            seen += chunk
        return proc.wait(timeout=30), seen.decode().replace("\r\n", "\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def status_row(screen: str, name: str) -> str:
    for line in screen.splitlines():
        if line.startswith(name + " "):
            return line[len(name) :].strip()
    raise AssertionError(f"no {name!r} row in {screen!r}")


# --------------------------------------------------------------------------- reloads


def test_a_reload_turns_the_gateway_on_then_off(
    daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert status_gateway(daemon) is None
    assert refused_on_unix(daemon) and refused_on_tcp(address)

    reload_with(daemon, fake_openai, f'enabled = true\ntcp = "{address}"\n')
    assert status_gateway(daemon) == {"unix": gateway_socket(daemon), "tcp": address}
    with unix_http(daemon) as http:
        assert answered(http)
    with tcp_http(daemon, address) as http:
        assert answered(http)
    assert f"gateway serving on {gateway_socket(daemon)} and http://{address}" in daemon.stderr()

    reload_with(daemon, fake_openai, f'enabled = false\ntcp = "{address}"\n')
    assert status_gateway(daemon) is None
    assert refused_on_unix(daemon) and refused_on_tcp(address)
    assert "gateway stopped" in daemon.stderr()

    reload_with(daemon, fake_openai, "enabled = true\n")  # on again, gateway.sock only
    assert status_gateway(daemon) == {"unix": gateway_socket(daemon), "tcp": None}
    with unix_http(daemon) as http:
        assert answered(http)
    assert refused_on_tcp(address)


def test_a_reload_moves_the_tcp_address(daemon: DaemonProcess, fake_openai: FakeOpenAI) -> None:
    first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    reload_with(daemon, fake_openai, f'enabled = true\ntcp = "{first}"\n')
    with tcp_http(daemon, first) as http:
        assert answered(http)

    reload_with(daemon, fake_openai, f'enabled = true\ntcp = "{second}"\n')
    assert status_gateway(daemon) == {"unix": gateway_socket(daemon), "tcp": second}
    with tcp_http(daemon, second) as http:
        assert answered(http)
    assert refused_on_tcp(first)
    with unix_http(daemon) as http:  # gateway.sock was left alone
        assert answered(http)
    assert f"gateway: moved from http://{first} to http://{second}" in daemon.stderr()


def test_a_tcp_address_taken_on_reload_keeps_the_old_one(
    daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    first = f"127.0.0.1:{free_port()}"
    reload_with(daemon, fake_openai, f'enabled = true\ntcp = "{first}"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        reload_with(daemon, fake_openai, f'enabled = true\ntcp = "{busy}"\n')
        assert status_gateway(daemon) == {"unix": gateway_socket(daemon), "tcp": first}
        with tcp_http(daemon, first) as http:
            assert answered(http)
        assert f"cannot listen on [codexd.gateway] tcp = '{busy}'" in daemon.stderr()


def test_a_stream_running_when_the_gateway_stops_finishes(
    daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    address = f"127.0.0.1:{free_port()}"
    reload_with(daemon, fake_openai, f'enabled = true\ntcp = "{address}"\n')
    deltas = tuple(f"w{i} " for i in range(40))
    fake_openai.set_reply(fo.Reply(deltas=deltas, hold_after=6))
    body = {"model": "gpt-5", "input": "hi", "stream": True}
    with (
        tcp_http(daemon, address) as http,
        http.stream("POST", "/v1/responses", json=body) as reply,
    ):
        lines = reply.iter_lines()
        job_id = reply.headers["x-request-id"]
        text = ""
        for line in lines:
            if line.startswith("data: ") and "output_text.delta" in line:
                text += json.loads(line[6:])["delta"]
                break
        reload_with(daemon, fake_openai, "enabled = false\n")
        assert status_gateway(daemon) is None and refused_on_tcp(address)
        with Client(daemon.socket) as c:  # the stream was still running when it stopped
            assert c.call("job/get", {"job_id": job_id})["state"] == "running"
        fake_openai.release()
        events = []
        for line in lines:
            if line.startswith("data: "):
                event = json.loads(line[6:])
                events.append(event["type"])
                if event["type"] == "response.output_text.delta":
                    text += event["delta"]
    assert events[-1] == "response.completed"
    assert text == "".join(deltas)


# --------------------------------------------------------------------------- what a person sees


def test_status_and_codexctl_status_show_the_gateway(
    daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    code, screen = codexctl_on_a_terminal(daemon.env, "status")
    assert code == 0, screen
    assert status_row(screen, "gateway").startswith("off")

    address = f"127.0.0.1:{free_port()}"
    reload_with(daemon, fake_openai, f'enabled = true\ntcp = "{address}"\n')
    code, screen = codexctl_on_a_terminal(daemon.env, "status")
    assert code == 0, screen
    assert status_row(screen, "gateway") == f"{gateway_socket(daemon)} and http://{address}"
    as_json = subprocess.run(
        [sys.executable, "-m", "codexctl", "status", "--json"],
        env=daemon.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(as_json.stdout)["gateway"] == {
        "unix": gateway_socket(daemon),
        "tcp": address,
    }


def test_gateway_token_prints_the_token_and_says_when_nothing_takes_it(
    daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    def token_command() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "codexctl", "gateway", "token"],
            env=daemon.env,
            capture_output=True,
            text=True,
        )

    off = token_command()
    assert off.returncode == 0 and off.stdout == token_of(daemon) + "\n"
    assert "the gateway is off" in off.stderr
    reload_with(daemon, fake_openai, "enabled = true\n")
    unix_only = token_command()
    assert unix_only.returncode == 0 and unix_only.stdout == token_of(daemon) + "\n"
    assert "no TCP address" in unix_only.stderr
    reload_with(daemon, fake_openai, f'enabled = true\ntcp = "127.0.0.1:{free_port()}"\n')
    on = token_command()
    assert on.returncode == 0 and on.stdout == token_of(daemon) + "\n" and on.stderr == ""


# --------------------------------------------------------------------------- error wordings


@pytest.fixture
def on(daemon: DaemonProcess, fake_openai: FakeOpenAI) -> DaemonProcess:
    reload_with(daemon, fake_openai, "enabled = true\n")
    return daemon


def error_of(reply: httpx.Response) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    for internal in ("job/submit", "params", "$.", "invalid params"):
        assert internal not in error["message"], error
    return error


def test_an_unknown_provider_header_is_named_as_a_header(on: DaemonProcess) -> None:
    with unix_http(on) as http:
        reply = http.post("/v1/responses", json=BODY, headers={"x-codexd-provider": "nope"})
    assert reply.status_code == 400
    error = error_of(reply)
    assert error["message"].startswith("unknown provider 'nope' in X-Codexd-Provider (known: ")
    assert "fake" in error["message"] and "openai" in error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] is None


def test_an_unknown_profile_header_is_named_as_a_header(on: DaemonProcess) -> None:
    with unix_http(on) as http:
        reply = http.post("/v1/responses", json=BODY, headers={"x-codexd-profile": "nope"})
    assert reply.status_code == 400
    assert error_of(reply)["message"].startswith("unknown profile 'nope' in X-Codexd-Profile")


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/v1/responses", {"model": 5, "input": "hi"}, "model", "'model' must be a string"),
        ("/v1/responses", {"model": "gpt-5"}, "input", "a responses request needs `input`"),
        ("/v1/chat/completions", {"model": "gpt-5"}, "messages", "non-empty `messages`"),
        (
            "/v1/responses",
            {"model": "gpt-5", "input": "hi", "reasoning": {"effort": "max"}},
            "reasoning.effort",
            "gpt-5 does not take reasoning effort 'max'",
        ),
        (
            "/v1/chat/completions",
            {
                "model": "gpt-5",
                "messages": [{"role": "user", "content": "hi"}],
                "reasoning_effort": "max",
            },
            "reasoning_effort",
            "choose one of minimal, low, medium, high",
        ),
    ],
)
def test_a_bad_body_member_is_named_as_a_body_param(
    on: DaemonProcess, path: str, body: dict[str, Any], param: str, words: str
) -> None:
    with unix_http(on) as http:
        reply = http.post(path, json=body)
    assert reply.status_code == 400
    error = error_of(reply)
    assert words in error["message"] and error["param"] == param
    assert error["type"] == "invalid_request_error"
