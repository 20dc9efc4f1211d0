"""The blocking client of the codexd control socket (`codexctl.aio` has the asyncio one).

Both speak NDJSON JSON-RPC 2.0 and import nothing beyond msgspec and the standard library.
A failed call raises its error kind's class (`RateLimited`, `NotFound`, …, all `RpcError`s);
`DaemonUnreachable` means nothing answers at the socket, and `UntrustedSocket` that the socket
is not provably the user's own daemon (`codexctl.trust`, checked before a byte is sent).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final, Literal, TypeVar, Unpack

import msgspec

from codexctl import calls
from codexctl.calls import Call, GroupKey, JobState, SubmitOptions, Topic
from codexctl.errors import (
    ConnectionLost,
    DaemonUnreachable,
    InternalError,
    UntrustedSocket,
    error_from_object,
)
from codexctl.events import (
    REATTACH_TIMEOUT_S,
    Follower,
    JobEvent,
    Notification,
    Step,
    TypedNotification,
    decode_notification,
    reconnect_delays,
)
from codexctl.protocol import (
    MAX_SERVER_MESSAGE_BYTES,
    ClientInfo,
    DaemonStatus,
    InitializeResult,
    JobView,
    ListResult,
    ReplyEnvelope,
    Request,
    RpcError,
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
from codexctl.streaming import Reply, Stream
from codexctl.trust import open_checked

__all__ = ["Client", "Notification"]

T = TypeVar("T")

# Replies can carry a whole job's output; the daemon bounds what it accepts, we bound what
# we buffer from it.
MAX_REPLY_BYTES: Final = MAX_SERVER_MESSAGE_BYTES
NOTIFICATION_BUFFER: Final = 10_000

_encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(ReplyEnvelope)


def _encode_request(rid: int | None, method: str, params: Any) -> bytes:
    req = Request(method=method, params=params if params is not None else msgspec.UNSET)
    if rid is not None:
        req.id = rid
    return _encoder.encode(req) + b"\n"


def _decode_params(raw: msgspec.Raw | msgspec.UnsetType) -> Any:
    return None if raw is msgspec.UNSET else msgspec.json.decode(raw)


def _protocol_error(detail: str) -> RpcError:
    return InternalError(f"unexpected reply from codexd: {detail}")


def _typed(note: Notification) -> TypedNotification:
    try:
        return decode_notification(note)
    except msgspec.ValidationError as exc:
        raise _protocol_error(f"{note.method}: {exc}") from None


class Client:
    """A blocking client of the codexd daemon. Not thread-safe: one call at a time.

        with Client() as c:                # the socket codexctl finds, or Client(path)
            print(c.ask("Say hi").text)

    Connecting: `Client(socket_path=None, *, timeout=30.0, client=None)`. Without a path, the
    socket is `$CODEXD_SOCKET`, then `$XDG_RUNTIME_DIR/codexd/codexd.sock`, then the
    per-user defaults. `client=ClientInfo(name="my-tool")` names your tool in the usage
    ledger. The connection opens on first use (or `connect()`, or `with`). `timeout` bounds
    each call's wait for its reply; `reattach_timeout` how long `events()` keeps trying to
    reconnect after the connection is lost.

    Typed calls, one per daemon method: `status()`, `ping()`, `shutdown()`, `methods()`,
    `initialize()`; `account()`, `refresh_account()`, `login()`, `cancel_login()`,
    `logout()`; `models()`, `config()`, `reload_config()`; `submit()`, `job()`, `jobs()`,
    `subscribe()`, `unsubscribe()`, `cancel()`; `limits()`, `usage()`, `gateway_token()`,
    `subscribe_events()`. Each returns its result as a typed object (`DaemonStatus`,
    `JobView`, …); `call(method, params)` is the raw path and returns plain JSON values.

    Model requests: `ask(prompt, **options)` waits for the `Reply` (text, usage, cost, job
    id); `stream(prompt, **options)` yields the text as it comes (a `Reset` marks a restart);
    `events(job_id)` yields a job's typed events and re-attaches by itself when the
    connection is lost. `notifications()` yields every notification, typed.

    Errors: a failed call or job raises its kind's class (`RateLimited`, `QuotaExceeded`,
    `Unauthenticated`, …; all are `RpcError`); `DaemonUnreachable` when no daemon answers.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        timeout: float | None = 30.0,
        client: ClientInfo | None = None,
        reattach_timeout: float = REATTACH_TIMEOUT_S,
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        # A path named by the caller lets root talk to another user's daemon (codexctl.trust).
        self._explicit = bool(socket_path)
        self._timeout = timeout
        self._client_info = client
        self._reattach_timeout = reattach_timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self._pending: collections.deque[Notification] = collections.deque(
            maxlen=NOTIFICATION_BUFFER
        )

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, opened: socket.socket | None = None) -> None:
        """Open the connection (calls do it when needed); `DaemonUnreachable` when no
        daemon answers, `UntrustedSocket` when the socket is not the user's own.

        `opened`: a connection to `socket_path` that `codexctl.trust.open_checked` made (the
        CLI connects before it loads this module), used instead of opening one."""
        if self._sock is not None:
            return
        if opened is not None:
            opened.settimeout(self._timeout)
            self._sock = opened
        else:
            self._sock = open_checked(
                self.socket_path, explicit=self._explicit, timeout=self._timeout
            )
        if self._client_info is not None:
            hello = calls.initialize(self._client_info)  # its reply is not needed: not decoded
            self.call(hello.method, hello.params)

    def close(self) -> None:
        """Close the connection; the next call opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()  # a line cut off by the close must not prefix the next connection's

    # ---------------------------------------------------------------- the raw path

    def call(self, method: str, params: Any = None) -> Any:
        """Send one request and return its result as plain JSON values (the raw path)."""
        self.connect()
        assert self._sock is not None
        rid = next(self._ids)
        self._send(_encode_request(rid, method, params))
        while True:
            env = self._read_message()
            if env.id is msgspec.UNSET:
                if not isinstance(env.method, msgspec.UnsetType):
                    self._pending.append(Notification(env.method, _decode_params(env.params)))
                continue
            if env.id != rid and env.id is not None:
                continue  # a reply to an earlier, abandoned call
            if not isinstance(env.error, msgspec.UnsetType):
                raise error_from_object(env.error)
            if isinstance(env.result, msgspec.UnsetType):
                raise _protocol_error("a reply with neither result nor error")
            return msgspec.json.decode(env.result)

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (a request that gets no reply)."""
        self.connect()
        self._send(_encode_request(None, method, params))

    def fileno(self) -> int:
        """The connected socket's descriptor, for a caller that waits on it with others."""
        self.connect()
        assert self._sock is not None
        return self._sock.fileno()

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close()
            raise ConnectionLost(self.socket_path) from None

    def next_notification(self, timeout: float | None = None) -> Notification | None:
        """The next notification as it came (method and plain params); None when `timeout`
        passes without one. `ConnectionLost` when the connection closes."""
        if self._pending:
            return self._pending.popleft()
        assert self._sock is not None, "not connected"
        self._sock.settimeout(timeout)
        try:
            while True:
                try:
                    env = self._read_message()
                except (TimeoutError, BlockingIOError):  # timeout=0 makes the socket non-blocking
                    return None
                if env.id is msgspec.UNSET and not isinstance(env.method, msgspec.UnsetType):
                    return Notification(env.method, _decode_params(env.params))
        finally:
            if self._sock is not None:
                self._sock.settimeout(self._timeout)

    def notifications(self) -> Iterator[TypedNotification]:
        """Every notification, typed (`JobEvent`, `JobFinished`, `ConfigReloaded`, …; a
        method this client does not know comes as a raw `Notification`), until the
        connection closes (`ConnectionLost`). Subscribe first: `subscribe_events(...)`."""
        self.connect()
        while True:
            note = self.next_notification(timeout=None)
            if note is not None:
                yield _typed(note)

    def _read_message(self) -> ReplyEnvelope:
        assert self._sock is not None
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                if not line.strip():
                    continue
                try:
                    return _reply_decoder.decode(line)
                except msgspec.DecodeError as exc:
                    raise _protocol_error(str(exc)) from None
            if len(self._buf) > MAX_REPLY_BYTES:
                raise _protocol_error(f"a message over {MAX_REPLY_BYTES} bytes")
            try:
                chunk = self._sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.close()
                raise ConnectionLost(self.socket_path)
            self._buf += chunk

    def _run(self, call: Call[T]) -> T:
        return call.decode(self.call(call.method, call.params))

    # ---------------------------------------------------------------- daemon

    def initialize(self, name: str, version: str | None = None) -> InitializeResult:
        """Name this client for the usage ledger (as `Client(client=ClientInfo(...))` does
        on connecting); returns the daemon's name, version and protocol version."""
        return self._run(calls.initialize(ClientInfo(name=name, version=version)))

    def ping(self) -> None:
        """Check that the daemon answers (the cheapest call)."""
        self._run(calls.ping())

    def status(self) -> DaemonStatus:
        """The daemon's version, uptime, socket, config, account, jobs and budget."""
        return self._run(calls.status())

    def shutdown(self) -> None:
        """Ask the daemon to drain (running jobs finish, for a while) and stop."""
        self._run(calls.shutdown())

    def methods(self) -> list[MethodInfo]:
        """The daemon's methods, with JSON Schemas of their params and results."""
        return self._run(calls.methods())

    # ---------------------------------------------------------------- account

    def account(self) -> AccountInfo:
        """Who is logged in, with which credential (never a secret)."""
        return self._run(calls.account())

    def refresh_account(self) -> AccountInfo:
        """Refresh a ChatGPT login now; then as `account()`."""
        return self._run(calls.refresh_account())

    def login(
        self,
        method: Literal["api_key", "browser", "device"] = "browser",
        *,
        api_key: str | None = None,
        verify: bool = False,
    ) -> LoginStartResult:
        """Start a login: `browser` (open `auth_url`), `device` (enter `user_code` at
        `verification_url`) or `api_key` (store `api_key`; `verify` checks it first). The
        end comes as a `LoginCompleted` notification on this connection."""
        return self._run(calls.login(method, api_key, verify))

    def cancel_login(self, login_id: str) -> LoginCancelResult:
        """Cancel a login in progress."""
        return self._run(calls.cancel_login(login_id))

    def logout(self) -> LogoutResult:
        """Revoke the login upstream when possible, then delete the stored credentials."""
        return self._run(calls.logout())

    # ---------------------------------------------------------------- config, models

    def models(self, provider: str | None = None) -> ModelsResult:
        """The model catalog: context windows, reasoning levels and prices."""
        return self._run(calls.models(provider))

    def config(self) -> ConfigRead:
        """The effective config (secrets redacted), its generation and last error."""
        return self._run(calls.config())

    def reload_config(self) -> ConfigReloadResult:
        """Re-read config.toml now; an invalid file raises `ConfigInvalid`, changing nothing."""
        return self._run(calls.reload_config())

    # ---------------------------------------------------------------- jobs

    def submit(
        self,
        prompt: str | None = None,
        *,
        body: dict[str, Any] | None = None,
        subscribe: bool = False,
        **options: Unpack[SubmitOptions],
    ) -> SubmitResult:
        """Submit a model request and return at once with its job id.

        Give a `prompt` (with `model`, `system`, `reasoning`, …: see `SubmitOptions`), or a
        whole OpenAI request `body` of your own. Follow it with `events(job_id)`, or wait
        for it with `job(job_id)`. With `subscribe=True` its events follow on this
        connection without a `job/subscribe` (then read them with `notifications()`).
        """
        params = calls.submit_params(prompt, body=body, subscribe=subscribe, **options)
        return self._run(calls.submit(params))

    def job(self, job_id: str) -> JobView:
        """One job: its state, attempts, output text, usage, cost and error."""
        return self._run(calls.job(job_id))

    def jobs(self, state: JobState | None = None, limit: int | None = None) -> ListResult:
        """Known jobs, newest first (at most `limit`, 100 by default)."""
        return self._run(calls.jobs(state, limit))

    def subscribe(self, job_id: str, after_seq: int = 0) -> SubscribeResult:
        """Have a job's events after `after_seq` sent on this connection (a replay, then
        live ones). `events(job_id)` does this for you."""
        return self._run(calls.subscribe(job_id, after_seq))

    def unsubscribe(self, job_id: str) -> None:
        """Stop a job's events on this connection."""
        self._run(calls.unsubscribe(job_id))

    def cancel(self, job_id: str) -> JobView:
        """Cancel a job (nothing happens when it has ended); returns it as it is then."""
        return self._run(calls.cancel(job_id))

    def events(self, job_id: str, *, after_seq: int = 0) -> Iterator[JobEvent]:
        """A job's events after `after_seq`, typed, in order, up to its terminal one.

        Each `JobEvent` carries `seq` (1, 2, 3, …) and `event` (`JobStarted`, `TextDelta`,
        `JobRetrying`, `JobCompleted`, …). When the connection is lost (the daemon
        restarted under socket activation, or closed it), this reconnects and subscribes
        again after the last seq it yielded: no event is missed and none comes twice, as
        long as the daemon still retains the job (else `NotFound`, or
        `ReplayUnavailable` when its log no longer reaches back that far). It gives up
        with `DaemonUnreachable` when no daemon answers for `reattach_timeout` seconds.
        Other notifications arriving meanwhile are skipped: follow one job per client.
        """
        return self._follow(job_id, after_seq, subscribe=True)

    def _follow(self, job_id: str, after_seq: int, *, subscribe: bool) -> Iterator[JobEvent]:
        follower = Follower(job_id, after_seq)
        need_subscribe = subscribe
        try:
            while not follower.done:
                try:
                    if self._sock is None and not need_subscribe:
                        # closed since the last event (a call of the caller's found it so)
                        self._reconnect()
                        need_subscribe = True
                    if need_subscribe:
                        self.subscribe(job_id, follower.last)
                        need_subscribe = False
                    note = self.next_notification(timeout=None)
                except ConnectionLost:
                    self._reconnect()
                    need_subscribe = True
                    continue
                if note is None:  # pragma: no cover - timeout None never returns None
                    continue
                step = follower.feed(note)
                if step is Step.EVENT:
                    event = _typed(note)
                    assert isinstance(event, JobEvent)
                    yield event
                elif step is Step.RESUBSCRIBE:
                    need_subscribe = True
        except GeneratorExit:  # the caller stopped early: stop the job's events here too
            if not follower.done and self._sock is not None:
                with contextlib.suppress(RpcError, DaemonUnreachable, OSError):
                    self.unsubscribe(job_id)
            raise

    def _reconnect(self) -> None:
        self.close()
        delays = reconnect_delays(self._reattach_timeout)
        while True:
            try:
                self.connect()
                return
            except UntrustedSocket:
                raise
            except DaemonUnreachable:
                delay = next(delays, None)
                if delay is None:
                    raise
                time.sleep(delay)

    def ask(self, prompt: str, **options: Unpack[SubmitOptions]) -> Reply:
        """Send `prompt` and wait for the whole reply: its `text`, `usage`, `cost_usd` and
        `job_id`. Options as `submit`'s (`model`, `system`, `reasoning`, …). A job that
        fails raises its error kind's class (`RateLimited`, …), a cancelled one `Cancelled`.
        """
        stream = self.stream(prompt, **options)
        for _ in stream:
            pass
        return stream.reply

    def stream(self, prompt: str, **options: Unpack[SubmitOptions]) -> Stream:
        """Send `prompt` and return a `Stream` of its text as it arrives.

        Iterating it yields `str` pieces, and a `Reset` when the daemon retries the job
        and the reply starts over (drop the text you have). After the loop, `stream.reply`
        has the final text, `usage` and `cost_usd`. Leaving a `with client.stream(...)`
        block early cancels the job.
        """
        params = calls.submit_params(prompt, subscribe=True, **options)
        job_id = self._run(calls.submit(params)).job_id
        return Stream(self, job_id, self._follow(job_id, 0, subscribe=False))

    # ---------------------------------------------------------------- limits, usage, …

    def limits(self, provider: str | None = None) -> RateLimitsResult:
        """Each provider's shared rate-limit budget and the upstream limits last seen."""
        return self._run(calls.limits(provider))

    def usage(
        self,
        since: str | None = None,
        until: str | None = None,
        group_by: Iterable[GroupKey] = (),
    ) -> UsageResult:
        """Usage and cost from the ledger: `since`/`until` are RFC 3339 times or local
        dates (YYYY-MM-DD); `group_by` any of "model", "client", "provider", "day"."""
        return self._run(calls.usage(since, until, group_by))

    def gateway_token(self, *, rotate: bool = False) -> TokenResult:
        """The gateway's bearer token for its TCP address (`rotate=True` replaces it)."""
        return self._run(calls.gateway_token(rotate))

    def subscribe_events(self, *topics: Topic) -> None:
        """Follow daemon notifications by topic ("account", "config", "ratelimits",
        "jobs"); read them with `notifications()`."""
        self._run(calls.subscribe_events(topics))
