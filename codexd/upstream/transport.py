"""The HTTP/1.1 keep-alive transport under every upstream model request (h11 on anyio).

It implements httpx's seam, `AsyncBaseTransport.handle_async_request(Request) -> Response`,
so the shell (`client.py`) and its tests keep httpx's request, response and exception types,
and `httpx.MockTransport` still stands in for it. It exists because httpx's `AsyncClient`
over httpcore's pool spends ~1.0–1.5 ms of CPU on one streamed request, most of it in layers
the daemon does not use (auth and redirect flows, cookies) and in a pool that re-examines
every connection it holds, with a syscall each, on every request and every release; the
same exchange here costs ~0.55 ms (bench/upstream_transport.py prints both).

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
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Final

import anyio
import anyio.abc
import h11
import httpx

READ_CHUNK: Final = 65536
MAX_HEAD_BYTES: Final = 64 * 1024
DEFAULT_PORTS: Final = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _StaleConnection(Exception):
    """A reused connection was closed by the server before any byte of a response."""


class Connection:
    __slots__ = ("h11", "idle_since", "origin", "stream")

    def __init__(self, stream: anyio.abc.ByteStream, origin: Origin) -> None:
        self.stream = stream
        self.origin = origin
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.idle_since = 0.0

    def server_closed(self) -> bool:
        """An idle connection with something to read was closed by the server (or it sent
        bytes nobody asked for): either way it cannot carry another request."""
        try:
            fileno = self.stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        except (anyio.TypedAttributeLookupError, OSError):
            return True
        if fileno < 0:
            return True
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        return f"<Connection {scheme}://{host}:{port} {self.h11.our_state}/{self.h11.their_state}>"


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
            body = await _request_body(request)
            conn = await self._take_idle(origin)
            if conn is not None:
                try:
                    head = await _exchange(conn, request, body, timeouts.get("read"), reused=True)
                except _StaleConnection:
                    await conn.aclose()
                    conn = None
            if conn is None:
                conn = await self._connect(origin, request, timeouts.get("connect"))
                head = await _exchange(conn, request, body, timeouts.get("read"), reused=False)
        except BaseException:
            if conn is not None:
                await conn.aclose()
            self._release()
            raise
        return httpx.Response(
            head.status_code,
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
        if reusable:
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                reusable = False
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
        conn = self._conn.h11
        stream = self._conn.stream
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=self._request) from exc
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(READ_CHUNK)
                except anyio.EndOfStream:
                    data = b""
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    raise httpx.ReadError(
                        str(exc) or type(exc).__name__, request=self._request
                    ) from exc
                conn.receive_data(data)
            elif type(event) is h11.Data:
                yield bytes(event.data)
            elif type(event) is h11.EndOfMessage:
                return
            else:  # ConnectionClosed before the end of the body
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body",
                    request=self._request,
                )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn.h11
        reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
        with anyio.CancelScope(shield=True):
            await self._transport._response_done(self._conn, reusable)


async def _request_body(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:
        return await request.aread()


async def _exchange(
    conn: Connection, request: httpx.Request, body: bytes, read_s: float | None, *, reused: bool
) -> h11.Response:
    """Send the request and read the response head."""
    h = conn.h11
    data = h.send(
        h11.Request(
            method=request.method.encode("ascii"),
            target=request.url.raw_path,
            headers=request.headers.raw,
        )
    )
    if body:
        data += h.send(h11.Data(data=body))
    data += h.send(h11.EndOfMessage())
    try:
        await conn.stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
        if reused:
            raise _StaleConnection from exc
        raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
    received = False
    try:
        with anyio.fail_after(read_s):
            while True:
                try:
                    event = h.next_event()
                except h11.RemoteProtocolError as exc:
                    raise httpx.RemoteProtocolError(str(exc), request=request) from exc
                if event is h11.NEED_DATA:
                    try:
                        chunk = await conn.stream.receive(READ_CHUNK)
                    except anyio.EndOfStream:
                        chunk = b""
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                        if reused and not received:
                            raise _StaleConnection from exc
                        raise httpx.ReadError(
                            str(exc) or type(exc).__name__, request=request
                        ) from exc
                    if not chunk and reused and not received:
                        raise _StaleConnection
                    received = True
                    h.receive_data(chunk)
                elif type(event) is h11.Response:
                    return event
                elif type(event) is h11.InformationalResponse:
                    continue
                else:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    )
    except TimeoutError:
        raise httpx.ReadTimeout(f"no response head within {read_s} s", request=request) from None
