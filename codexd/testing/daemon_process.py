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
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

from codexd.sdnotify import CONFIG_WATCHED


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
        self._datagrams: list[list[str]] = []
        self._cursor = 0
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
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
        self._reader = threading.Thread(
            target=self._read_notifications, name="codexd-notify", daemon=True
        )
        self._reader.start()
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

    def _read_notifications(self) -> None:
        """Drain the notify socket as systemd would, so the daemon never finds it full."""
        sock = self._notify
        assert sock is not None
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            with self._cond:
                self._datagrams.append(data.decode().split("\n"))
                self.notify_messages.extend(self._datagrams[-1])
                self._cond.notify_all()

    def wait_for(self, field: str, timeout: float) -> list[str]:
        """Wait for the next notify datagram (after the one the last wait returned) that
        carries `field`; returns that datagram's fields."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(self._cursor, len(self._datagrams)):
                    if field in self._datagrams[index]:
                        self._cursor = index + 1
                        return self._datagrams[index]
                if self.proc.poll() is not None:
                    raise DaemonFailed(
                        f"codexd exited before {field}", self.proc.returncode, self.stderr()
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DaemonFailed(
                        f"codexd did not send {field} in {timeout}s", None, self.stderr()
                    )
                self._cond.wait(min(left, 0.1))

    def wait_config_watched(self, timeout: float = 10.0) -> None:
        """Wait until codexd's config watcher is live: a file saved after this returns is
        seen by the watcher (not only by the reload it makes when it starts)."""
        self.wait_for(CONFIG_WATCHED, timeout)

    def wait_for_all(self) -> list[str]:
        """Every notify field received so far."""
        with self._cond:
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
            # Wake the reader with an empty datagram, then let it go.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
                try:
                    poke.sendto(b"", self._notify.getsockname())
                except OSError:
                    pass
            if self._reader is not None:
                self._reader.join(5)
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
