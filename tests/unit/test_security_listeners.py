"""Private Unix listeners (codexd/security/listeners.py): 0600 whatever the umask, removed on
close only while still ours, and the one way both sockets are made."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from codexd.gateway import serve_gateway
from codexd.paths import StartupError
from codexd.security.listeners import listen_private, unlink_if_ours

pytestmark = pytest.mark.anyio


def present(path: str) -> bool:
    return os.path.lexists(path)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def test_the_socket_is_0600_under_any_umask_and_the_umask_is_restored(
    tmp_path: Path, open_umask: None
) -> None:
    path = str(tmp_path / "s.sock")
    listener, ino = await listen_private(path)
    async with listener:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert ino == st.st_ino
        assert os.umask(0) == 0  # what the caller had, not the listener's 0177


async def test_a_path_that_cannot_be_bound_is_a_startup_error(tmp_path: Path) -> None:
    path = str(tmp_path / "missing" / "s.sock")
    with pytest.raises(StartupError, match=f"cannot listen on {path}: "):
        await listen_private(path)


async def test_an_adopted_socket_is_served_and_never_unlinked(tmp_path: Path) -> None:
    path = str(tmp_path / "passed.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    listener, ino = await listen_private(path, adopted=sock)
    async with listener:
        assert ino is None
        unlink_if_ours(path, ino)
        assert present(path)


async def test_unlink_removes_ours_and_leaves_a_successor(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    listener, ino = await listen_private(path)
    await listener.aclose()
    unlink_if_ours(path, ino)
    assert not present(path)
    unlink_if_ours(path, ino)  # gone already: nothing to do

    listener, ino = await listen_private(path)
    await listener.aclose()
    os.rename(path, path + ".old")  # kept, so that its inode is not reused at once
    successor, _ = await listen_private(path)  # another daemon took the path over
    async with successor:
        unlink_if_ours(path, ino)
        assert present(path)


async def test_the_gateway_socket_is_made_private_and_removed_on_close(
    tmp_path: Path, open_umask: None
) -> None:
    path = str(tmp_path / "gateway.sock")
    settings = SimpleNamespace(gateway=SimpleNamespace(enabled=True, tcp=None), max_connections=8)
    services: Any = SimpleNamespace(
        paths=SimpleNamespace(gateway_socket=path, state_dir=str(tmp_path)),
        config=SimpleNamespace(snapshot=SimpleNamespace(codexd=settings)),
        tokens=None,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(serve_gateway, services)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        tg.cancel_scope.cancel()
    assert not present(path)
