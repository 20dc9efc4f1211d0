"""Who is at the other end of a connected Unix socket (stdlib only).

The daemon reads its clients' uid here before it answers them, and the client reads the
daemon's before it sends a byte: one reader for both sides.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int | None
    uid: int
    gid: int | None


def peer_credentials(sock: socket.socket) -> PeerCred:
    """SO_PEERCRED on Linux, LOCAL_PEERCRED (+ LOCAL_PEERPID) on macOS and the BSDs.

    Raises OSError when the platform cannot tell.
    """
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
