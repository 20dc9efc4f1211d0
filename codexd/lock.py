"""The single-instance lock: `codexd.lock` beside the socket.

Taken before the listener is created, because creating a Unix listener unlinks whatever
socket is at the path: without the lock a second daemon would steal a live daemon's socket.
"""

from __future__ import annotations

import fcntl
import os

from codexd.paths import StartupError


class InstanceLock:
    def __init__(self, lock_path: str, socket_path: str) -> None:
        self._lock_path = lock_path
        self._socket_path = socket_path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            pid = str(holder) if holder is not None else "unknown"
            raise StartupError(
                f"codexd is already running (pid {pid}) on {self._socket_path}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
