"""The asyncio client of the control socket: concurrent calls, typed results and events.

`AsyncClient` has the surface of `codexctl.Client` with every call awaited; the calls, their
params and result types are defined once in `codexctl.calls` and shared by both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal, TypeVar, Unpack

import msgspec

from codexctl import calls
from codexctl.calls import Call, GroupKey, JobState, SubmitOptions, Topic
from codexctl.client import (
    MAX_REPLY_BYTES,
    NOTIFICATION_BUFFER,
    _decode_params,
    _encode_request,
    _protocol_error,
    _reply_decoder,
    _typed,
)
from codexctl.errors import ConnectionLost, DaemonUnreachable, UntrustedSocket, error_from_object
from codexctl.events import (
    REATTACH_TIMEOUT_S,
    Follower,
    JobEvent,
    Notification,
    Step,
    TypedNotification,
    reconnect_delays,
)
from codexctl.protocol import (
    ClientInfo,
    DaemonStatus,
    InitializeResult,
    JobView,
    ListResult,
    SubmitResult,
    SubscribeResult,
    resolve_socket_path,
)
from codexctl.results import (
    AccountInfo,
    ConfigRead,
    ConfigReloadResult,
    LoginCancelResult,
    LoginStartResult,
    LogoutResult,
    MethodInfo,
    ModelsResult,
    RateLimitsResult,
    TokenResult,
    UsageResult,
)
from codexctl.streaming import AsyncStream, Reply
from codexctl.trust import check_peer, expected_owner

T = TypeVar("T")


class AsyncClient:
    """An asyncio client of the codexd daemon: `codexctl.Client`'s surface, awaited.

        async with AsyncClient() as c:
            reply = await c.ask("Say hi")

    Calls may run concurrently on one connection (`asyncio.gather`). `notifications()`,
    `events()`, `ask()` and `stream()` read the connection's notifications: run one of
    them at a time per client (open another client to follow two jobs at once).
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        client: ClientInfo | None = None,
        reattach_timeout: float = REATTACH_TIMEOUT_S,
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        # A path named by the caller lets root talk to another user's daemon (codexctl.trust).
        self._explicit = bool(socket_path)
        self._client_info = client
        self._reattach_timeout = reattach_timeout
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
        """A connected client (`DaemonUnreachable` when no daemon answers)."""
        self = cls(socket_path, client=client)
        await self.connect()
        return self

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the connection (calls do it when needed)."""
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
            hello = calls.initialize(self._client_info)  # its reply is not needed: not decoded
            await self.call(hello.method, hello.params)

    async def aclose(self) -> None:
        """Close the connection for good."""
        self._closed = True
        await self._disconnect()

    async def _disconnect(self) -> None:
        writer, task = self._writer, self._read_task
        self._reader = self._writer = self._read_task = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---------------------------------------------------------------- the raw path

    async def call(self, method: str, params: Any = None) -> Any:
        """Send one request and return its result as plain JSON values (the raw path)."""
        if self._writer is None and not self._closed:
            await self.connect()
        if self._closed or self._writer is None:
            raise ConnectionLost(self.socket_path)
        if self._read_task is None or self._read_task.done():
            raise ConnectionLost(self.socket_path)
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            self._writer.write(_encode_request(rid, method, params))
            await self._writer.drain()
            return await fut
        except (BrokenPipeError, ConnectionResetError):
            raise ConnectionLost(self.socket_path) from None
        finally:
            self._waiting.pop(rid, None)

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (a request that gets no reply)."""
        assert self._writer is not None
        self._writer.write(_encode_request(None, method, params))
        await self._writer.drain()

    async def notifications(self) -> AsyncIterator[TypedNotification]:
        """Every notification, typed, in arrival order, until the connection closes."""
        while True:
            note = await self._notifications.get()
            if note is None:
                return
            yield _typed(note)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        queue = self._notifications
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
                        await queue.put(Notification(env.method, _decode_params(env.params)))
                    continue
                fut = self._waiting.get(env.id) if isinstance(env.id, int) else None
                if fut is None or fut.done():
                    continue
                if not isinstance(env.error, msgspec.UnsetType):
                    fut.set_exception(error_from_object(env.error))
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
                queue.put_nowait(None)

    async def _run(self, call: Call[T]) -> T:
        return call.decode(await self.call(call.method, call.params))

    # ---------------------------------------------------------------- following a job

    async def events(self, job_id: str, *, after_seq: int = 0) -> AsyncIterator[JobEvent]:
        """A job's typed events after `after_seq`, to its terminal one; re-attaches after
        a lost connection without a gap or a repeat (as `Client.events`)."""
        async for event in self._follow(job_id, after_seq, subscribe=True):
            yield event

    async def _follow(
        self, job_id: str, after_seq: int, *, subscribe: bool
    ) -> AsyncIterator[JobEvent]:
        follower = Follower(job_id, after_seq)
        need_subscribe = subscribe
        while not follower.done:
            try:
                if self._writer is None and not need_subscribe:
                    await self._reconnect()
                    need_subscribe = True
                if need_subscribe:
                    await self.subscribe(job_id, follower.last)
                    need_subscribe = False
                note = await self._notifications.get()
                if note is None:
                    raise ConnectionLost(self.socket_path)
            except ConnectionLost:
                if self._closed:
                    raise
                await self._reconnect()
                need_subscribe = True
                continue
            step = follower.feed(note)
            if step is Step.EVENT:
                event = _typed(note)
                assert isinstance(event, JobEvent)
                yield event
            elif step is Step.RESUBSCRIBE:
                need_subscribe = True

    async def _reconnect(self) -> None:
        await self._disconnect()
        # What the lost connection still had queued is replayed by the new subscription.
        self._notifications = asyncio.Queue(NOTIFICATION_BUFFER)
        delays = reconnect_delays(self._reattach_timeout)
        while True:
            try:
                await self.connect()
                return
            except UntrustedSocket:
                raise
            except DaemonUnreachable:
                delay = next(delays, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def ask(self, prompt: str, **options: Unpack[SubmitOptions]) -> Reply:
        """`Client.ask`, awaited: the whole `Reply` (text, usage, cost, job id)."""
        stream = await self.stream(prompt, **options)
        async for _ in stream:
            pass
        return stream.reply

    async def stream(self, prompt: str, **options: Unpack[SubmitOptions]) -> AsyncStream:
        """`Client.stream`, awaited: an `AsyncStream` of `str` pieces and `Reset` markers."""
        params = calls.submit_params(prompt, subscribe=True, **options)
        job_id = (await self._run(calls.submit(params))).job_id
        return AsyncStream(self, job_id, self._follow(job_id, 0, subscribe=False))

    # ---------------------------------------------------------------- typed calls

    async def initialize(self, name: str, version: str | None = None) -> InitializeResult:
        """`Client.initialize`, awaited."""
        return await self._run(calls.initialize(ClientInfo(name=name, version=version)))

    async def ping(self) -> None:
        """`Client.ping`, awaited."""
        await self._run(calls.ping())

    async def status(self) -> DaemonStatus:
        """`Client.status`, awaited."""
        return await self._run(calls.status())

    async def shutdown(self) -> None:
        """`Client.shutdown`, awaited."""
        await self._run(calls.shutdown())

    async def methods(self) -> list[MethodInfo]:
        """`Client.methods`, awaited."""
        return await self._run(calls.methods())

    async def account(self) -> AccountInfo:
        """`Client.account`, awaited."""
        return await self._run(calls.account())

    async def refresh_account(self) -> AccountInfo:
        """`Client.refresh_account`, awaited."""
        return await self._run(calls.refresh_account())

    async def login(
        self,
        method: Literal["api_key", "browser", "device"] = "browser",
        *,
        api_key: str | None = None,
        verify: bool = False,
    ) -> LoginStartResult:
        """`Client.login`, awaited."""
        return await self._run(calls.login(method, api_key, verify))

    async def cancel_login(self, login_id: str) -> LoginCancelResult:
        """`Client.cancel_login`, awaited."""
        return await self._run(calls.cancel_login(login_id))

    async def logout(self) -> LogoutResult:
        """`Client.logout`, awaited."""
        return await self._run(calls.logout())

    async def models(self, provider: str | None = None) -> ModelsResult:
        """`Client.models`, awaited."""
        return await self._run(calls.models(provider))

    async def config(self) -> ConfigRead:
        """`Client.config`, awaited."""
        return await self._run(calls.config())

    async def reload_config(self) -> ConfigReloadResult:
        """`Client.reload_config`, awaited."""
        return await self._run(calls.reload_config())

    async def submit(
        self,
        prompt: str | None = None,
        *,
        body: dict[str, Any] | None = None,
        subscribe: bool = False,
        **options: Unpack[SubmitOptions],
    ) -> SubmitResult:
        """`Client.submit`, awaited."""
        params = calls.submit_params(prompt, body=body, subscribe=subscribe, **options)
        return await self._run(calls.submit(params))

    async def job(self, job_id: str) -> JobView:
        """`Client.job`, awaited."""
        return await self._run(calls.job(job_id))

    async def jobs(self, state: JobState | None = None, limit: int | None = None) -> ListResult:
        """`Client.jobs`, awaited."""
        return await self._run(calls.jobs(state, limit))

    async def subscribe(self, job_id: str, after_seq: int = 0) -> SubscribeResult:
        """`Client.subscribe`, awaited."""
        return await self._run(calls.subscribe(job_id, after_seq))

    async def unsubscribe(self, job_id: str) -> None:
        """`Client.unsubscribe`, awaited."""
        await self._run(calls.unsubscribe(job_id))

    async def cancel(self, job_id: str) -> JobView:
        """`Client.cancel`, awaited."""
        return await self._run(calls.cancel(job_id))

    async def limits(self, provider: str | None = None) -> RateLimitsResult:
        """`Client.limits`, awaited."""
        return await self._run(calls.limits(provider))

    async def usage(
        self,
        since: str | None = None,
        until: str | None = None,
        group_by: Iterable[GroupKey] = (),
    ) -> UsageResult:
        """`Client.usage`, awaited."""
        return await self._run(calls.usage(since, until, group_by))

    async def gateway_token(self, *, rotate: bool = False) -> TokenResult:
        """`Client.gateway_token`, awaited."""
        return await self._run(calls.gateway_token(rotate))

    async def subscribe_events(self, *topics: Topic) -> None:
        """`Client.subscribe_events`, awaited."""
        await self._run(calls.subscribe_events(topics))
