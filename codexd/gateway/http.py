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

    __slots__ = (
        "_conn",
        "_head_pending",
        "_stream",
        "client_gone",
        "finished",
        "started",
        "status",
    )

    def __init__(self, stream: anyio.abc.ByteStream, conn: h11.Connection) -> None:
        self._stream = stream
        self._conn = conn
        self._head_pending = b""
        self.started = False
        self.finished = False
        self.client_gone = False
        self.status = 0

    async def _write(self, data: bytes) -> None:
        if self.client_gone:
            raise ClientGone
        if self._head_pending:
            data, self._head_pending = self._head_pending + data, b""
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

    def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        """The head of a streamed (chunked) response; it goes out with the first body bytes
        (one write, one wake-up of the client, instead of two)."""
        self._head_pending = self._head(status, headers)

    async def write(self, data: bytes) -> None:
        if data or self._head_pending:
            await self._write((self._conn.send(h11.Data(data=data)) or b"") if data else b"")

    async def finish(self, data: bytes = b"") -> None:
        out = (self._conn.send(h11.Data(data=data)) or b"") if data else b""
        out += self._conn.send(h11.EndOfMessage()) or b""
        self.finished = True
        await self._write(out)


Handler = Callable[[Request, Responder], Awaitable[None]]


class _Reader:
    """The one task that reads a connection, for its whole life: it feeds h11 and wakes the
    request loop, and while a handler runs, EOF (or more pipelined bytes than the bound)
    means the client went away, which cancels the handler. A task per connection instead of
    a watcher task per request: a keep-alive client pays for no task, task group or
    cancellation per request."""

    __slots__ = ("_conn", "_stream", "_wakeup", "eof", "handler_scope", "pipelined", "responder")

    def __init__(self, stream: anyio.abc.ByteStream, conn: h11.Connection) -> None:
        self._stream = stream
        self._conn = conn
        self._wakeup = anyio.Event()
        self.eof = False
        self.handler_scope: anyio.CancelScope | None = None
        self.responder: Responder | None = None
        self.pipelined = 0

    async def run(self) -> None:
        while not self.eof:
            try:
                data = await self._stream.receive(READ_CHUNK)
            except SOCKET_ERRORS:
                data = b""
            if self.handler_scope is not None:
                self.pipelined += len(data)
                if self.pipelined > MAX_PIPELINED_BYTES:
                    data = b""
            if not data:
                self.eof = True
                if self.handler_scope is not None:
                    if self.responder is not None:
                        self.responder.client_gone = True
                    self.handler_scope.cancel()
            else:
                self._conn.receive_data(data)
            self._wakeup.set()

    async def more(self) -> None:
        """Wait until the reader fed h11 more bytes or saw EOF."""
        if not self.eof:
            self._wakeup = anyio.Event()
            await self._wakeup.wait()


async def serve_http(
    stream: anyio.abc.ByteStream,
    handler: Handler,
    *,
    on_error: Callable[[Responder], Awaitable[None]],
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Serve requests on one connection until it closes or a response cannot be completed."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    reader = _Reader(stream, conn)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.run)
        try:
            await _serve_requests(conn, stream, reader, handler, on_error, max_body_bytes)
        finally:
            tg.cancel_scope.cancel()


async def _serve_requests(
    conn: h11.Connection,
    stream: anyio.abc.ByteStream,
    reader: _Reader,
    handler: Handler,
    on_error: Callable[[Responder], Awaitable[None]],
    max_body_bytes: int,
) -> None:
    while True:
        request = await _read_request(conn, stream, reader, max_body_bytes)
        if request is None:
            return
        responder = Responder(stream, conn)
        with anyio.CancelScope() as scope:
            reader.pipelined = 0
            reader.responder = responder
            reader.handler_scope = scope
            try:
                if reader.eof:  # the client sent its request and closed at once
                    responder.client_gone = True
                    scope.cancel()
                await handler(request, responder)
            except ClientGone:
                pass
            except Exception:
                log.exception("gateway: %s %s failed", request.method, request.path)
                if not responder.started:
                    await on_error(responder)
            finally:
                reader.handler_scope = None
                reader.responder = None
        if responder.client_gone or not responder.finished:
            return
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


async def _read_request(
    conn: h11.Connection, stream: anyio.abc.ByteStream, reader: _Reader, max_body: int
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
            if reader.eof:
                conn.receive_data(b"")
            else:
                await reader.more()
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


def _make_request(head: h11.Request, body: bytes) -> Request:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = head.target.decode("latin-1")
    path = target.split("?", 1)[0]
    return Request(method=head.method.decode("ascii"), path=path, headers=headers, body=body)
