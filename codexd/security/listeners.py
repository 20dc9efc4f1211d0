"""The daemon's private Unix listeners: the control socket and `gateway.sock`.

Both are made the same way by `listen_private`: bound under umask 0177, so the socket file is
never more open than 0600, not even for the instant between `bind` and `chmod`, then set to
0600. When a service manager passed the socket in, it is adopted as it is: the manager made
its file and owns it. On close `unlink_if_ours` removes the file only while it is still the
socket we bound (same inode): a second daemon that took the path over keeps its socket.
The directory around them is the real fence (`files.ensure_private_dir`).
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Final

import anyio
import anyio.abc

from codexd.paths import StartupError

LISTEN_BACKLOG: Final = 4096
SOCKET_MODE: Final = 0o600
_UMASK: Final = 0o777 & ~SOCKET_MODE


async def listen_private(
    path: str, *, adopted: socket.socket | None = None, backlog: int = LISTEN_BACKLOG
) -> tuple[anyio.abc.SocketListener, int | None]:
    """A listener on `path` (or on `adopted`, when a service manager passed one in), and
    the inode of the socket file we made: None when adopted, which must never be unlinked.

    Raises `StartupError` naming the path when it cannot be bound."""
    if adopted is not None:
        return await anyio.abc.SocketListener.from_socket(adopted), None
    old_umask = os.umask(_UMASK)
    try:
        listener = await anyio.create_unix_listener(path, mode=SOCKET_MODE, backlog=backlog)
    except OSError as exc:
        raise StartupError(f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    return listener, os.lstat(path).st_ino


def unlink_if_ours(path: str, ino: int | None) -> None:
    """Remove the socket at `path` only if it is still the one we created (inode `ino`);
    nothing when `ino` is None (an adopted socket)."""
    if ino is None:
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode) and st.st_ino == ino:
        os.unlink(path)
