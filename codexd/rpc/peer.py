"""Who is on the other end of a Unix socket: uid (for the access check) and process name.

The credentials are read by `codexctl.peercred` (stdlib only), which the client uses too.
"""

from __future__ import annotations

import os

from codexctl.peercred import PeerCred, peer_credentials

__all__ = ["PeerCred", "peer_allowed", "peer_credentials", "process_name"]

_INTERPRETERS = ("python", "node", "ruby", "perl", "bash", "sh", "deno", "bun", "php")


def peer_allowed(cred: PeerCred, own_uid: int | None = None) -> bool:
    """Only our own uid and root may talk to the daemon (ssh-agent's rule)."""
    own = os.getuid() if own_uid is None else own_uid
    return cred.uid in (own, 0)


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
