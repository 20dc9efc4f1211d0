"""A small HTTP/1.1 server for the loopback fakes, on anyio and h11.

One task per connection, keep-alive, complete or streamed (chunked) responses, TCP_NODELAY on
every accepted socket (small SSE writes must not wait for the peer's delayed ACK), and notice of
a client that goes away mid-response: while a handler runs, a watcher reads the socket, and EOF
cancels the handler and marks the responder `client_gone`, which is how the fakes count
disconnects. Not a general web server: no TLS, no 100-continue, no pipelining beyond buffering.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import h11
import msgspec
from anyio.abc import SocketAttribute

log = logging.getLogger("codexd.testing.http")

READ_CHUNK = 65536
MAX_HEAD_BYTES = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024

_json_encoder = msgspec.json.Encoder()
_SOCKET_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


class ClientGone(Exception):
    """The client closed the connection before the response was finished."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    path: str
    query: Mapping[str, str]
    # Lower-case names; repeated headers joined with ", ".
    headers: Mapping[str, str]
    body: bytes
    connection: int  # serial number of the TCP connection, from 1

    def json(self) -> Any:
        """The body decoded as JSON; raises `msgspec.DecodeError` when it is not."""
        return msgspec.json.decode(self.body)

    def form(self) -> dict[str, str]:
        """The body decoded as application/x-www-form-urlencoded (last value wins)."""
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


def _encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class Responder:
    """Writes one response. `send` for a complete body; `start` + `write` + `finish` to stream."""

    __slots__ = ("_conn", "_ended", "_stream", "aborted", "client_gone", "started", "status")

    def __init__(self, stream: anyio.abc.ByteStream, conn: h11.Connection) -> None:
        self._stream = stream
        self._conn = conn
        self._ended = False
        self.started = False
        self.aborted = False
        self.client_gone = False
        self.status = 0

    @property
    def finished(self) -> bool:
        return self._ended

    async def _write(self, data: bytes) -> None:
        if self.client_gone:
            raise ClientGone
        try:
            await self._stream.send(data)
        except _SOCKET_ERRORS:
            self.client_gone = True
            raise ClientGone

    def _head(self, status: int, headers: Sequence[tuple[str, str]]) -> bytes:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        return (
            self._conn.send(
                h11.Response(status_code=status, headers=_encode_headers(headers), reason=reason)
            )
            or b""
        )

    async def send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        all_headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            *headers,
        ]
        data = self._head(status, all_headers)
        data += self._conn.send(h11.Data(data=body)) or b""
        data += self._conn.send(h11.EndOfMessage()) or b""
        self._ended = True
        await self._write(data)

    async def send_json(
        self, status: int, payload: Any, *, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        await self.send(status, _json_encoder.encode(payload), headers=headers)

    async def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        """Send the head of a streamed response (chunked; no content-length)."""
        await self._write(self._head(status, headers))

    async def write(self, data: bytes) -> None:
        if not data:
            return
        await self._write(self._conn.send(h11.Data(data=data)) or b"")

    async def finish(self) -> None:
        self._ended = True
        await self._write(self._conn.send(h11.EndOfMessage()) or b"")

    async def abort(self) -> None:
        """Close the connection now, leaving the response incomplete (a dropped stream)."""
        self.aborted = True
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()


Handler = Callable[[Request, Responder], Awaitable[None]]


async def not_found(request: Request, responder: Responder) -> None:
    await responder.send_json(
        404,
        {
            "error": {
                "message": f"Invalid URL ({request.method} {request.path})",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )


class HttpServer:
    """Serves `handler` on host:port (port 0 = any free port) until cancelled."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._max_body = max_body_bytes
        self.bound_port: int | None = None
        self._connections = itertools.count(1)

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port)
        async with listener:
            self.bound_port = int(listener.extra(SocketAttribute.local_port))
            task_status.started(self.bound_port)
            await listener.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        try:
            raw = stream.extra(SocketAttribute.raw_socket)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with stream:
                await self._serve_connection(stream)
        except _SOCKET_ERRORS:
            pass
        except Exception:
            # One broken connection must not take the listener down with it.
            log.exception("fake HTTP server: connection failed")

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        connection = next(self._connections)
        while True:
            request = await self._read_request(conn, stream, connection)
            if request is None:
                return
            responder = Responder(stream, conn)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_peer, conn, stream, responder, tg.cancel_scope)
                try:
                    await self._handler(request, responder)
                    if not responder.started:
                        await not_found(request, responder)
                except ClientGone:
                    pass
                except Exception:
                    log.exception("fake HTTP server: handler failed on %s", request.path)
                    if not responder.started:
                        await responder.send(500, b"fake server bug", content_type="text/plain")
                    else:
                        await responder.abort()
                finally:
                    tg.cancel_scope.cancel()
            if responder.aborted or responder.client_gone or not responder.finished:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, connection: int
    ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    responder = Responder(stream, conn)
                    try:
                        await responder.send(
                            exc.error_status_hint, b"bad request", content_type="text/plain"
                        )
                    except (ClientGone, h11.LocalProtocolError):
                        pass
                return None
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(READ_CHUNK)
                except _SOCKET_ERRORS:
                    data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_body:
                    responder = Responder(stream, conn)
                    await responder.send(413, b"request body too large", content_type="text/plain")
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _make_request(head, bytes(body), connection)
            else:  # ConnectionClosed or PAUSED
                return None

    @staticmethod
    async def _watch_peer(
        conn: h11.Connection,
        stream: anyio.abc.SocketStream,
        responder: Responder,
        scope: anyio.CancelScope,
    ) -> None:
        while True:
            try:
                data = await stream.receive(READ_CHUNK)
            except _SOCKET_ERRORS:
                data = b""
            if not data:
                if not responder.aborted:
                    responder.client_gone = True
                    scope.cancel()
                return
            # A pipelined next request: h11 keeps it until the next cycle.
            conn.receive_data(data)


def _make_request(head: h11.Request, body: bytes, connection: int) -> Request:
    target = head.target.decode("latin-1")
    parts = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(
        method=head.method.decode("ascii"),
        target=target,
        path=parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=headers,
        body=body,
        connection=connection,
    )


# ---------------------------------------------------------------------------------------------
# Plumbing the fakes share: counters that tests can wait on, and running in a thread.

S = TypeVar("S")


class StatsCell(Generic[S]):
    """A frozen value (a fake's counters) replaced under a lock, that tests can wait on from
    another thread (`wait_for`) or from the fake's own event loop (`wait_until`)."""

    def __init__(self, initial: S) -> None:
        self._value = initial
        self._cond = threading.Condition()
        self._loop_thread: int | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._changed: anyio.Event | None = None

    def bind_loop(self) -> None:
        """Call from the serving event loop: `wait_until` waiters live there."""
        self._loop_thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()

    @property
    def value(self) -> S:
        with self._cond:
            return self._value

    def update(self, change: Callable[[S], S]) -> S:
        with self._cond:
            self._value = change(self._value)
            value = self._value
            self._cond.notify_all()
            changed, self._changed = self._changed, None
        if changed is not None:
            if threading.get_ident() == self._loop_thread:
                changed.set()
            elif self._token is not None:
                try:
                    anyio.from_thread.run_sync(changed.set, token=self._token)
                except RuntimeError:
                    pass  # the loop has stopped; nobody is waiting any more
        return value

    def poke(self) -> None:
        """Wake the waiters to look again at conditions that are not in the value."""
        self.update(lambda value: value)

    def wait_for(self, predicate: Callable[[S], bool], timeout: float) -> S:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._value), timeout):
                raise TimeoutError(f"condition not met within {timeout}s; now {self._value}")
            return self._value

    async def wait_until(self, predicate: Callable[[S], bool]) -> S:
        while True:
            with self._cond:
                if predicate(self._value):
                    return self._value
                if self._changed is None:
                    self._changed = anyio.Event()
                changed = self._changed
            await changed.wait()


def add_counts(stats: S, peaks: Mapping[str, str] | None = None, **deltas: int) -> S:
    """`stats` (a frozen dataclass of ints) with `deltas` added; `peaks` maps a gauge to the
    field that keeps its maximum."""
    values = {name: getattr(stats, name) + delta for name, delta in deltas.items()}
    for gauge, peak in (peaks or {}).items():
        if gauge in values:
            values[peak] = max(getattr(stats, peak), values[gauge])
    return dataclasses.replace(stats, **values)  # type: ignore[type-var]


@contextmanager
def serve_in_thread(serve: Callable[..., Awaitable[Any]], name: str = "fake-http") -> Iterator[Any]:
    """Run `serve` (a task_status-style coroutine function) on an event loop in a background
    thread; yields what it passed to `task_status.started()` and stops it on exit."""
    with anyio.from_thread.start_blocking_portal() as portal:
        future, started = portal.start_task(serve, name=name)
        try:
            yield started
        finally:
            future.cancel()
