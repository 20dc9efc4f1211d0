"""The control socket: accept, check the peer, frame, dispatch, reply.

One task per connection, with a writer task that owns the socket's send side and a bounded
outbound stream in front of it. Requests run concurrently (replies may come out of order),
except methods marked `inline`, which are cheap and answered from the reader itself.

One reaper task closes connections idle for `[codexd] connection_idle_timeout_s`: nothing
read or written, no request in flight, no running job tied to them (`cancel_on_disconnect`),
and nothing they wait on (a job's or a topic's events, a login's end). It compares counters
the connections keep anyway, so a request costs no clock read and no timer.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from codexctl.protocol import (
    ErrorKind,
    ErrorReply,
    Notification,
    Reply,
    RpcError,
)
from codexd.rpc.envelope import Rejected, parse_request
from codexd.rpc.framing import LineFramer, Overflow
from codexd.security.peer import PeerCred, admit, process_name

if TYPE_CHECKING:
    from codexd.jobs import LogEntry
    from codexd.service import Services

log = logging.getLogger("codexd.rpc")

P = TypeVar("P")
R = TypeVar("R")

READ_CHUNK = 65536
# Outbound messages waiting for the writer. Replies wait for room; notifications that find it
# full are the subscriber's problem (the job layer drops the slow subscription).
OUTBOUND_BUFFER = 1024
# Requests of one connection being handled at once; past it the reader stops reading.
MAX_INFLIGHT_PER_CONNECTION = 64
WRITE_BATCH = 1024
MAX_DEFERRED = 4096
# The idle reaper looks at most this often, however small connection_idle_timeout_s is.
MIN_REAP_INTERVAL_S = 0.05

_encoder = msgspec.json.Encoder()


def encode_line(message: Any) -> bytes:
    buf = bytearray()
    _encoder.encode_into(message, buf)
    buf += b"\n"
    return bytes(buf)


def error_line(request_id: int | str | None, err: RpcError) -> bytes:
    return encode_line(ErrorReply(id=request_id, error=err.to_object()))


@dataclass(frozen=True, slots=True)
class Method(Generic[P, R]):
    """One row of the method table: what the server decodes, calls, and documents."""

    name: str
    params_type: type[P]
    result_type: Any
    handler: Callable[[CallContext, P], Awaitable[R]]
    summary: str
    inline: bool = False  # cheap and never blocks: answered without a task of its own


class MethodTable:
    """The table plus one params decoder per method, built once."""

    def __init__(self, methods: list[Method[Any, Any]]) -> None:
        names = [m.name for m in methods]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"methods defined twice: {sorted(dupes)}")
        self.methods: Mapping[str, Method[Any, Any]] = {m.name: m for m in methods}
        self._decoders = {m.name: msgspec.json.Decoder(m.params_type) for m in methods}

    def decode_params(self, method: Method[Any, Any], raw: msgspec.Raw | msgspec.UnsetType) -> Any:
        data = b"{}" if raw is msgspec.UNSET or bytes(raw) == b"null" else bytes(raw)
        if data[:1] == b"[":
            raise RpcError(
                ErrorKind.INVALID_PARAMS,
                "invalid params: params must be an object of named members, not an array",
            )
        try:
            return self._decoders[method.name].decode(data)
        except msgspec.ValidationError as exc:
            raise RpcError(ErrorKind.INVALID_PARAMS, f"invalid params for {method.name}: {exc}")
        except UnicodeDecodeError:
            raise RpcError(ErrorKind.PARSE_ERROR, "parse error: the params are not valid UTF-8")
        except RecursionError:
            raise RpcError(ErrorKind.PARSE_ERROR, "parse error: the params nest too deeply")
        except msgspec.DecodeError as exc:
            # Releases differ in which error they raise for the same bad bytes (0.23 raises
            # DecodeError for invalid UTF-8 inside a Raw value): every one is a parse error.
            raise RpcError(ErrorKind.PARSE_ERROR, f"parse error: the params are not JSON ({exc})")


class Connection:
    """One client connection. Everything it holds is released by `_close()`."""

    _ids = itertools.count(1)

    def __init__(self, peer: PeerCred, send: MemoryObjectSendStream[bytes]) -> None:
        self.id = next(self._ids)
        self.peer = peer
        self.client_name = process_name(peer.pid) or "unknown"
        self.client_version: str | None = None
        self.connected_at = time.monotonic()
        self._send = send
        # (lines queued before it, line): a notice goes out right after those, in order.
        self._deferred: list[tuple[int, bytes]] = []
        self._queued = 0  # lines handed to this connection so far
        self._written = 0  # of those, lines fully written to the socket
        self._raw: socket.socket | None = None
        self._writer_busy = False
        self._closing = False
        self.closed = False
        self.writer_done = anyio.Event()
        # For the idle reaper: reads so far, requests being handled, and what it saw last.
        self.reads = 0
        self.inflight = 0
        self.idle_mark = (0, 0.0)  # (reads + lines written, when they last changed)
        self.scope: anyio.CancelScope | None = None  # cancelling it ends the connection

    def is_busy(self) -> bool:
        """A request in flight (running jobs that end with this connection are among the
        server's `waiting()`)."""
        return self.inflight > 0

    def _write_direct(self, line: bytes) -> bool:
        """Write at once when nothing is waiting to be written before `line` (the common case
        of a reply to an idle client): no hand-over to the writer task, no extra loop turn.
        A partial write queues the rest first, so order is kept."""
        raw = self._raw
        if raw is None or self._writer_busy or self._closing or self._queued != self._written:
            return False
        try:
            sent = raw.send(line)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False  # the writer meets the same error and ends the connection
        self._queued += 1
        if sent == len(line):
            self._written += 1
            return True
        self._send.send_nowait(line[sent:])  # the queue is empty: there is room
        return True

    async def send(self, line: bytes) -> None:
        """Queue a line, waiting for room (replies). A closed connection drops it: there is
        nobody left to read it."""
        if self._write_direct(line):
            return
        try:
            await self._send.send(line)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        self._queued += 1

    def close_outbound(self) -> None:
        """No more lines: the writer sends what is queued, then stops."""
        self._closing = True
        self._send.close()

    def deliver(self, entry: LogEntry) -> bool:
        """A live event of a job this connection subscribed to, as its `job/event` line."""
        return self.send_nowait(entry.line)

    def send_nowait(self, line: bytes) -> bool:
        """Queue a line if there is room (notifications); False when full or closed."""
        if self._write_direct(line):
            return True
        try:
            self._send.send_nowait(line)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        self._queued += 1
        return True

    def defer(self, line: bytes) -> None:
        """Queue a line that must not be lost (a `subscription/dropped` notice) even when the
        outbound buffer is full: the writer sends it as soon as the lines queued before it are
        written, so it never overtakes the events it speaks of. Bounded by the number of
        subscriptions the connection can have dropped."""
        if not self.send_nowait(line) and not self.closed:
            if len(self._deferred) >= MAX_DEFERRED:
                log.warning("connection %d: too many deferred notices, closing it", self.id)
                self._send.close()
                return
            self._deferred.append((self._queued, line))

    def take_deferred(self) -> list[bytes]:
        """The deferred lines whose predecessors are all written."""
        written = self._written
        if not self._deferred or self._deferred[0][0] > written:
            return []
        out = [line for after, line in self._deferred if after <= written]
        self._deferred = [(after, line) for after, line in self._deferred if after > written]
        return out

    def notify(self, method: str, params: Any) -> bool:
        return self.send_nowait(encode_line(Notification(method=method, params=params)))

    def _close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"<Connection #{self.id} client={self.client_name!r} uid={self.peer.uid}>"


@dataclass
class CallContext:
    """What a handler gets besides its params."""

    services: Services
    connection: Connection
    request_id: int | str | None
    _after_reply: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def after_reply(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` right after the reply is queued: notifications the call causes
        (a submitted job's events, a replay) then follow the reply on this connection."""
        self._after_reply.append(callback)


@dataclass
class ServerStats:
    connections: int = 0
    accepted: int = 0
    refused_peer: int = 0
    refused_overloaded: int = 0


class RpcServer:
    def __init__(
        self,
        services: Services,
        table: MethodTable,
        *,
        max_message_bytes: Callable[[], int],
        max_connections: Callable[[], int],
        idle_timeout: Callable[[], float],
        waiting: Callable[[], Collection[object]],
        on_close: Callable[[Connection], None] | None = None,
    ) -> None:
        """`waiting()` names the connections that wait for something (subscribers of running
        jobs and of topics, owners of logins in progress or of jobs that end with them): never
        idle. `on_close(conn)` runs once a connection has ended."""
        self._services = services
        self._on_close = on_close
        self._table = table
        self._max_message_bytes = max_message_bytes
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._waiting = waiting
        self.stats = ServerStats()
        self.connections: set[Connection] = set()

    async def flush(self, limit_s: float) -> None:
        """Before stopping: let every connection's writer send what is queued (a reply to
        `daemon/shutdown`, the last job events), for at most `limit_s` seconds."""
        conns = list(self.connections)
        for conn in conns:
            conn.close_outbound()
        with anyio.move_on_after(limit_s):
            for conn in conns:
                await conn.writer_done.wait()

    async def serve(self, listener: anyio.abc.SocketListener) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reap_idle, name="idle connection reaper")
            async with listener:
                await listener.serve(self._handle)

    async def _reap_idle(self) -> None:
        while True:
            timeout = self._idle_timeout()
            now = anyio.current_time()
            try:
                wake = self.close_idle(now, timeout)
            except Exception:  # a bug here must not end the server: log it, look again later
                log.exception("the idle connection reaper failed")
                wake = now + timeout
            # At least twice per timeout: a connection idle since just after this look is
            # closed at most half a timeout late.
            await anyio.sleep(max(min(wake - now, timeout / 2), MIN_REAP_INTERVAL_S))

    def close_idle(self, now: float, timeout: float) -> float:
        """Close the connections idle for `timeout` at `now`; returns when one may next
        be. Activity is seen as a change in the lines read and written since the last look,
        which restarts the connection's idle time from `now`."""
        wake = now + timeout
        waiting: Collection[object] | None = None
        for conn in list(self.connections):
            activity = conn.reads + conn._written
            if activity != conn.idle_mark[0] or conn.is_busy():
                conn.idle_mark = (activity, now)
                continue
            expires = conn.idle_mark[1] + timeout
            if expires > now:
                wake = min(wake, expires)
                continue
            if waiting is None:
                waiting = self._waiting()
            if conn in waiting:
                conn.idle_mark = (activity, now)
                continue
            log.info("connection %d (%s): idle for %gs, closed", conn.id, conn.client_name, timeout)
            if conn.scope is not None:
                conn.scope.cancel()
        return wake

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            cred = admit(raw, "control socket", log)
            if cred is None:
                self.stats.refused_peer += 1
                return
            if self.stats.connections >= self._max_connections():
                self.stats.refused_overloaded += 1
                err = RpcError(
                    ErrorKind.OVERLOADED,
                    f"too many connections ({self._max_connections()}): close idle clients "
                    "or raise [codexd] max_connections",
                )
                try:
                    await stream.send(error_line(None, err))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                return
            self.stats.connections += 1
            self.stats.accepted += 1
            try:
                await self._run_connection(stream, cred)
            except Exception:
                # A bug met while serving one connection closes that connection, never the
                # daemon (the listener's task group would otherwise end with it).
                log.exception("internal error on a connection from pid %s; closed it", cred.pid)
            finally:
                self.stats.connections -= 1

    async def _run_connection(self, stream: anyio.abc.SocketStream, cred: PeerCred) -> None:
        send, receive = anyio.create_memory_object_stream[bytes](OUTBOUND_BUFFER)
        conn = Connection(cred, send)
        conn._raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        conn.idle_mark = (0, anyio.current_time())
        self.connections.add(conn)
        try:
            async with anyio.create_task_group() as tg:
                conn.scope = tg.cancel_scope
                tg.start_soon(self._writer, stream, receive, conn, tg.cancel_scope)
                async with anyio.create_task_group() as handlers:
                    await self._reader(stream, conn, handlers)
                # The reader ended (EOF or an oversize line): requests in flight are answered,
                # then the writer drains what is queued and the connection closes.
                await send.aclose()
        finally:
            self.connections.discard(conn)
            conn._close()
            if self._on_close is not None:
                self._on_close(conn)
            send.close()

    async def _writer(
        self,
        stream: anyio.abc.SocketStream,
        receive: MemoryObjectReceiveStream[bytes],
        conn: Connection,
        scope: anyio.CancelScope,
    ) -> None:
        async with receive:
            try:
                async for line in receive:
                    conn._writer_busy = True
                    batch = [line]
                    while len(batch) < WRITE_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await stream.send(b"".join(batch) if len(batch) > 1 else line)
                    conn._written += len(batch)
                    deferred = conn.take_deferred()
                    if deferred:
                        await stream.send(b"".join(deferred))
                    conn._writer_busy = False
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                # The peer went away: nothing more can be delivered, end the connection.
                scope.cancel()
            finally:
                conn.writer_done.set()

    async def _reader(
        self, stream: anyio.abc.SocketStream, conn: Connection, handlers: anyio.abc.TaskGroup
    ) -> None:
        framer = LineFramer(self._max_message_bytes())
        inflight = anyio.Semaphore(MAX_INFLIGHT_PER_CONNECTION)
        while True:
            try:
                chunk = await stream.receive(READ_CHUNK)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            except OSError:
                return
            conn.reads += 1
            for line in framer.feed(chunk):
                if isinstance(line, Overflow):
                    err = RpcError(
                        ErrorKind.INVALID_REQUEST,
                        f"message too large: a line may hold at most {line.limit} bytes "
                        "([codexd] max_message_bytes); the connection is closed",
                    )
                    await conn.send(error_line(None, err))
                    return
                await self._dispatch(line, conn, handlers, inflight)

    async def _dispatch(
        self,
        line: bytes,
        conn: Connection,
        handlers: anyio.abc.TaskGroup,
        inflight: anyio.Semaphore,
    ) -> None:
        parsed = parse_request(line)
        if isinstance(parsed, Rejected):
            if parsed.answer:
                await conn.send(error_line(parsed.request_id, parsed.error))
            return
        env = parsed
        is_notification = env.id is msgspec.UNSET
        request_id = None if isinstance(env.id, msgspec.UnsetType) else env.id
        method = self._table.methods.get(env.method)
        if method is None:
            if is_notification:
                log.debug("ignored notification for unknown method %r", env.method)
            else:
                err = RpcError(
                    ErrorKind.METHOD_NOT_FOUND,
                    f"method not found: {env.method!r} (codexctl rpc --list shows the methods)",
                )
                await conn.send(error_line(request_id, err))
            return
        ctx = CallContext(self._services, conn, request_id)
        if method.inline:
            conn.inflight += 1
            try:
                await self._call(method, env.params, ctx, is_notification)
            finally:
                conn.inflight -= 1
            return
        await inflight.acquire()
        conn.inflight += 1
        handlers.start_soon(self._call_released, method, env.params, ctx, is_notification, inflight)

    async def _call_released(
        self,
        method: Method[Any, Any],
        raw: msgspec.Raw | msgspec.UnsetType,
        ctx: CallContext,
        is_notification: bool,
        inflight: anyio.Semaphore,
    ) -> None:
        try:
            await self._call(method, raw, ctx, is_notification)
        finally:
            ctx.connection.inflight -= 1
            inflight.release()

    async def _call(
        self,
        method: Method[Any, Any],
        raw: msgspec.Raw | msgspec.UnsetType,
        ctx: CallContext,
        is_notification: bool,
    ) -> None:
        started = time.perf_counter()
        try:
            params = self._table.decode_params(method, raw)
            result = await method.handler(ctx, params)
        except RpcError as exc:
            log.debug("%s id=%s -> %s", method.name, ctx.request_id, exc.kind)
            if not is_notification:
                await ctx.connection.send(error_line(ctx.request_id, exc))
            return
        except Exception:
            log.exception("internal error in %s (id=%s)", method.name, ctx.request_id)
            if not is_notification:
                err = RpcError(
                    ErrorKind.INTERNAL_ERROR,
                    f"internal error in {method.name}: this is a bug in codexd; "
                    "the daemon log has the details",
                )
                await ctx.connection.send(error_line(ctx.request_id, err))
            return
        if not is_notification:
            await ctx.connection.send(encode_line(Reply(id=ctx.request_id, result=result)))
        for callback in ctx._after_reply:
            await callback()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s id=%s ok in %.0f µs",
                method.name,
                ctx.request_id,
                (time.perf_counter() - started) * 1e6,
            )


__all__ = [
    "CallContext",
    "Connection",
    "Method",
    "MethodTable",
    "RpcServer",
    "encode_line",
    "error_line",
]
