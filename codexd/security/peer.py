"""Who may talk to the daemon over a Unix socket, and who is on the other end.

Both front doors (the control socket, `rpc/server.py`, and `gateway.sock`,
`gateway/server.py`) call `admit` first on every connection: it reads the peer's credentials
and applies `peer_allowed`, and a refused connection is logged in the same words by either
door and closed without a byte. The credentials are read by `codexctl.peercred` (stdlib
only), which the client uses too.
"""

from __future__ import annotations

import logging
import os
import socket

from codexctl.peercred import PeerCred, peer_credentials

__all__ = ["PeerCred", "admit", "peer_allowed", "peer_credentials", "process_name"]

_INTERPRETERS = ("python", "node", "ruby", "perl", "bash", "sh", "deno", "bun", "php")


def peer_allowed(cred: PeerCred, own_uid: int | None = None) -> bool:
    """Only our own uid and root may talk to the daemon (ssh-agent's rule)."""
    own = os.getuid() if own_uid is None else own_uid
    return cred.uid in (own, 0)


def admit(sock: socket.socket, door: str, log: logging.Logger) -> PeerCred | None:
    """The peer of `sock` when it may talk to us; None (with a warning on `log` naming
    `door`) when its credentials cannot be read or its uid is refused."""
    try:
        cred = peer_credentials(sock)
    except OSError as exc:
        log.warning("%s refused a connection: cannot read its credentials (%s)", door, exc)
        return None
    if not peer_allowed(cred):
        log.warning("%s refused a connection from uid %d (pid %s)", door, cred.uid, cred.pid)
        return None
    return cred


def process_name(pid: int | None) -> str | None:
    """The peer's executable name, or for an interpreter its script's file name."""
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
