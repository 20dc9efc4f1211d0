"""The asyncio client of the codexd control socket: concurrent calls and notifications."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from codexctl.client import (
    MAX_REPLY_BYTES,
    NOTIFICATION_BUFFER,
    Notification,
    _decode_params,
    _encode_request,
    _protocol_error,
    _reply_decoder,
)
from codexctl.errors import ConnectionLost, DaemonUnreachable
from codexctl.protocol import ClientInfo, RpcError, resolve_socket_path
from codexctl.trust import check_peer, expected_owner


class AsyncClient:
    """An asyncio client: concurrent calls on one connection, and a notification iterator."""

    def __init__(self, socket_path: str | None = None, *, client: ClientInfo | None = None) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        # A path named by the caller lets root talk to another user's daemon (codexctl.trust).
        self._explicit = bool(socket_path)
        self._client_info = client
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._notifications: asyncio.Queue[Notification | None] = asyncio.Queue(NOTIFICATION_BUFFER)
        self._read_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls, socket_path: str | None = None, *, client: ClientInfo | None = None
    ) -> AsyncClient:
        self = cls(socket_path, client=client)
        await self.connect()
        return self

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        if self._writer is not None:
            return
        path = self.socket_path
        owner = expected_owner(path, explicit=self._explicit)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, path)
            check_peer(sock, path, owner)
            self._reader, self._writer = await asyncio.open_unix_connection(
                sock=sock, limit=MAX_REPLY_BYTES
            )
        except OSError as exc:
            sock.close()
            raise DaemonUnreachable(path, exc.strerror) from None
        except BaseException:
            sock.close()
            raise
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        if self._client_info is not None:
            await self.call("initialize", {"client": msgspec.to_builtins(self._client_info)})

    async def aclose(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
            self._read_task = None

    async def call(self, method: str, params: Any = None) -> Any:
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        if self._closed or self._read_task is None or self._read_task.done():
            raise ConnectionLost(self.socket_path)
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            self._writer.write(_encode_request(rid, method, params))
            await self._writer.drain()
            return await fut
        finally:
            self._waiting.pop(rid, None)

    async def notify(self, method: str, params: Any = None) -> None:
        assert self._writer is not None
        self._writer.write(_encode_request(None, method, params))
        await self._writer.drain()

    async def notifications(self) -> AsyncIterator[Notification]:
        """Server notifications in arrival order, until the connection closes."""
        while True:
            n = await self._notifications.get()
            if n is None:
                return
            yield n

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                try:
                    line = await self._reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    return
                if not line.strip():
                    continue
                try:
                    env = _reply_decoder.decode(line)
                except msgspec.DecodeError:
                    return
                if env.id is msgspec.UNSET:
                    if not isinstance(env.method, msgspec.UnsetType):
                        # Waiting here is the backpressure: the daemon sees a slow reader and
                        # drops its subscriptions rather than buffering without bound.
                        await self._notifications.put(
                            Notification(env.method, _decode_params(env.params))
                        )
                    continue
                fut = self._waiting.get(env.id) if isinstance(env.id, int) else None
                if fut is None or fut.done():
                    continue
                if not isinstance(env.error, msgspec.UnsetType):
                    fut.set_exception(RpcError.from_object(env.error))
                elif isinstance(env.result, msgspec.UnsetType):
                    fut.set_exception(_protocol_error("a reply with neither result nor error"))
                else:
                    fut.set_result(msgspec.json.decode(env.result))
        except OSError:
            return
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(self.socket_path))
            with contextlib.suppress(asyncio.QueueFull):
                self._notifications.put_nowait(None)
