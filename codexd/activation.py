"""Adopt listening sockets passed in by a service manager.

systemd (`sd_listen_fds(3)`): `LISTEN_PID` names the process the fds are for, `LISTEN_FDS`
counts them from fd 3, `LISTEN_FDNAMES` names them (`FileDescriptorName=`). codexd takes a
socket named `control` and one named `gateway`; a single unnamed fd is the control socket.
launchd: `launch_activate_socket(name)` for the plist's `Sockets` entries `control` and
`gateway` (macOS only, through ctypes).

Like ssh-agent we are strict: an fd we cannot place, or one that is not a listening Unix stream
socket, is a start-up error, never silently ignored. A socket passed in belongs to the service
manager: the daemon must not unlink its path on exit.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Literal

from codexd.paths import StartupError

log = logging.getLogger("codexd.activation")

SD_LISTEN_FDS_START = 3
CONTROL = "control"
GATEWAY = "gateway"
SOCKET_NAMES = (CONTROL, GATEWAY)
LISTEN_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# More than a handful of fds means a misconfigured unit, not a codexd socket pair.
MAX_LISTEN_FDS = 16

Manager = Literal["systemd", "launchd"]


class ActivationError(StartupError):
    """A passed-in socket codexd cannot use: `codexd run` prints it and exits 1."""


@dataclass(frozen=True, slots=True)
class ActivatedSockets:
    control: socket.socket | None = None
    gateway: socket.socket | None = None
    manager: Manager | None = None

    @property
    def any(self) -> bool:
        return self.control is not None or self.gateway is not None

    def close(self) -> None:
        for sock in (self.control, self.gateway):
            if sock is not None:
                sock.close()


NOTHING = ActivatedSockets()


# --------------------------------------------------------------------------- pure placement


def _is_unnamed(name: str) -> bool:
    # systemd's defaults: "unknown" when nothing names the fd (systemd-socket-activate without
    # --fdname), the socket unit's name ("codexd.socket") when FileDescriptorName= is unset.
    return name in ("", "unknown") or name.endswith(".socket")


def place_systemd_fds(
    env: Mapping[str, str], pid: int, *, first_fd: int = SD_LISTEN_FDS_START
) -> dict[str, int] | None:
    """Which fd is which socket, from the systemd variables; None when nothing is for us.

    Touches no fd. Raises ActivationError for malformed variables, a name codexd does not know,
    a name given twice, or several unnamed fds.
    """
    raw_pid = env.get("LISTEN_PID")
    raw_fds = env.get("LISTEN_FDS")
    if raw_pid is None or raw_fds is None:
        return None
    try:
        listen_pid = int(raw_pid)
    except ValueError:
        raise ActivationError(f"LISTEN_PID={raw_pid!r} is not a process id (socket activation)")
    if listen_pid != pid:
        # Inherited from a parent that was activated: the fds are not ours (as sd_listen_fds).
        log.warning("ignoring LISTEN_FDS: LISTEN_PID=%d is not this process (%d)", listen_pid, pid)
        return None
    try:
        count = int(raw_fds)
    except ValueError:
        raise ActivationError(f"LISTEN_FDS={raw_fds!r} is not a count (socket activation)")
    if count < 0 or count > MAX_LISTEN_FDS:
        raise ActivationError(
            f"LISTEN_FDS={count}: codexd takes at most two sockets (control, gateway); "
            "check the socket units that start codexd.service"
        )
    if count == 0:
        return None
    raw_names = env.get("LISTEN_FDNAMES")
    names = raw_names.split(":") if raw_names is not None else ["unknown"] * count
    if len(names) != count:
        raise ActivationError(
            f"LISTEN_FDNAMES={raw_names!r} names {len(names)} sockets but LISTEN_FDS={count}"
        )
    placed: dict[str, int] = {}
    for offset, name in enumerate(names):
        fd = first_fd + offset
        if count == 1 and _is_unnamed(name):
            name = CONTROL
        if name not in SOCKET_NAMES:
            raise ActivationError(
                f"socket activation passed fd {fd} named {name!r}: codexd takes sockets named "
                "'control' and 'gateway' (set FileDescriptorName= in the .socket unit)"
            )
        if name in placed:
            raise ActivationError(
                f"socket activation passed two sockets named {name!r} (fds {placed[name]} and "
                f"{fd}): give each .socket unit its own FileDescriptorName="
            )
        placed[name] = fd
    return placed


# --------------------------------------------------------------------------- fd checks


def adopt_fd(fd: int, name: str, source: str) -> socket.socket:
    """Wrap an inherited fd as a socket after checking it is a listening Unix stream socket."""
    try:
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(f"{source} passed fd {fd} ({name}) but it is not usable: {exc}")
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, _SO_ACCEPTCONN) if _SO_ACCEPTCONN else 1
    except OSError as exc:
        sock.detach()
        raise ActivationError(f"{source} passed fd {fd} ({name}) but it is not a socket: {exc}")
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        what = f"{sock.family.name}/{sock.type.name}{'' if listening else ', not listening'}"
        sock.detach()
        raise ActivationError(
            f"{source} passed fd {fd} ({name}) as {what}: codexd needs a listening Unix stream "
            "socket (ListenStream=/path in the .socket unit)"
        )
    return sock


_SO_ACCEPTCONN: int = getattr(socket, "SO_ACCEPTCONN", 0)


def _adopt_all(placed: Mapping[str, int], source: str) -> dict[str, socket.socket]:
    adopted: dict[str, socket.socket] = {}
    try:
        for name, fd in placed.items():
            adopted[name] = adopt_fd(fd, name, source)
    except ActivationError:
        for sock in adopted.values():
            sock.close()
        raise
    return adopted


# --------------------------------------------------------------------------- systemd


def from_systemd(
    env: MutableMapping[str, str] | None = None,
    pid: int | None = None,
    *,
    first_fd: int = SD_LISTEN_FDS_START,
) -> ActivatedSockets:
    """Adopt the sockets systemd passed; the LISTEN_* variables are removed either way so that
    processes codexd starts do not inherit them."""
    env = os.environ if env is None else env
    pid = os.getpid() if pid is None else pid
    try:
        placed = place_systemd_fds(env, pid, first_fd=first_fd)
    finally:
        for key in LISTEN_ENV:
            env.pop(key, None)
    if not placed:
        return NOTHING
    adopted = _adopt_all(placed, "systemd")
    return ActivatedSockets(adopted.get(CONTROL), adopted.get(GATEWAY), "systemd")


# --------------------------------------------------------------------------- launchd

# name -> (return code, fds); the real one calls libSystem through ctypes.
LaunchActivate = Callable[[str], tuple[int, list[int]]]


def _launch_activate_socket(name: str) -> tuple[int, list[int]]:  # pragma: no cover - macOS
    import ctypes

    libsystem = ctypes.CDLL("/usr/lib/libSystem.B.dylib", use_errno=True)
    func = libsystem.launch_activate_socket
    func.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.POINTER(ctypes.c_int)),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    func.restype = ctypes.c_int
    fds = ctypes.POINTER(ctypes.c_int)()
    count = ctypes.c_size_t(0)
    rc = func(name.encode(), ctypes.byref(fds), ctypes.byref(count))
    if rc != 0:
        return rc, []
    try:
        return 0, [fds[i] for i in range(count.value)]
    finally:
        libsystem.free.argtypes = [ctypes.c_void_p]
        libsystem.free(fds)


def from_launchd(activate: LaunchActivate | None = None) -> ActivatedSockets:
    """Check in with launchd for the plist's `control` and `gateway` sockets.

    ESRCH means this process is not a launchd job; ENOENT that the plist has no such entry.
    Both mean "not passed", anything else is a start-up error.
    """
    activate = _launch_activate_socket if activate is None else activate
    placed: dict[str, int] = {}
    for name in SOCKET_NAMES:
        rc, fds = activate(name)
        if rc == errno.ESRCH:
            break
        if rc == errno.ENOENT:
            continue
        if rc != 0:
            raise ActivationError(
                f"launch_activate_socket({name!r}) failed: {os.strerror(rc)}; check the Sockets "
                "entry of the codexd LaunchAgent plist"
            )
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ActivationError(
                f"launchd passed {len(fds)} sockets for {name!r}: the plist's Sockets entry must "
                "hold one SockPathName"
            )
        placed[name] = fds[0]
    if not placed:
        return NOTHING
    adopted = _adopt_all(placed, "launchd")
    return ActivatedSockets(adopted.get(CONTROL), adopted.get(GATEWAY), "launchd")


# --------------------------------------------------------------------------- entry point


def activated_sockets(
    env: MutableMapping[str, str] | None = None,
    pid: int | None = None,
    *,
    platform: str = sys.platform,
    launch_activate: LaunchActivate | None = None,
) -> ActivatedSockets:
    """The sockets a service manager passed in (systemd first, then launchd on macOS)."""
    env = os.environ if env is None else env
    systemd = from_systemd(env, pid)
    if systemd.any:
        return systemd
    if platform == "darwin":
        return from_launchd(launch_activate)
    return NOTHING
