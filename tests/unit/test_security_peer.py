"""Peer admission (codexd/security/peer.py): the rule, and the one check both front doors
call before a byte is read or written."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from codexd.gateway import serve_gateway
from codexd.rpc.methods import TABLE
from codexd.rpc.server import RpcServer
from codexd.security import peer
from codexd.security.listeners import listen_private
from codexd.security.peer import PeerCred, admit, peer_allowed

pytestmark = pytest.mark.anyio


def test_only_our_uid_and_root_are_allowed() -> None:
    assert peer_allowed(PeerCred(uid=1000, gid=1000, pid=1), own_uid=1000)
    assert peer_allowed(PeerCred(uid=0, gid=0, pid=1), own_uid=1000)
    assert not peer_allowed(PeerCred(uid=1001, gid=1000, pid=1), own_uid=1000)


def test_admit_returns_the_peer_of_our_own_uid() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        cred = admit(a, "door", logging.getLogger("test"))
    assert cred is not None and cred.uid == os.getuid() and cred.pid == os.getpid()


def test_admit_refuses_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(peer, "peer_allowed", lambda cred: False)
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b, caplog.at_level(logging.WARNING):
        assert admit(a, "door", logging.getLogger("test")) is None
    # The whole line, as either door logs it: an operator greps for it.
    assert [r.getMessage() for r in caplog.records] == [
        f"door refused a connection from uid {os.getuid()} (pid {os.getpid()})"
    ]


def test_admit_refuses_a_peer_whose_credentials_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreadable(sock: socket.socket) -> PeerCred:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(peer, "peer_credentials", unreadable)
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b, caplog.at_level(logging.WARNING):
        assert admit(a, "door", logging.getLogger("test")) is None
    # The whole line, with the reason the credentials could not be read.
    assert [r.getMessage() for r in caplog.records] == [
        "door refused a connection: cannot read its credentials "
        "([Errno 95] Operation not supported)"
    ]


# --------------------------------------------------------------------------- both front doors


@asynccontextmanager
async def control_socket(tmp_path: Path) -> AsyncIterator[tuple[str, RpcServer]]:
    path = str(tmp_path / "codexd.sock")
    listener, _ = await listen_private(path)
    server = RpcServer(
        SimpleNamespace(),  # type: ignore[arg-type]  # a refused peer never reaches it
        TABLE,
        max_message_bytes=lambda: 1 << 20,
        max_connections=lambda: 8,
        idle_timeout=lambda: 60.0,
        waiting=lambda: (),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, listener)
        yield path, server
        tg.cancel_scope.cancel()


@asynccontextmanager
async def gateway_socket(tmp_path: Path) -> AsyncIterator[tuple[str, None]]:
    path = str(tmp_path / "gateway.sock")
    settings = SimpleNamespace(gateway=SimpleNamespace(enabled=True, tcp=None), max_connections=8)
    services: Any = SimpleNamespace(
        paths=SimpleNamespace(gateway_socket=path, state_dir=str(tmp_path)),
        config=SimpleNamespace(snapshot=SimpleNamespace(codexd=settings)),
        tokens=None,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(serve_gateway, services)
        yield path, None
        tg.cancel_scope.cancel()


Door = Callable[[Path], Any]


@pytest.mark.parametrize(
    ("door", "name"), [(control_socket, "control socket"), (gateway_socket, "gateway")]
)
async def test_both_front_doors_ask_the_one_check(
    door: Door,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the rule changed to refuse everyone, our own connection is closed without a
    byte at either door, and the refusal is logged in the same words."""
    asked: list[PeerCred] = []

    def refuse(cred: PeerCred) -> bool:
        asked.append(cred)
        return False

    monkeypatch.setattr(peer, "peer_allowed", refuse)
    caplog.set_level(logging.WARNING)
    async with door(tmp_path) as (path, server):
        stream = await anyio.connect_unix(path)
        async with stream:
            await stream.send(b'{"jsonrpc":"2.0","id":1,"method":"daemon/ping"}\n')
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
    assert [c.uid for c in asked] == [os.getuid()]
    assert f"{name} refused a connection from uid {os.getuid()}" in caplog.text
    if server is not None:
        assert server.stats.refused_peer == 1
