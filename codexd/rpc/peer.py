"""Who is on the other end of a Unix socket: uid (for the access check) and process name."""

from __future__ import annotations

import os
import socket
import struct
import sys
from dataclasses import dataclass

_INTERPRETERS = ("python", "node", "ruby", "perl", "bash", "sh", "deno", "bun", "php")


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int | None
    uid: int
    gid: int | None


def peer_credentials(sock: socket.socket) -> PeerCred:
    """SO_PEERCRED on Linux, LOCAL_PEERCRED (+ LOCAL_PEERPID) on macOS and the BSDs."""
    if sys.platform.startswith("linux"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        linux_pid, uid, gid = struct.unpack("3i", raw)
        return PeerCred(pid=linux_pid or None, uid=uid, gid=gid)
    sol_local, local_peercred, local_peerpid = 0, 0x001, 0x002
    # struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
    raw = sock.getsockopt(sol_local, local_peercred, struct.calcsize("IIh16I"))
    version, uid, ngroups, *groups = struct.unpack("IIh16I", raw[: struct.calcsize("IIh16I")])
    if version != 0:
        raise OSError(f"unknown xucred version {version}")
    pid: int | None
    try:
        pid = struct.unpack("i", sock.getsockopt(sol_local, local_peerpid, 4))[0]
    except OSError:
        pid = None
    return PeerCred(pid=pid, uid=uid, gid=groups[0] if ngroups else None)


def peer_allowed(cred: PeerCred, own_uid: int | None = None) -> bool:
    """Only our own uid and root may talk to the daemon (ssh-agent's rule)."""
    own = os.getuid() if own_uid is None else own_uid
    return cred.uid in (own, 0)


def process_name(pid: int | None) -> str | None:
    """The peer's executable name, or for an interpreter its script's file name (SPEC §4)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    if not argv:
        return None
    exe = os.path.basename(argv[0])
    if exe.startswith(_INTERPRETERS):
        for arg in argv[1:]:
            if arg == "-m":
                continue
            if arg.startswith("-"):
                if arg == "-c":
                    return exe
                continue
            return os.path.basename(arg)
    return exe
