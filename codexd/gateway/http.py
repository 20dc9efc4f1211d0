"""The gateway's HTTP/1.1 shell: llhttp (httptools) parses, one task per connection reads.

Keep-alive and pipelining; complete (`send`) or streamed (`start`/`write`/`finish`, chunked to
HTTP/1.1 clients, delimited by close to HTTP/1.0 ones) responses; bounded heads and bodies.
While a handler runs, the reader keeps reading the socket: EOF means the client went away,
which cancels the handler (the gateway then cancels the job). Pipelined requests
wait their turn, up to a bound of bytes.

Each head may be judged as soon as it is whole (`check_head`: the TCP token), before its body
is read and before any `100 Continue`. One deadline per connection, moved only when the
connection changes phase: a head must be whole `head_timeout` after the connection opened
(or after its first byte on a kept-alive connection), a kept-alive connection may wait
`idle_timeout` for its next request, and nothing times out while a head's body or handler
is under way. When the deadline passes the connection closes without an answer.

Why httptools rather than h11: h11 parses and writes events in Python, which was a fifth of
the daemon's CPU per gateway stream at saturation; llhttp does the same parse in C, an order
of magnitude or more faster (bench/gateway.py shows the effect end to end).
Responses are written here, which takes a status line, headers and chunk framing.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Final

import anyio
import anyio.abc
import httptools
import msgspec

from codexd.netio import DirectWriter

log = logging.getLogger("codexd.gateway")

READ_CHUNK: Final = 65536
MAX_HEAD_BYTES: Final = 64 * 1024
# Request bodies (prompts with images can be large; the bound keeps one client from
# exhausting memory).
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
# Bytes a client may pipeline while its previous response is still being written.
MAX_PIPELINED_BYTES: Final = MAX_HEAD_BYTES + READ_CHUNK
# Parsed requests waiting for their turn; past it the connection is not read.
MAX_QUEUED_REQUESTS: Final = 16

SOCKET_ERRORS: Final = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

# What the connection's deadline is timing (moved only when this changes).
_UNTIMED: Final = 0  # a body or a handler is under way
_HEAD: Final = 1  # a head is awaited: from the connection's start, or from its first byte
_IDLE: Final = 2  # a kept-alive connection between requests


class ClientGone(Exception):
    """The client closed the connection before the response was whole."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    # Lower-case names; repeated headers joined with ", ".
    headers: Mapping[str, str]
    body: bytes
    # The client may send another request on this connection after the response.
    keep_alive: bool = True
    # HTTP/1.1 (chunked responses); False for HTTP/1.0.
    http11: bool = True
    # An upgrade request (`Connection: Upgrade`): the bytes read after its head. Nothing
    # after it is HTTP, so the connection's reader has stopped and the handler may take the
    # connection over (`Responder.switch_protocols`); otherwise it closes after the response.
    upgrade: bytes | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request that gets this response and then the connection closes (its body, if any,
    is never read)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _refusal(status: int, why: str) -> Refusal:
    body = msgspec.json.encode(
        {"error": {"message": why, "type": "invalid_request_error", "param": None, "code": None}}
    )
    return Refusal(status, body)


# Called with a request's headers as soon as its head is whole: a Refusal ends the
# connection with that response before anything of the body is read.
HeadCheck = Callable[[Mapping[str, str]], Refusal | None]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"response header {name!r} is not a valid HTTP header")
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"\r\n")
    return b"".join(lines)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Responder:
    """Writes one response: `send` a whole body, or `start` + `write`... + `finish`.

    A streamed body may also be written without awaiting (`write_nowait`), by code that runs
    where it cannot await: what the socket did not take at once is kept, in order, and
    `flush` (or the next `write`/`finish`) sends it."""

    __slots__ = (
        "_chunked",
        "_direct",
        "_head_pending",
        "_request",
        "_stream",
        "_unsent",
        "client_gone",
        "finished",
        "started",
        "status",
    )

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        request: Request | None = None,
        direct: DirectWriter | None = None,
    ) -> None:
        self._stream = stream
        self._direct = direct
        self._request = request
        self._head_pending = b""
        self._unsent = b""
        self._chunked = True
        self.started = False
        self.finished = False
        self.client_gone = False
        self.status = 0

    @property
    def keep_alive(self) -> bool:
        """The connection can carry another request after this response."""
        return self._request is not None and self._request.keep_alive and self._chunked

    @property
    def unsent(self) -> bool:
        """Bytes of `write_nowait` wait for `flush`."""
        return bool(self._unsent)

    async def _write(self, data: bytes) -> None:
        if self.client_gone:
            raise ClientGone
        if self._head_pending or self._unsent:
            data, self._head_pending = self._head_pending + self._unsent + data, b""
            self._unsent = b""
        try:
            if self._direct is not None:
                await self._direct.send(data)
            else:
                await self._stream.send(data)
        except SOCKET_ERRORS:
            self.client_gone = True
            raise ClientGone from None

    def _start(self, status: int, headers: list[tuple[str, str]], *, close: bool = False) -> bytes:
        if self.started:
            raise RuntimeError("response already started")
        request = self._request
        if close or request is None or not request.keep_alive:
            headers.append(("connection", "close"))
        elif not request.http11:
            headers.append(("connection", "keep-alive"))
        head = _head(status, headers)
        self.started = True
        self.status = status
        return head

    async def send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        data = self._start(
            status,
            [("content-type", content_type), ("content-length", str(len(body))), *headers],
        )
        if self._request is None or self._request.method != "HEAD":
            data += body
        self.finished = True
        await self._write(data)

    def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        """The head of a streamed response; it goes out with the first body bytes (one
        write, one wake-up of the client, instead of two). HTTP/1.1 clients get it chunked;
        an HTTP/1.0 client reads until the connection closes."""
        chunked = self._request is None or self._request.http11
        if chunked:
            self._head_pending = self._start(status, [*headers, ("transfer-encoding", "chunked")])
        else:
            self._head_pending = self._start(status, [*headers], close=True)
        self._chunked = chunked

    async def write(self, data: bytes) -> None:
        if data:
            await self._write(_chunk(data) if self._chunked else data)
        elif self._head_pending:
            await self._write(b"")

    async def finish(self, data: bytes = b"") -> None:
        self.finished = True
        await self._write(self._body_bytes(data, True))

    def _body_bytes(self, data: bytes, last: bool) -> bytes:
        out = (_chunk(data) if self._chunked else data) if data else b""
        if last and self._chunked:
            out += b"0\r\n\r\n"
        return out

    def write_nowait(self, data: bytes, *, last: bool = False) -> None:
        """`write` (with `last`, `finish`) without awaiting: the socket takes what it can now,
        the rest waits for `flush`. After the client went away it writes nothing (the
        handler is being cancelled)."""
        if last:
            self.finished = True
        if self.client_gone:
            return
        out = self._body_bytes(data, last)
        if self._head_pending:
            out, self._head_pending = self._head_pending + out, b""
        if not out:
            return
        if self._unsent or self._direct is None:
            self._unsent += out
            return
        taken = self._direct.send_nowait(out)
        if taken < len(out):
            self._unsent = out[taken:] if taken else out

    async def flush(self) -> None:
        """Send what `write_nowait` left, and return once the kernel has every byte."""
        if self._unsent or self._head_pending:
            await self._write(b"")
        elif self._direct is not None:
            if self.client_gone:
                raise ClientGone
            try:
                await self._direct.drain()
            except SOCKET_ERRORS:
                self.client_gone = True
                raise ClientGone from None

    async def switch_protocols(self, headers: Sequence[tuple[str, str]]) -> anyio.abc.ByteStream:
        """Answer an upgrade request (`Request.upgrade`) with 101 and hand the connection
        over: the caller reads and writes the returned stream from here on, and the
        connection closes when the handler returns."""
        if self._request is None or self._request.upgrade is None:
            raise RuntimeError("only an upgrade request can switch protocols")
        head = _head(101, headers)
        self.started = True
        self.status = 101
        self.finished = True
        await self._write(head)
        return self._stream


Handler = Callable[[Request, Responder], Awaitable[None]]


class _Stop(Exception):
    """Raised in a parser callback to stop at a request that gets refused."""


class _RequestParser:
    """httptools callbacks: whole requests (or refusals) into `ready`, in order."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_check_head",
        "_expect_continue",
        "_head_bytes",
        "_head_fed",
        "_headers",
        "_keep_alive",
        "_url",
        "in_body",
        "in_head",
        "max_body",
        "parser",
        "ready",
        "stopped",
        "upgraded",
        "wants_continue",
    )

    def __init__(self, max_body: int, check_head: HeadCheck | None = None) -> None:
        self.max_body = max_body
        self._check_head = check_head
        self.parser = httptools.HttpRequestParser(self)
        self.ready: deque[Request | Refusal] = deque()
        self.stopped = False
        # An upgrade request was read: the connection is no longer HTTP's to read.
        self.upgraded = False
        # A request has begun and its head is not whole yet.
        self.in_head = False
        self.in_body = False
        self.wants_continue = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._head_bytes = 0
        self._head_fed = 0
        self._keep_alive = True
        self._expect_continue = False

    def feed(self, data: bytes) -> None:
        if self.stopped:
            return
        if not self.in_body:
            # llhttp hands over a header only once its line ends: a line that never ends
            # is bounded here, by the bytes fed since the head began.
            self._head_fed += len(data)
            if self._head_fed > MAX_HEAD_BYTES + READ_CHUNK:
                self.ready.append(_refusal(431, f"the request head is over {MAX_HEAD_BYTES} bytes"))
                self.stopped = True
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The upgrade request is whole (and last); nothing after its head is HTTP.
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._last_upgrades(data[offset:])
            self.stopped = True
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                raise
            self.stopped = True
        except httptools.HttpParserError:
            self.ready.append(_refusal(400, "the request is not valid HTTP/1.1"))
            self.stopped = True

    def _refuse(self, status: int, why: str) -> None:
        self._stop_with(_refusal(status, why))

    def _stop_with(self, refusal: Refusal) -> None:
        self.ready.append(refusal)
        raise _Stop

    def _last_upgrades(self, tail: bytes) -> None:
        if self.ready and isinstance(last := self.ready[-1], Request):
            self.ready[-1] = replace(last, keep_alive=False, upgrade=tail)
            self.upgraded = True

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.in_head = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_bytes = 0
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        if self.in_body:
            return  # a chunked body's trailers: never taken for request headers
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"the request head is over {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._refuse(505, f"HTTP/{version} is not supported: send HTTP/1.1")
        if self._check_head is not None:
            refusal = self._check_head(self._headers)
            if refusal is not None:
                self._stop_with(refusal)
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._refuse(413, f"the request body is over {self.max_body} bytes")
        self._keep_alive = self.parser.should_keep_alive()
        self._expect_continue = (
            version == "1.1" and self._headers.get("expect", "").lower() == "100-continue"
        )
        self.in_head = False
        self.in_body = True
        self._head_fed = 0

    def on_body(self, data: bytes) -> None:
        self._body.append(data)
        self._body_bytes += len(data)
        self._expect_continue = False  # the body is coming: no 100 Continue needed
        if self._body_bytes > self.max_body:
            self._refuse(413, f"the request body is over {self.max_body} bytes")

    def on_message_complete(self) -> None:
        self.in_body = False
        self._head_fed = 0
        self._expect_continue = False
        target = self._url.decode("latin-1")
        self.ready.append(
            Request(
                method=self.parser.get_method().decode("ascii"),
                path=target.split("?", 1)[0],
                headers=self._headers,
                body=b"".join(self._body),
                keep_alive=self._keep_alive,
                http11=self.parser.get_http_version() == "1.1",
            )
        )

    def take_continue(self) -> bool:
        """The request being read waits for `100 Continue` before sending its body, and
        every request before it was answered (asked once)."""
        if self._expect_continue and self.in_body and not self._body and not self.ready:
            self._expect_continue = False
            return True
        return False


class _Reader:
    """The one task that reads a connection, for its whole life: it feeds the parser and
    wakes the request loop, and while a handler runs, EOF (or more pipelined bytes than the
    bound) means the client went away, which cancels the handler. A task per connection
    instead of a watcher task per request: a keep-alive client pays for no task, task group
    or cancellation per request. Past `MAX_QUEUED_REQUESTS` parsed and unanswered requests
    it stops reading until the loop takes one.

    It also moves the connection's one deadline (`deadline`, a cancel scope around the whole
    connection) when the phase changes; a read that changes nothing costs one comparison."""

    __slots__ = (
        "_deadline",
        "_head_timeout",
        "_idle_timeout",
        "_parser",
        "_room",
        "_stream",
        "_timing",
        "_wakeup",
        "eof",
        "handler_scope",
        "pipelined",
        "responder",
    )

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        parser: _RequestParser,
        deadline: anyio.CancelScope,
        head_timeout: float,
        idle_timeout: float,
    ) -> None:
        self._stream = stream
        self._parser = parser
        self._wakeup = anyio.Event()
        self._room = anyio.Event()
        self._deadline = deadline
        self._head_timeout = head_timeout
        self._idle_timeout = idle_timeout
        self._timing = _HEAD  # the first head counts from the connection's start
        self.eof = False
        self.handler_scope: anyio.CancelScope | None = None
        self.responder: Responder | None = None
        self.pipelined = 0

    def _time(self, timing: int, timeout: float) -> None:
        self._timing = timing
        self._deadline.deadline = anyio.current_time() + timeout

    def _untime(self) -> None:
        self._timing = _UNTIMED
        self._deadline.deadline = math.inf

    def _after_feed(self) -> None:
        parser = self._parser
        if parser.ready or parser.in_body:
            self._untime()  # a whole head: the handler (or the refusal) takes over
        elif self._timing == _IDLE and parser.in_head:
            self._time(_HEAD, self._head_timeout)

    def time_refusal(self) -> None:
        """A refusal is being written: it gets as long as a head would have."""
        self._time(_HEAD, self._head_timeout)

    async def run(self) -> None:
        parser = self._parser
        while not self.eof:
            while len(parser.ready) >= MAX_QUEUED_REQUESTS:
                self._room = anyio.Event()
                await self._room.wait()
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
                parser.feed(data)
                if self._timing != _UNTIMED:
                    self._after_feed()
                if parser.upgraded:  # its handler reads the connection from here on
                    self._wakeup.set()
                    return
            self._wakeup.set()

    async def next(self, stream: anyio.abc.ByteStream) -> Request | Refusal | None:
        """The next whole request (or refusal); None once the client is done. Runs between
        handlers, so a `100 Continue` written here never meets a response being written."""
        parser = self._parser
        if not parser.ready and self._timing == _UNTIMED and not parser.in_body:
            if parser.in_head:
                self._time(_HEAD, self._head_timeout)
            else:
                self._time(_IDLE, self._idle_timeout)
        while not parser.ready:
            if self.eof or parser.stopped:
                return None
            if parser.take_continue():
                try:
                    await stream.send(_CONTINUE)
                except SOCKET_ERRORS:
                    return None
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        self._room.set()
        return parser.ready.popleft()


async def serve_http(
    stream: anyio.abc.ByteStream,
    handler: Handler,
    *,
    on_error: Callable[[Responder], Awaitable[None]],
    head_timeout: float,
    idle_timeout: float,
    check_head: HeadCheck | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Serve requests on one connection until it closes, a response cannot be completed, a
    head is refused, or the connection's deadline passes (module docstring)."""
    with anyio.CancelScope(deadline=anyio.current_time() + head_timeout) as deadline:
        parser = _RequestParser(max_body_bytes, check_head)
        reader = _Reader(stream, parser, deadline, head_timeout, idle_timeout)
        direct = DirectWriter(stream) if isinstance(stream, anyio.abc.SocketStream) else None
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.run)
            try:
                await _serve_requests(stream, reader, handler, on_error, direct)
            finally:
                tg.cancel_scope.cancel()


async def _serve_requests(
    stream: anyio.abc.ByteStream,
    reader: _Reader,
    handler: Handler,
    on_error: Callable[[Responder], Awaitable[None]],
    direct: DirectWriter | None,
) -> None:
    while True:
        request = await reader.next(stream)
        if request is None:
            return
        if isinstance(request, Refusal):
            reader.time_refusal()
            await _refuse(stream, request)
            return
        responder = Responder(stream, request, direct)
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
                    with contextlib.suppress(ClientGone):
                        await on_error(responder)
            finally:
                reader.handler_scope = None
                reader.responder = None
        if responder.client_gone or not responder.finished or not responder.keep_alive:
            return


async def _refuse(stream: anyio.abc.ByteStream, refusal: Refusal) -> None:
    try:
        await Responder(stream).send(refusal.status, refusal.body, headers=refusal.headers)
    except ClientGone:
        pass
