"""Start-up checks, the single-instance lock, stale sockets, signals, and the peer-uid check."""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from codexd.testing.daemon_process import DaemonProcess
from tests.conftest import LineConn, require_root


def run_daemon_once(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """A `codexd run` expected to refuse to start: returns its exit code and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "codexd", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_sigterm_exits_zero_and_removes_socket(daemon_env: dict[str, str]) -> None:
    proc = DaemonProcess(daemon_env).start()
    try:
        assert os.path.exists(proc.socket)
        assert proc.stop() == 0
        assert not os.path.exists(proc.socket)
        assert "STOPPING=1" in proc.wait_for_all()
    finally:
        proc.close()


def test_sigint_exits_zero(daemon_env: dict[str, str]) -> None:
    proc = DaemonProcess(daemon_env).start()
    try:
        proc.signal(signal.SIGINT)
        assert proc.proc is not None
        assert proc.proc.wait(20) == 0
        assert not os.path.exists(proc.socket)
    finally:
        proc.close()


def test_second_daemon_exits_1_with_message(daemon: DaemonProcess) -> None:
    second = run_daemon_once(daemon.env)
    assert second.returncode == 1
    assert daemon.proc is not None
    expected = f"codexd is already running (pid {daemon.proc.pid}) on {daemon.socket}"
    assert expected in second.stderr
    # The first daemon still answers on its socket: the second did not steal it.
    assert LineConn(daemon.socket).call("daemon/ping")["result"] == {}


def test_stale_socket_of_killed_daemon_is_replaced(daemon_env: dict[str, str]) -> None:
    first = DaemonProcess(daemon_env).start()
    first.kill()
    first.close()
    assert os.path.exists(daemon_env["CODEXD_SOCKET"]), "SIGKILL leaves the socket behind"
    with pytest.raises(ConnectionRefusedError):
        LineConn(daemon_env["CODEXD_SOCKET"])
    with DaemonProcess(daemon_env) as second:
        assert LineConn(second.socket).call("daemon/ping")["result"] == {}


def test_runtime_dir_open_to_others_is_refused(daemon_env: dict[str, str]) -> None:
    run_dir = os.path.dirname(daemon_env["CODEXD_SOCKET"])
    os.mkdir(run_dir, 0o755)
    os.chmod(run_dir, 0o755)
    result = run_daemon_once(daemon_env)
    assert result.returncode == 1
    assert f"chmod 700 {run_dir}" in result.stderr
    assert "Traceback" not in result.stderr


def test_runtime_dir_symlink_is_refused(daemon_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    os.symlink(target, os.path.dirname(daemon_env["CODEXD_SOCKET"]))
    result = run_daemon_once(daemon_env)
    assert result.returncode == 1
    assert "symlink" in result.stderr
    assert not (target / "codexd.sock").exists()


def test_runtime_dir_of_another_user_is_refused(daemon_env: dict[str, str]) -> None:
    require_root("to give the directory to another user")
    run_dir = os.path.dirname(daemon_env["CODEXD_SOCKET"])
    os.mkdir(run_dir, 0o700)
    os.chown(run_dir, pwd.getpwnam("nobody").pw_uid, -1)
    result = run_daemon_once(daemon_env)
    assert result.returncode == 1
    assert "not to you" in result.stderr


def test_missing_codex_home_is_refused(daemon_env: dict[str, str], tmp_path: Path) -> None:
    daemon_env["CODEX_HOME"] = str(tmp_path / "does-not-exist")
    result = run_daemon_once(daemon_env)
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert "does-not-exist" in result.stderr


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "codexd", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("codexd ")


def test_peer_of_another_uid_is_closed_without_an_answer(daemon: DaemonProcess) -> None:
    """A child that becomes `nobody` connects and is closed by the peer check without a byte.

    The child keeps root's file access (saved uid 0, then setfsuid(0)) and the socket's modes
    are loosened, so connect() succeeds and only the peer check can refuse it."""
    require_root("to fork a child of another uid")
    nobody = pwd.getpwnam("nobody")
    run_dir = os.path.dirname(daemon.socket)
    os.chmod(run_dir, 0o711)
    os.chmod(daemon.socket, 0o666)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, connect, ask, report what happened
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
            s.connect(daemon.socket)
            report = b"connected;"
            try:
                s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon/ping"}\n')
            except OSError:
                pass
            try:
                data = s.recv(65536)
                report += b"eof" if data == b"" else b"data:" + data
            except ConnectionResetError:
                report += b"eof"
            except TimeoutError:
                report += b"timeout"
        except Exception as exc:  # report, never raise out of a forked test child
            report += repr(exc).encode()
        os.write(write_fd, report)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        report = r.read()
    os.waitpid(pid, 0)
    assert report == b"connected;eof"
    # Root (our uid) is still served.
    assert LineConn(daemon.socket).call("daemon/ping")["result"] == {}
    assert "refused a connection from uid" in daemon.stderr()
