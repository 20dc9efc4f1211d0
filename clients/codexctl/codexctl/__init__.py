"""codexctl: the thin client of the codexd daemon (library and command line).

`from codexctl import Client, AsyncClient, RpcError` — the names are loaded on first use so
that `codexctl --version` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "DaemonUnreachable",
    "ErrorKind",
    "RpcError",
    "__version__",
    "check_socket",
]

if TYPE_CHECKING:
    from codexctl.aio import AsyncClient
    from codexctl.client import Client
    from codexctl.errors import DaemonUnreachable
    from codexctl.protocol import ErrorKind, RpcError
    from codexctl.trust import check_socket


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from codexctl.aio import AsyncClient

        return AsyncClient
    if name == "Client":
        from codexctl.client import Client

        return Client
    if name == "DaemonUnreachable":
        from codexctl.errors import DaemonUnreachable

        return DaemonUnreachable
    if name == "check_socket":
        from codexctl.trust import check_socket

        return check_socket
    if name in ("ErrorKind", "RpcError"):
        from codexctl import protocol

        return getattr(protocol, name)
    raise AttributeError(f"module 'codexctl' has no attribute {name!r}")
