"""Fixtures shared by the whole suite: private directories and a real daemon subprocess."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
import pytest
from hypothesis import settings

from codexd.eventloop import ENV_VAR as EVENT_LOOP_VAR
from codexd.testing.daemon_process import DaemonProcess

# In CI the examples are derived from each test's name, so a run is repeatable: a property
# that fails there fails the same way on a rerun. Locally, hypothesis explores at random.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

if TYPE_CHECKING:
    from codexd.testing.fake_openai import FakeOpenAI


def in_ci() -> bool:
    """CI sets CI=true: there every area of the suite must run, none may skip for a tool."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """This machine lacks what the test needs: skip with `reason` locally, fail under CI=true.

    For what a test needs of the machine (a program, root, a service): a green CI run must
    not hide a whole area that skipped because the runner lacked it. Not for platform-only
    tests (macOS paths, /proc): those keep their plain skip."""
    if in_ci():
        pytest.fail(f"CI=true, so this test must run, but it {reason}", pytrace=False)
    pytest.skip(reason)


def require(condition: object, reason: str) -> None:
    """Go on when `condition` holds; else `missing(reason)`."""
    if not condition:
        missing(reason)


def require_module(name: str, minversion: str | None = None) -> Any:
    """`pytest.importorskip`, but a missing test dependency fails under CI=true."""
    try:
        return pytest.importorskip(name, minversion=minversion)
    except pytest.skip.Exception as exc:  # raised with allow_module_level: keep it, locally
        if in_ci():
            pytest.fail(f"CI=true, so this test must run, but it needs {name}: {exc}")
        raise


def require_root(why: str) -> None:
    """Root, to fork a child of another uid (see `require`)."""
    require(os.getuid() == 0, f"needs root {why}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    """A loopback TCP port nothing listens on now (for a gateway `tcp` address)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_env_under(root: Path) -> dict[str, str]:
    """An environment whose daemon lives entirely inside `root` (no credentials)."""
    home = root / "codex-home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    # The one variable kept: `make test` runs the daemons of a second pass on the other loop.
    if EVENT_LOOP_VAR in os.environ:
        env[EVENT_LOOP_VAR] = os.environ[EVENT_LOOP_VAR]
    env.pop("NOTIFY_SOCKET", None)
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(
        CODEXD_SOCKET=str(root / "run" / "codexd.sock"),
        CODEXD_STATE_DIR=str(root / "state"),
        CODEX_HOME=str(home),
    )
    return env


@pytest.fixture
def daemon_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose daemon lives entirely inside tmp_path."""
    return daemon_env_under(tmp_path)


@pytest.fixture
def daemon(daemon_env: dict[str, str]) -> Iterator[DaemonProcess]:
    with DaemonProcess(daemon_env) as proc:
        yield proc


class LineConn:
    """A raw NDJSON connection for protocol tests: send bytes, read decoded lines."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data: bytes | dict[str, object]) -> None:
        if isinstance(data, dict):
            data = msgspec.json.encode(data) + b"\n"
        self.sock.sendall(data)

    def recv(self) -> dict[str, object]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        value = msgspec.json.decode(line)
        assert isinstance(value, dict)
        return value

    def call(self, method: str, params: object = None, rid: int | str = 1) -> dict[str, object]:
        msg: dict[str, object] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self.recv()

    def at_eof(self) -> bool:
        """True when the daemon closed the connection (and sent nothing more)."""
        rest = self.sock.recv(65536)
        self.buf += rest
        return rest == b""

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect(daemon: DaemonProcess) -> Iterator[type[LineConn]]:
    opened: list[LineConn] = []

    class Conn(LineConn):
        def __init__(self, path: str = daemon.socket, timeout: float = 10.0) -> None:
            super().__init__(path, timeout)
            opened.append(self)

    yield Conn
    for c in opened:
        c.close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    from codexd.testing.fake_openai import FakeOpenAI

    with FakeOpenAI.running() as fake:
        yield fake


def write_config(env: dict[str, str], text: str) -> None:
    path = os.path.join(env["CODEX_HOME"], "config.toml")
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def upstream_env(daemon_env: dict[str, str], fake_openai: FakeOpenAI) -> dict[str, str]:
    """A daemon environment whose `openai` provider is the fake, with an API key."""
    write_config(
        daemon_env,
        f'openai_base_url = "{fake_openai.base_url}"\nmodel = "gpt-5"\n'
        "[model_providers.fake]\n"
        f'name = "fake"\nbase_url = "{fake_openai.base_url}"\nenv_key = "FAKE_KEY"\n',
    )
    daemon_env["OPENAI_API_KEY"] = "sk-test-key-for-the-fake-0000"
    daemon_env["FAKE_KEY"] = "sk-test-key-for-the-fake-0001"
    return daemon_env


@pytest.fixture
def upstream_daemon(upstream_env: dict[str, str]) -> Iterator[DaemonProcess]:
    with DaemonProcess(upstream_env) as proc:
        yield proc
