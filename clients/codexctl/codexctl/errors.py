"""Client-side failures that are not daemon errors (stdlib only)."""

from __future__ import annotations


class DaemonUnreachable(Exception):
    """Nothing answers at the socket; the message says how to start the daemon."""

    def __init__(self, path: str, reason: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"codexd is not running at {path}: start it with codexd run "
            "or systemctl --user start codexd"
        )


class ConnectionLost(DaemonUnreachable):
    def __init__(self, path: str) -> None:
        DaemonUnreachable.__init__(self, path)
        Exception.__init__(self, f"the connection to codexd at {path} was closed")


class UntrustedSocket(DaemonUnreachable):
    """The socket is not provably the user's own daemon; nothing was sent to it."""

    def __init__(self, path: str, reason: str) -> None:
        DaemonUnreachable.__init__(self, path, reason)
        Exception.__init__(self, f"refusing to talk to {path}: {reason}")
