"""`codexctl login | logout | whoami` against a real daemon and the fake issuer."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from codexd.auth.authfile import AuthDocument, auth_file_path, write_auth_file
from codexd.auth.tokens import Secret
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.integration._chatgpt import (
    Setup,
    assert_no_secrets,
    chatgpt_config,
    chatgpt_setup,
    read_auth_json,
    write_config,
)

KEY = "sk-proj-codexctl-login-test-0123456789"
GOOD_KEY = "sk-proj-the-provider-takes-this-one-0000"
BAD_KEY = "sk-proj-the-provider-refuses-this-one-9999"


@pytest.fixture
def setup(daemon_env: dict[str, str]) -> Iterator[Setup]:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER", "SSH_CONNECTION", "SSH_TTY"):
        daemon_env.pop(name, None)
    with chatgpt_setup(daemon_env) as s:
        # API keys are checked against (and used with) the same fake
        write_config(
            daemon_env, f'openai_base_url = "{s.fake.base_url}"\n' + chatgpt_config(s.fake)
        )
        yield s


@pytest.fixture
def keyed(daemon_env: dict[str, str]) -> Iterator[FakeOpenAI]:
    """A fake that, like the real API, answers any key but GOOD_KEY with 401."""
    with FakeOpenAI.running(api_keys={GOOD_KEY}) as fake:
        write_config(daemon_env, f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n')
        yield fake


@pytest.fixture
def daemon(setup: Setup) -> Iterator[DaemonProcess]:
    with setup.daemon() as d:
        yield d


def codexctl(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def start_codexctl(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rows(stdout: str) -> dict[str, str]:
    """`key  value` lines (aligned with two or more spaces) as a dict."""
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in stdout.splitlines())


def read_until(stream: object, needle: str) -> list[str]:
    lines: list[str] = []
    while True:
        line = stream.readline()  # type: ignore[attr-defined]
        assert line, f"{needle!r} never came; got {lines}"
        lines.append(line.strip())
        if needle in line:
            return lines


def test_api_key_login_reads_stdin_then_whoami_and_logout(
    setup: Setup, daemon: DaemonProcess
) -> None:
    env = setup.env
    login = codexctl(env, "login", "--api-key", stdin=KEY + "\n")
    assert login.returncode == 0, login.stderr
    assert login.stdout == "Logged in using an API key stored in auth.json\n"
    assert read_auth_json(env) == {"auth_mode": "apikey", "OPENAI_API_KEY": KEY}
    (checked,) = [r for r in setup.fake.requests if r.path == "/v1/models"]
    assert (checked.method, checked.headers["authorization"]) == ("GET", f"Bearer {KEY}")

    who = codexctl(env, "whoami")
    assert who.returncode == 0, who.stderr
    table = rows(who.stdout)
    assert table["mode"] == "API key"
    assert table["key"] == KEY[:8] + "***" + KEY[-5:]  # Codex's mask: sk-proj-***56789
    assert table["credential"] == "API key stored in auth.json"
    assert table["store"] == "auth.json file"
    assert "api_key" not in who.stdout and "auth_file" not in who.stdout
    as_json = json.loads(codexctl(env, "whoami", "--json").stdout)
    assert (as_json["mode"], as_json["source"]) == ("api_key", "auth_file")

    out = codexctl(env, "logout")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Logged out (the stored login was deleted)\n"
    assert read_auth_json(env) is None
    nobody = codexctl(env, "whoami")
    assert nobody.returncode == 4
    assert nobody.stderr == "codexctl: not logged in: run codexctl login\n"
    assert_no_secrets([KEY], login.stdout + login.stderr, who.stdout, out.stdout, daemon.stderr())


def test_api_key_login_refuses_a_key_the_provider_rejects(
    daemon_env: dict[str, str], keyed: FakeOpenAI
) -> None:
    with DaemonProcess(daemon_env) as daemon:
        refused = codexctl(daemon_env, "login", "--api-key", stdin=BAD_KEY + "\n")
        assert (refused.returncode, refused.stdout) == (4, "")
        assert refused.stderr == (
            "codexctl: the provider refused this API key (401 invalid_api_key), so it was not "
            "stored: check the key and run codexctl login --api-key again\n"
        )
        assert read_auth_json(daemon_env) is None
        assert [r.status for r in keyed.requests] == [401]  # one GET /models, nothing else

        unchecked = codexctl(daemon_env, "login", "--api-key", "--no-verify", stdin=BAD_KEY)
        assert unchecked.returncode == 0, unchecked.stderr
        assert read_auth_json(daemon_env) == {"auth_mode": "apikey", "OPENAI_API_KEY": BAD_KEY}
        assert len(keyed.requests) == 1

        good = codexctl(daemon_env, "login", "--api-key", stdin=GOOD_KEY + "\n")
        assert good.returncode == 0, good.stderr
        assert read_auth_json(daemon_env) == {"auth_mode": "apikey", "OPENAI_API_KEY": GOOD_KEY}
        assert [r.status for r in keyed.requests] == [401, 200]
        assert codexctl(daemon_env, "ask", "hi").returncode == 0

        alone = codexctl(daemon_env, "login", "--no-verify")
        assert alone.returncode == 2 and "--no-verify goes with --api-key" in alone.stderr
        stderr = daemon.stderr()
    assert_no_secrets([BAD_KEY, GOOD_KEY], refused.stderr, good.stdout + good.stderr, stderr)


@pytest.mark.parametrize("source", ["auth_file", "env"])
def test_a_401_names_the_credential_that_was_used(
    daemon_env: dict[str, str], keyed: FakeOpenAI, source: str
) -> None:
    """A key that stopped working: the message says which one and what to do about it."""
    if source == "env":
        daemon_env["OPENAI_API_KEY"] = BAD_KEY
    else:  # as `codex login --with-api-key` (or an unchecked codexctl login) stores it
        path = auth_file_path(daemon_env["CODEX_HOME"])
        write_auth_file(path, AuthDocument.api_key_login(Secret(BAD_KEY)))
    with DaemonProcess(daemon_env):
        result = codexctl(daemon_env, "ask", "hi")
    assert (result.returncode, result.stdout) == (4, "")
    if source == "env":
        assert result.stderr == (
            "codexctl: upstream rejected the API key in OPENAI_API_KEY of the daemon's "
            "environment (401 invalid_api_key): correct OPENAI_API_KEY where codexd gets its "
            "environment (for the service: ~/.config/codexd/env) and restart codexd\n"
        )
    else:
        assert result.stderr == (
            f"codexctl: upstream rejected the API key stored in {path} (401 invalid_api_key): "
            "store a valid one with codexctl login --api-key, or remove it with codexctl "
            "logout\n"
        )
    assert BAD_KEY not in result.stderr


def test_the_api_key_is_never_an_argument(setup: Setup, daemon: DaemonProcess) -> None:
    refused = codexctl(setup.env, "login", "--api-key", KEY)
    assert refused.returncode == 2
    empty = codexctl(setup.env, "login", "--api-key", stdin="")
    assert empty.returncode == 2
    assert "no API key on stdin" in empty.stderr
    assert read_auth_json(setup.env) is None


def test_browser_login_prints_the_url_and_waits(setup: Setup, daemon: DaemonProcess) -> None:
    proc = start_codexctl(setup.env, "login")
    try:
        assert proc.stderr is not None and proc.stdout is not None
        lines = read_until(proc.stderr, "/oauth/authorize?")
        url = lines[-1]
        assert url.startswith(setup.issuer.origin)
        page = httpx.get(url, follow_redirects=True, timeout=30)
        assert page.status_code == 200
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "Logged in using ChatGPT as user@example.com (plus plan)\n"
    assert "opened in your browser" not in err  # no display here: nothing to open

    who = codexctl(setup.env, "whoami")
    table = rows(who.stdout)
    assert table["credential"] == "ChatGPT access token stored in auth.json"
    assert (table["email"], table["plan"]) == ("user@example.com", "plus")
    assert "key" not in table  # a ChatGPT login has no API key to hint at
    saved = read_auth_json(setup.env)
    assert saved is not None
    out_logout = codexctl(setup.env, "logout")
    assert out_logout.stdout == "Logged out (the login was revoked upstream and deleted)\n"
    assert setup.issuer.stats().revocations == 1


def read_terminal_until(master: int, needle: bytes, guard_s: float = 30.0) -> str:
    """What a pseudo-terminal showed up to `needle` (the deadline is only a hang guard)."""
    seen = b""
    deadline = time.monotonic() + guard_s
    while needle not in seen:
        assert time.monotonic() < deadline, f"{needle!r} never came; the screen: {seen!r}"
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            chunk = os.read(master, 65536)
            assert chunk, f"the terminal closed; the screen: {seen!r}"
            seen += chunk
    return seen.decode().replace("\r\n", "\n")


@pytest.mark.parametrize(
    "where",
    [{"SSH_CONNECTION": "192.0.2.1 50000 192.0.2.2 22", "DISPLAY": ":0"}, {}],
    ids=["over SSH", "no display"],
)
def test_browser_login_without_a_browser_points_to_device(
    setup: Setup, daemon: DaemonProcess, where: dict[str, str]
) -> None:
    """On a terminal: the URL, then why nothing was opened and that --device is the way."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexctl", "login"],
        env=dict(setup.env, **where),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    try:
        screen = read_terminal_until(master, b"Ctrl-C cancels)")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    lines = screen.splitlines()
    assert lines[:2] == ["Sign in with your browser:", ""]
    assert lines[2].startswith(f"  {setup.issuer.origin}/oauth/authorize?")
    why = "an SSH session" if where else "no DISPLAY or WAYLAND_DISPLAY"
    assert lines[4:] == [
        f"No browser to open here ({why}): use codexctl login --device to sign in from "
        "another device, or open the URL above in a browser on this machine.",
        "Waiting for the sign-in to complete... (Ctrl-C cancels)",
    ]


def test_device_login_prints_the_code(setup: Setup, daemon: DaemonProcess) -> None:
    proc = start_codexctl(setup.env, "login", "--device")
    try:
        assert proc.stderr is not None
        lines = read_until(proc.stderr, "enter the code")
        assert setup.issuer.verification_url in lines
        code = read_until(proc.stderr, "-")[-1]
        setup.issuer.approve_device(code)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "Logged in using ChatGPT as user@example.com (plus plan)\n"


def test_ctrl_c_cancels_the_login_in_the_daemon(setup: Setup, daemon: DaemonProcess) -> None:
    proc = start_codexctl(setup.env, "login")
    try:
        assert proc.stderr is not None
        read_until(proc.stderr, "Ctrl-C cancels")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "login cancelled" in err
    # The daemon let go of the callback port: the next login gets the first one again.
    again = codexctl(setup.env, "rpc", "account/login", '{"method": "browser"}')
    assert "localhost%3A1455" in json.loads(again.stdout)["auth_url"]


def test_whoami_names_an_env_key(daemon_env: dict[str, str]) -> None:
    env = dict(daemon_env, OPENAI_API_KEY="sk-env-key-for-whoami-0000")
    with DaemonProcess(env) as d:
        who = codexctl(d.env, "whoami")
    assert who.returncode == 0, who.stderr
    assert rows(who.stdout)["credential"] == "API key from the daemon's environment"
    assert rows(who.stdout)["key"] == "sk-env-k***-0000"
    assert "sk-env-key" not in who.stdout
    assert os.environ.get("OPENAI_API_KEY") != env["OPENAI_API_KEY"]


def test_status_and_whoami_use_the_same_words_for_a_login(
    setup: Setup, daemon: DaemonProcess
) -> None:
    env = setup.env
    assert codexctl(env, "login", "--api-key", stdin=KEY + "\n").returncode == 0
    who = rows(codexctl(env, "whoami").stdout)
    status = rows(codexctl(env, "status").stdout)
    assert who["mode"] == "API key"
    assert status["account"] == "API key"  # not the wire value api_key
    as_json = json.loads(codexctl(env, "whoami", "--json").stdout)
    assert (as_json["mode"], as_json["key_hint"]) == ("api_key", "sk-proj-***56789")
