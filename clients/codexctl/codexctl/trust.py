"""Is the socket the user's own daemon? Checked before the client sends a byte.

Without a private runtime dir (SSH without pam_systemd, cron, containers) the socket falls
back to `${TMPDIR:-/tmp}/codexd-<uid>/`, a name any local user can take first. So the socket's
directory must belong to the user and be closed to writes by others (then nobody else can have
put the socket there), and the process listening on it must run as the user (SO_PEERCRED /
getpeereid). Root talks to another user's daemon only at a socket it named explicitly
(`--socket`, or a path given to the library): that daemon must then run as the owner of the
socket's directory.
"""

from __future__ import annotations

import os
import socket
import stat

from codexctl.errors import DaemonUnreachable, UntrustedSocket

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def expected_owner(path: str, *, explicit: bool, uid: int | None = None) -> int:
    """The uid the daemon at `path` must run as, once its directory passes the check.

    Raises `UntrustedSocket` when the directory is another user's or writable by others,
    `DaemonUnreachable` when there is no such directory.
    """
    uid = os.getuid() if uid is None else uid
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(directory)  # through a link: what counts is who can write where it lands
    except OSError as exc:
        raise DaemonUnreachable(path, exc.strerror) from None
    if not stat.S_ISDIR(st.st_mode):
        raise DaemonUnreachable(path, f"{directory} is not a directory")
    if st.st_uid != uid and not (uid == 0 and explicit):
        raise UntrustedSocket(
            path,
            f"its directory {directory} belongs to uid {st.st_uid}, not to you (uid {uid}), "
            "so another user may be posing as codexd there: choose another place with "
            "--socket or CODEXD_SOCKET",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & _WRITABLE_BY_OTHERS:
        raise UntrustedSocket(
            path,
            f"its directory {directory} is writable by group or others (mode {mode:04o}), "
            f"so anyone could have put the socket there: run chmod 700 {directory}",
        )
    return st.st_uid


def check_peer(sock: socket.socket, path: str, owner: int) -> None:
    """The process listening at the other end of `sock` must run as `owner`."""
    from codexctl.peercred import peer_credentials  # only once something answered

    try:
        uid = peer_credentials(sock).uid
    except OSError as exc:
        raise UntrustedSocket(
            path, f"cannot tell which user listens on it ({exc.strerror or exc})"
        ) from None
    if uid != owner:
        who = "you" if owner == os.getuid() else "the owner of its directory"
        raise UntrustedSocket(
            path,
            f"the process listening on it runs as uid {uid}, not as {who} (uid {owner}), "
            "so it is not your codexd",
        )


def open_checked(path: str, *, explicit: bool, timeout: float | None) -> socket.socket:
    """A blocking socket connected to the daemon at `path`, after both checks passed."""
    owner = expected_owner(path, explicit=explicit)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        check_peer(sock, path, owner)
    except OSError as exc:
        sock.close()
        raise DaemonUnreachable(path, exc.strerror) from None
    except BaseException:
        sock.close()
        raise
    return sock


def check_socket(path: str) -> None:
    """Refuse (`UntrustedSocket`) a socket that is not the user's own codexd, sending nothing.

    For programs that open their own connections, such as an HTTP client bound to
    `gateway.sock`: once the directory has passed, nobody but the user (and root) can put
    another socket in its place.
    """
    open_checked(path, explicit=True, timeout=10.0).close()
