"""A real `codexd run` in a subprocess, ready when it says so (sd_notify READY=1).

Used by the integration tests, the benchmarks and `codexd demo`: readiness is the daemon's own
`READY=1` datagram on a socket we bind, never a sleep or a connect loop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from types import TracebackType


class DaemonFailed(RuntimeError):
    """The daemon exited or did not become ready; carries its exit code and stderr."""

    def __init__(self, message: str, returncode: int | None, stderr: str) -> None:
        super().__init__(f"{message} (exit {returncode}); stderr:\n{stderr}")
        self.returncode = returncode
        self.stderr = stderr


class DaemonProcess:
    def __init__(
        self,
        env: Mapping[str, str],
        *,
        args: Sequence[str] = (),
        ready_timeout: float = 20.0,
        stderr_path: str | None = None,
    ) -> None:
        self.env = dict(env)
        self.args = list(args)
        self.ready_timeout = ready_timeout
        self.socket = self.env.get("CODEXD_SOCKET", "")
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify_messages: list[str] = []
        self._notify: socket.socket | None = None
        self._notify_dir: str | None = None
        self._stderr_path = stderr_path
        self._owns_stderr = stderr_path is None
        self._stderr_file: int | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> DaemonProcess:
        self._notify_dir = tempfile.mkdtemp(prefix="codexd-notify-")
        path = os.path.join(self._notify_dir, "notify.sock")
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(path)
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = path
        if self._stderr_path is None:
            fd, self._stderr_path = tempfile.mkstemp(prefix="codexd-stderr-", suffix=".log")
        else:
            fd = os.open(self._stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._stderr_file = fd
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "codexd", "run", *self.args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
        )
        self.wait_for("READY=1", self.ready_timeout)
        return self

    def wait_for(self, field: str, timeout: float) -> list[str]:
        """Wait until a notify datagram carries `field`; returns that datagram's fields."""
        assert self._notify is not None and self.proc is not None
        self._notify.settimeout(0.1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self._notify.recv(4096)
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise DaemonFailed(
                        f"codexd exited before {field}", self.proc.returncode, self.stderr()
                    ) from None
                continue
            fields = data.decode().split("\n")
            self.notify_messages.extend(fields)
            if field in fields:
                return fields
        raise DaemonFailed(f"codexd did not send {field} in {timeout}s", None, self.stderr())

    def wait_for_all(self) -> list[str]:
        """Every notify field received so far, including those still queued on the socket."""
        assert self._notify is not None
        self._notify.setblocking(False)
        try:
            while True:
                try:
                    data = self._notify.recv(4096)
                except BlockingIOError:
                    break
                self.notify_messages.extend(data.decode().split("\n"))
        finally:
            self._notify.setblocking(True)
        return list(self.notify_messages)

    def stderr(self) -> str:
        if self._stderr_path is None:
            return ""
        try:
            with open(self._stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it does not stop in time)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._stderr_file is not None:
            os.close(self._stderr_file)
            self._stderr_file = None
        if self._owns_stderr and self._stderr_path is not None:
            os.unlink(self._stderr_path)
            self._stderr_path = None
        if self._notify_dir is not None:
            import shutil

            shutil.rmtree(self._notify_dir, ignore_errors=True)
            self._notify_dir = None

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.close()
