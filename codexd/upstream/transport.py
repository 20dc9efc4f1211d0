"""The HTTP/1.1 keep-alive transport under every upstream model request (llhttp on anyio).

It implements httpx's seam, `AsyncBaseTransport.handle_async_request(Request) -> Response`,
so the shell (`client.py`) and its tests keep httpx's request, response and exception types,
and `httpx.MockTransport` still stands in for it. It exists because httpx's `AsyncClient`
over httpcore's pool spends most of its CPU per streamed request in layers the daemon does
not use (auth and redirect flows, cookies) and in a pool that re-examines every connection
it holds, with a syscall each, on every request and every release; this transport does the
same exchange in about half the CPU (bench/upstream_transport.py prints both).

What it does: one request per connection at a time; idle connections kept per origin (LIFO,
at most `max_idle` of them, none older than `keepalive_expiry`); before reuse a connection is
polled, and one the server closed meanwhile is dropped; a request whose reused connection
turns out closed before any byte of a response came back is sent once more on a new
connection (the keep-alive race every HTTP client handles); at most `max_connections` in use
at once, later requests wait. Timeouts come from the request's `timeout` extension: `connect`
bounds the TCP and TLS handshake, `read` bounds the wait for the response head (the body's
idle timeout is the shell's, which reads it). A request to an origin that the environment's
HTTP(S)_PROXY / ALL_PROXY / NO_PROXY sends through a proxy goes through httpx's own transport.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Final

import anyio
import anyio.abc
import httptools
import httpx

from codexd.httpfields import is_field_name, is_field_value
from codexd.netio import DirectWriter

READ_CHUNK: Final = 65536
MAX_HEAD_BYTES: Final = 64 * 1024
DEFAULT_PORTS: Final = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _StaleConnection(Exception):
    """A reused connection was closed by the server before any byte of a response."""


class _HeadTooLarge(Exception):
    pass


class Response:
    """One response on a connection, as llhttp (httptools) parses it: the head, then body
    pieces as they come. A 1xx response before it is skipped."""

    __slots__ = (
        "_head_bytes",
        "_head_len",
        "_informational",
        "_length_known",
        "body",
        "done",
        "head_done",
        "headers",
        "keep_alive",
        "parser",
        "reason",
        "status",
        "trailing",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.body: list[bytes] = []
        self.done = False
        self.keep_alive = False
        self.trailing = False
        self._head_bytes = 0
        self._head_len = 0
        self._informational = False
        self._length_known = False

    def feed(self, data: bytes, request: httpx.Request) -> None:
        if not self.head_done:
            # llhttp hands over a header only once its line ends: a line that never ends is
            # bounded here, by the bytes fed before the head was whole.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES + READ_CHUNK:
                raise httpx.RemoteProtocolError(
                    f"the response head is over {MAX_HEAD_BYTES} bytes", request=request
                )
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise httpx.RemoteProtocolError(
                "the server switched protocols, which codexd never asks for", request=request
            ) from None
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                raise httpx.RemoteProtocolError(
                    f"the response head is over {MAX_HEAD_BYTES} bytes", request=request
                ) from None
            raise
        except httptools.HttpParserError as exc:
            if self.done:  # bytes after a whole response: the connection is not reused
                self.trailing = True
                return
            raise httpx.RemoteProtocolError(
                f"the response is not valid HTTP/1.1 ({exc})", request=request
            ) from None

    def end_of_stream(self) -> bool:
        """The server closed the connection: True when that ended the response (a body
        delimited by the close), False when the response was cut short."""
        if self.head_done and not self.done and not self._length_known:
            self.done = True
        self.keep_alive = False
        return self.done

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self.done:
            self.trailing = True
            return
        self.reason = b""
        self.headers = []
        self._informational = False

    def on_status(self, reason: bytes) -> None:
        if not self.trailing:
            self.reason += reason
            self._count_head(len(reason))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.trailing or self.head_done:  # bytes after the response, or body trailers
            return
        self._count_head(len(name) + len(value) + 4)
        self.headers.append((name, value))

    def _count_head(self, n: int) -> None:
        self._head_len += n
        if self._head_len > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        if self.trailing:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self._informational = True
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self._length_known = status in (204, 304) or any(
            name.lower() == b"content-length"
            or (name.lower() == b"transfer-encoding" and value.lower().endswith(b"chunked"))
            for name, value in self.headers
        )
        self.head_done = True

    def on_body(self, data: bytes) -> None:
        if data and not self.trailing:
            self.body.append(data)

    def on_message_complete(self) -> None:
        if not self._informational and not self.trailing:
            self.done = True


class Connection:
    __slots__ = ("_raw", "idle_since", "origin", "response", "stream", "writer")

    def __init__(self, stream: anyio.abc.ByteStream, origin: Origin) -> None:
        self.stream = stream
        self.origin = origin
        self.response: Response | None = None
        self.idle_since = 0.0
        # A request goes out without the loop turns of `stream.send` (netio.py).
        self.writer = DirectWriter(stream) if isinstance(stream, anyio.abc.SocketStream) else None
        self._raw: socket.socket | None = None  # looked up once, on the first reuse

    async def send(self, data: bytes) -> None:
        if self.writer is not None:
            await self.writer.send(data)
        else:
            await self.stream.send(data)

    def server_closed(self) -> bool:
        """An idle connection with something to read was closed by the server (or it sent
        bytes nobody asked for): either way it cannot carry another request."""
        try:
            if self._raw is None:
                self._raw = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)
            fileno = self._raw.fileno()
        except (anyio.TypedAttributeLookupError, OSError):
            return True
        if fileno < 0:
            return True
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))

    def reusable(self) -> bool:
        response = self.response
        return (
            response is not None and response.done and response.keep_alive and not response.trailing
        )

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        return f"<Connection {scheme}://{host}:{port}>"


def _proxy_for(origin: Origin) -> str | None:
    """The environment's proxy for this origin, as httpx with `trust_env` would pick it."""
    scheme, host, _ = origin
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class Http11Transport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        max_connections: int = 1000,
        max_idle: int = 100,
        keepalive_expiry: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        proxy_for: Callable[[Origin], str | None] = _proxy_for,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._clock = clock
        self._proxy_for = proxy_for
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0
        self._in_use = 0
        self._room = anyio.Event()
        self._proxied: dict[Origin, httpx.AsyncBaseTransport | None] = {}
        self._closed = False
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"<Http11Transport in use {self._in_use}, idle {self._idle_count}>"

    # ---------------------------------------------------------------- the seam

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'.", request=request
            )
        if self._closed:
            raise RuntimeError("the transport is closed")
        origin = (scheme, url.host, url.port or DEFAULT_PORTS[scheme])
        proxied = self._proxied_transport(origin)
        if proxied is not None:
            return await proxied.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        await self._wait_for_room(request, timeouts.get("pool"))
        self._in_use += 1
        conn: Connection | None = None
        try:
            data = _request_bytes(request, await _request_body(request))
            conn = await self._take_idle(origin)
            if conn is not None:
                try:
                    head = await _exchange(conn, request, data, timeouts.get("read"), reused=True)
                except _StaleConnection:
                    await conn.aclose()
                    conn = None
            if conn is None:
                conn = await self._connect(origin, request, timeouts.get("connect"))
                head = await _exchange(conn, request, data, timeouts.get("read"), reused=False)
        except BaseException:
            if conn is not None:
                await conn.aclose()
            self._release()
            raise
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=ResponseStream(self, conn, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        idle = [c for conns in self._idle.values() for c in conns]
        self._idle.clear()
        self._idle_count = 0
        for conn in idle:
            await conn.aclose()
        for proxied in self._proxied.values():
            if proxied is not None:
                await proxied.aclose()
        self._proxied.clear()

    # ---------------------------------------------------------------- the pool

    def _proxied_transport(self, origin: Origin) -> httpx.AsyncBaseTransport | None:
        if origin not in self._proxied:
            proxy = self._proxy_for(origin)
            self._proxied[origin] = (
                None
                if proxy is None
                else httpx.AsyncHTTPTransport(
                    proxy=proxy,
                    verify=self._ssl_context() if self._ssl_context else True,
                )
            )
        return self._proxied[origin]

    async def _wait_for_room(self, request: httpx.Request, wait_s: float | None) -> None:
        if self._in_use < self._max_connections:
            return
        try:
            with anyio.fail_after(wait_s):
                while self._in_use >= self._max_connections:
                    await self._room.wait()
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"all {self._max_connections} upstream connections stayed in use", request=request
            ) from None

    def _release(self) -> None:
        self._in_use -= 1
        if self._in_use == self._max_connections - 1:
            self._room.set()
            self._room = anyio.Event()

    async def _take_idle(self, origin: Origin) -> Connection | None:
        conns = self._idle.get(origin)
        stale: list[Connection] = []
        found = None
        now = self._clock()
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if now - conn.idle_since <= self._keepalive_expiry and not conn.server_closed():
                found = conn
                break
            stale.append(conn)
        for conn in stale:
            await conn.aclose()
        return found

    def _put_idle(self, conn: Connection) -> bool:
        if self._closed or self._idle_count >= self._max_idle:
            return False
        conn.idle_since = self._clock()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._idle_count += 1
        return True

    async def _connect(
        self, origin: Origin, request: httpx.Request, connect_s: float | None
    ) -> Connection:
        scheme, host, port = origin
        stream: anyio.abc.ByteStream
        try:
            with anyio.fail_after(connect_s):
                if scheme == "https":
                    context = self._ssl_context() if self._ssl_context else None
                    stream = await anyio.connect_tcp(
                        host, port, ssl_context=context, tls=True, tls_hostname=host
                    )
                else:
                    stream = await anyio.connect_tcp(host, port)
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"timed out connecting to {host}:{port}", request=request
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        self.connections_opened += 1
        return Connection(stream, origin)

    async def _response_done(self, conn: Connection, reusable: bool) -> None:
        self._release()
        conn.response = None
        if not (reusable and self._put_idle(conn)):
            await conn.aclose()


class ResponseStream(httpx.AsyncByteStream):
    """The body of one response; closing it hands the connection back (or closes it when
    the body was not read to its end)."""

    __slots__ = ("_closed", "_conn", "_request", "_transport")

    def __init__(self, transport: Http11Transport, conn: Connection, request: httpx.Request):
        self._transport = transport
        self._conn = conn
        self._request = request
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        response = self._conn.response
        assert response is not None
        stream = self._conn.stream
        request = self._request
        while True:
            if response.body:
                # What one read brought, in one piece: its events are then handled, and
                # written on by the gateway, as one batch.
                pieces = response.body
                response.body = []
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if response.done:
                return
            try:
                data = await stream.receive(READ_CHUNK)
            except anyio.EndOfStream:
                if response.end_of_stream():
                    continue
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body",
                    request=request,
                ) from None
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            response.feed(data, request)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._transport._response_done(self._conn, self._conn.reusable())


async def _request_body(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:
        return await request.aread()


def _request_bytes(request: httpx.Request, body: bytes) -> bytes:
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    has_length = False
    for name, value in request.headers.raw:
        if not is_field_name(name) or not is_field_value(value):
            raise httpx.LocalProtocolError(
                f"request header {name!r} is not a valid HTTP header", request=request
            )
        has_length = has_length or name.lower() in (b"content-length", b"transfer-encoding")
        parts += (name, b": ", value, b"\r\n")
    if body and not has_length:
        parts.append(b"content-length: %d\r\n" % len(body))
    parts += (b"\r\n", body)
    return b"".join(parts)


async def _exchange(
    conn: Connection, request: httpx.Request, data: bytes, read_s: float | None, *, reused: bool
) -> Response:
    """Send the request and read the response head."""
    response = conn.response = Response()
    try:
        await conn.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
        if reused:
            raise _StaleConnection from exc
        raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
    received = False
    try:
        with anyio.fail_after(read_s):
            while not response.head_done:
                try:
                    chunk = await conn.stream.receive(READ_CHUNK)
                except anyio.EndOfStream:
                    if reused and not received:
                        raise _StaleConnection from None
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    ) from None
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    if reused and not received:
                        raise _StaleConnection from exc
                    raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
                received = True
                response.feed(chunk, request)
    except TimeoutError:
        raise httpx.ReadTimeout(f"no response head within {read_s} s", request=request) from None
    return response
