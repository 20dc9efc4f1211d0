"""The gateway's HTTP/1.1 shell: h11 on an anyio byte stream, one task per connection.

Keep-alive; complete (`send`) or chunked streamed (`start`/`write`/`finish`) responses; bounded
heads and bodies. While a handler runs, a watcher reads the socket: EOF means the client went
away, which cancels the handler (the gateway then cancels the job, SPEC §9). Pipelined bytes
are kept for the next cycle, up to a bound.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import anyio
import anyio.abc
import h11
import msgspec

log = logging.getLogger("codexd.gateway")

READ_CHUNK: Final = 65536
MAX_HEAD_BYTES: Final = 64 * 1024
# Request bodies (prompts with images can be large; the bound keeps one client from
# exhausting memory).
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
# Bytes a client may pipeline while its previous response is still being written.
MAX_PIPELINED_BYTES: Final = MAX_HEAD_BYTES + READ_CHUNK

SOCKET_ERRORS: Final = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


class ClientGone(Exception):
    """The client closed the connection before the response was whole."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    # Lower-case names; repeated headers joined with ", ".
    headers: Mapping[str, str]
    body: bytes


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class Responder:
    """Writes one response: `send` a whole body, or `start` + `write`... + `finish`."""

    __slots__ = ("_conn", "_stream", "client_gone", "finished", "started", "status")

    def __init__(self, stream: anyio.abc.ByteStream, conn: h11.Connection) -> None:
        self._stream = stream
        self._conn = conn
        self.started = False
        self.finished = False
        self.client_gone = False
        self.status = 0

    async def _write(self, data: bytes) -> None:
        if self.client_gone:
            raise ClientGone
        try:
            await self._stream.send(data)
        except SOCKET_ERRORS:
            self.client_gone = True
            raise ClientGone from None

    def _head(self, status: int, headers: Sequence[tuple[str, str]]) -> bytes:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        encoded = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        event = h11.Response(status_code=status, headers=encoded, reason=_reason(status))
        return self._conn.send(event) or b""

    async def send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        data = self._head(
            status,
            [("content-type", content_type), ("content-length", str(len(body))), *headers],
        )
        data += self._conn.send(h11.Data(data=body)) or b""
        data += self._conn.send(h11.EndOfMessage()) or b""
        self.finished = True
        await self._write(data)

    async def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        """The head of a streamed (chunked) response."""
        await self._write(self._head(status, headers))

    async def write(self, data: bytes) -> None:
        if data:
            await self._write(self._conn.send(h11.Data(data=data)) or b"")

    async def finish(self, data: bytes = b"") -> None:
        out = (self._conn.send(h11.Data(data=data)) or b"") if data else b""
        out += self._conn.send(h11.EndOfMessage()) or b""
        self.finished = True
        await self._write(out)


Handler = Callable[[Request, Responder], Awaitable[None]]


async def serve_http(
    stream: anyio.abc.ByteStream,
    handler: Handler,
    *,
    on_error: Callable[[Responder], Awaitable[None]],
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Serve requests on one connection until it closes or a response cannot be completed."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    while True:
        request = await _read_request(conn, stream, max_body_bytes)
        if request is None:
            return
        responder = Responder(stream, conn)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_peer, conn, stream, responder, tg.cancel_scope)
            try:
                await handler(request, responder)
            except ClientGone:
                pass
            except Exception:
                log.exception("gateway: %s %s failed", request.method, request.path)
                if not responder.started:
                    await on_error(responder)
            finally:
                tg.cancel_scope.cancel()
        if responder.client_gone or not responder.finished:
            return
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


async def _read_request(
    conn: h11.Connection, stream: anyio.abc.ByteStream, max_body: int
) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            await _refuse(conn, stream, exc.error_status_hint, "the request is not valid HTTP/1.1")
            return None
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(READ_CHUNK)
            except SOCKET_ERRORS:
                data = b""
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
            length = _content_length(event)
            if length is not None and length > max_body:
                await _refuse(conn, stream, 413, f"the request body is over {max_body} bytes")
                return None
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                await _refuse(conn, stream, 413, f"the request body is over {max_body} bytes")
                return None
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return _make_request(head, bytes(body))
        else:  # ConnectionClosed, PAUSED
            return None


def _content_length(head: h11.Request) -> int | None:
    for name, value in head.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(
    conn: h11.Connection, stream: anyio.abc.ByteStream, status: int, why: str
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = msgspec.json.encode(
        {"error": {"message": why, "type": "invalid_request_error", "param": None, "code": None}}
    )
    responder = Responder(stream, conn)
    try:
        await responder.send(status, body, headers=[("connection", "close")])
    except (ClientGone, h11.LocalProtocolError):
        pass


async def _watch_peer(
    conn: h11.Connection,
    stream: anyio.abc.ByteStream,
    responder: Responder,
    scope: anyio.CancelScope,
) -> None:
    pipelined = 0
    while True:
        try:
            data = await stream.receive(READ_CHUNK)
        except SOCKET_ERRORS:
            data = b""
        pipelined += len(data)
        if not data or pipelined > MAX_PIPELINED_BYTES:
            responder.client_gone = True
            scope.cancel()
            return
        conn.receive_data(data)


def _make_request(head: h11.Request, body: bytes) -> Request:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = head.target.decode("latin-1")
    path = target.split("?", 1)[0]
    return Request(method=head.method.decode("ascii"), path=path, headers=headers, body=body)
