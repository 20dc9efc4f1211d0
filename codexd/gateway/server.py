"""The gateway: OpenAI's HTTP API on `gateway.sock` and, optionally, loopback TCP.

Each model request becomes a job through the same pipeline as `job/submit`
(`JobService.submit` in service/submit.py: same checks, config defaults, budget and ledger),
owned by the request and cancelled when its HTTP client goes away (`JobService.release`).
The reply is read from the job's event log and translated (`translate.py`) into what the
OpenAI API would have sent. The Unix socket admits the daemon's own uid (and root), as the
control socket does; TCP admits requests carrying the bearer token of `gateway.token`.
listeners.py accepts the connections (and starts, stops and moves the listeners on reload).

Connections are counted in two pools. The owner's (gateway.sock, and a TCP connection once a
head on it carried the token) share `[codexd] max_connections`. TCP connections that have not
shown the token yet are counted apart, up to `max_unauthenticated_connections`: one more
closes the oldest of them, so strangers holding sockets open can neither fill the owner's
pool nor keep the owner's next TCP connection out. Every head is checked for the token as
soon as it is whole; a wrong one gets 401 before its body is read.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import msgspec

from codexctl.protocol import RpcError
from codexd.config.schema import CodexdSettings
from codexd.gateway.http import (
    SOCKET_ERRORS,
    HeadCheck,
    Refusal,
    Request,
    Responder,
    serve_http,
)
from codexd.gateway.translate import (
    ChatJSON,
    ChatSSE,
    EmbeddingsJSON,
    HttpError,
    ResponsesJSON,
    ResponsesSSE,
    Translator,
    bad_body,
    error_reply,
    gateway_loop,
    invalid_api_key,
    model_not_found,
    model_object,
    models_list,
    not_found_url,
    openai_error,
)
from codexd.gateway.websocket import is_websocket_request, serve_websocket
from codexd.hop import is_own_hop
from codexd.security.peer import admit
from codexd.service import InvalidSubmit, Services, SubmitRequest

if TYPE_CHECKING:
    from codexd.jobs import Job, JobManager, LogEntry

log = logging.getLogger("codexd.gateway")

MAX_CLIENT_NAME: Final = 64
DEFAULT_CLIENT_NAME: Final = "gateway"
_CLIENT_NAME_JUNK: Final = re.compile(r"[^A-Za-z0-9._+-]")
_MODEL_PATH: Final = "/v1/models/"
_API_BY_PATH: Final = {
    "/v1/responses": "responses",
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
}

_encoder = msgspec.json.Encoder()


def client_name(headers: dict[str, str] | Any) -> str:
    """`X-Codexd-Client`, else the `User-Agent` product token (`OpenAI/Python 3.x` → OpenAI)."""
    name = headers.get("x-codexd-client", "").strip()
    if not name:
        agent = headers.get("user-agent", "").strip()
        name = agent.split(None, 1)[0].split("/", 1)[0] if agent else ""
    name = _CLIENT_NAME_JUNK.sub("", name)[:MAX_CLIENT_NAME]
    return name or DEFAULT_CLIENT_NAME


def submit_request(headers: Mapping[str, str], body: dict[str, Any], api: str) -> SubmitRequest:
    """What a model request asks for: its body, the client and provider/profile headers.
    The gateway has no client_request_id of its own (a retried HTTP request is a new job)."""
    return SubmitRequest(
        body=body,
        client=client_name(headers),
        api="chat" if api == "chat" else "embeddings" if api == "embeddings" else "responses",
        provider=headers.get("x-codexd-provider") or None,
        profile=headers.get("x-codexd-profile") or None,
        cancel_on_disconnect=True,
    )


# The headers that carry `SubmitRequest` members (see `submit_request`).
_HEADER_OF: Final = {"provider": "X-Codexd-Provider", "profile": "X-Codexd-Profile"}


def submit_error(err: InvalidSubmit, headers: Mapping[str, str]) -> HttpError:
    """A refused submission in HTTP words: the header or body member at fault (as OpenAI's
    `param`), never the control socket's params names."""
    hint = f" {err.hint}" if err.hint else ""
    header = _HEADER_OF.get(err.member)
    if header is not None:
        where = f"in {header}" if headers.get(header.lower()) else "(from codexd's config)"
        message, param = f"{err.plain} {where}{hint}", None
    else:
        message, param = f"{err.plain}{hint}", err.member.removeprefix("body.")
    body = openai_error(message, "invalid_request_error", None, param)
    return HttpError(400, _encoder.encode(body), (("x-should-retry", "false"),))


def parse_tcp_address(address: str) -> tuple[str, int]:
    """`127.0.0.1:8765`, `[::1]:8765`, `localhost:8765` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class _Relay:
    """One request's reply, written from its job's log.

    It subscribes to the job: each event is translated as the job emits it, and the bytes
    of a batch (what one read from upstream brought) are written when the job's runner
    ends the batch, in the job's own task, when the socket takes them without waiting. So
    a job's events cost no task switch and a batch one write. The request's task is woken
    only for what needs an await: bytes the socket did not take, an error reply, a whole
    non-streamed body, the end. While that task writes, events stay in the log and it reads
    them itself, so nothing is buffered beyond one batch and a slow client is never dropped
    by the fan-out.
    """

    __slots__ = (
        "busy",
        "closed",
        "cursor",
        "event",
        "failure",
        "job",
        "out",
        "request_id",
        "responder",
        "tr",
    )

    def __init__(self, job: Job, tr: Translator, responder: Responder) -> None:
        self.job = job
        self.tr = tr
        self.responder = responder
        self.request_id = ("x-request-id", job.id)
        self.closed = False
        self.event = anyio.Event()
        self.cursor = 0  # the last seq translated
        self.out: list[bytes] = []  # translated, not yet written
        self.busy = False  # the request's task is writing: it reads the log itself next
        self.failure: Exception | None = None  # raised in the job's task, re-raised here

    def translate(self) -> None:
        tr, log, out = self.tr, self.job.log, self.out
        while self.cursor + 1 < log.next_seq and not tr.done:
            self.cursor += 1
            entry = log.entry_at(self.cursor)
            if entry is None:
                out.append(tr.overflow())
                break
            data = tr.feed(entry.event)
            if data:
                out.append(data)

    def write(self) -> None:
        """Write a streamed reply's translated bytes without waiting (what the socket does
        not take waits in the responder)."""
        tr, responder = self.tr, self.responder
        if not tr.stream or tr.error is not None or responder.finished:
            return
        out = self.out
        data = (out[0] if len(out) == 1 else b"".join(out)) if out else b""
        out.clear()
        if data or tr.done:
            if not responder.started:
                responder.start(200, _stream_headers(self.request_id))
            responder.write_nowait(data, last=tr.done)

    def _wake_if_needed(self) -> None:
        tr = self.tr
        if tr.done or tr.error is not None or self.failure is not None or self.responder.unsent:
            self.event.set()

    async def run(self, jobs: JobManager) -> None:
        """Read the job's log from seq 1 as it grows and write the translation."""
        job, tr, responder = self.job, self.tr, self.responder
        await jobs.stream_to(job, self, job.log.next_seq - 1)
        job.batch_ends.append(self.end_batch)
        try:
            while True:
                self.event = anyio.Event()
                self.translate()
                self.write()
                if self.failure is not None:
                    raise self.failure
                if tr.error is not None:
                    await _send_error(responder, tr.error, self.request_id)
                    return
                if not tr.stream:
                    if tr.done:
                        await responder.send(200, tr.body(), headers=[self.request_id])
                        return
                elif tr.done or responder.unsent:
                    self.busy = True
                    await responder.flush()
                    self.busy = False
                    if tr.done:
                        return
                if self.cursor + 1 < job.log.next_seq:
                    continue
                await self.event.wait()
        finally:
            job.batch_ends.remove(self.end_batch)
            jobs.unsubscribe(job, self)

    def end_batch(self) -> None:
        self._in_job_task(self.write)

    def _deliver_one(self) -> None:
        self.translate()
        if self.tr.done:  # a terminal event ends no batch: written now
            self.write()

    def _in_job_task(self, step: Callable[[], None]) -> None:
        """Run `step` from the job's own task, whose failure must not reach that task (it
        serves the job's other subscribers): it is kept, and `run`, in the request's task,
        raises it there. The HTTP shell then logs it with its traceback and answers 500
        (`internal_error`) when nothing was sent yet; ClientGone ends the request quietly."""
        if self.busy or self.failure is not None:
            return
        try:
            step()
        except Exception as exc:  # raised again by `run`, logged and answered there
            self.failure = exc
        self._wake_if_needed()

    # -- what a job needs of a subscriber
    def deliver(self, entry: LogEntry) -> bool:
        self._in_job_task(self._deliver_one)
        return True

    def send_nowait(self, line: bytes) -> bool:
        self.event.set()
        return True

    async def send(self, line: bytes) -> None:
        self.event.set()

    def notify(self, method: str, params: Any) -> bool:
        return True

    def defer(self, line: bytes) -> None:
        self.event.set()


class _TcpPeer:
    """One TCP connection: unauthenticated until a head on it carries the token."""

    __slots__ = ("authenticated", "scope")

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        self.authenticated = False


class Served:
    """One accepted connection as its listener sees it: `close_when_idle` closes it now when
    no request is being answered, else once the response is whole."""

    __slots__ = ("busy", "closing", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.busy = False
        self.closing = False

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy:
            self.scope.cancel()


class Gateway:
    """Requests on the gateway's connections (listeners.py accepts them)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        # While the config has the gateway off (only a gateway.sock passed in by a service
        # manager is still served then): every request gets `gateway_off`.
        self.off = True
        self.tokens = services.tokens
        # The owner's connections: gateway.sock, and TCP ones that showed the token.
        self.connections = 0
        # TCP connections that have not shown the token yet, oldest first.
        self.unauthenticated: dict[_TcpPeer, None] = {}
        unauthorized = invalid_api_key()
        self._unauthorized = Refusal(unauthorized.status, unauthorized.body, unauthorized.headers)

    # ---------------------------------------------------------------- connections

    async def connection(
        self, stream: anyio.abc.SocketStream, tcp: bool, served: Served | None = None
    ) -> None:
        """Serve one accepted connection (listeners.py accepts them)."""
        served = served or Served()
        async with stream:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            settings = self.services.config.snapshot.codexd
            if tcp:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._tcp_connection(stream, settings, served)
                return
            if admit(raw, "gateway", log) is None:
                return
            if self.connections >= settings.max_connections:
                await _send_overloaded(stream, settings.max_connections)
                return
            self.connections += 1
            try:
                await self._serve_http(stream, settings, None, served)
            finally:
                self.connections -= 1

    async def _tcp_connection(
        self, stream: anyio.abc.SocketStream, settings: CodexdSettings, served: Served
    ) -> None:
        with anyio.CancelScope() as scope:
            peer = _TcpPeer(scope)
            waiting = self.unauthenticated
            while len(waiting) >= settings.gateway.max_unauthenticated_connections:
                oldest = next(iter(waiting))
                del waiting[oldest]
                oldest.scope.cancel()
            waiting[peer] = None

            def check_head(headers: Mapping[str, str]) -> Refusal | None:
                try:
                    return self._check_tcp_head(peer, headers, settings.max_connections)
                except Exception:  # the token file could not be read: a 500, as before
                    log.exception("gateway: checking the token failed")
                    return Refusal(500, _INTERNAL_ERROR_BODY)

            try:
                await self._serve_http(stream, settings, check_head, served)
            finally:
                waiting.pop(peer, None)
                if peer.authenticated:
                    self.connections -= 1

    def _check_tcp_head(
        self, peer: _TcpPeer, headers: Mapping[str, str], limit: int
    ) -> Refusal | None:
        """Every head on TCP must carry the token; the first that does moves its connection
        into the owner's pool (or gets 503 when that pool is full)."""
        if not self.tokens.matches(headers.get("authorization")):
            return self._unauthorized
        if not peer.authenticated:
            self.unauthenticated.pop(peer, None)
            if self.connections >= limit:
                return Refusal(503, _overloaded_body(limit))
            self.connections += 1
            peer.authenticated = True
        return None

    async def _serve_http(
        self,
        stream: anyio.abc.SocketStream,
        settings: CodexdSettings,
        check_head: HeadCheck | None,
        served: Served,
    ) -> None:
        async def handler(request: Request, responder: Responder) -> None:
            served.busy = True
            try:
                await self.handle(request, responder, served)
            finally:
                served.busy = False
                if served.closing:  # its listener stopped: no next request on it
                    served.scope.cancel()

        try:
            await serve_http(
                stream,
                handler,
                on_error=_internal_error,
                head_timeout=settings.gateway.head_timeout_s,
                idle_timeout=settings.gateway.idle_timeout_s,
                check_head=check_head,
            )
        except SOCKET_ERRORS:
            pass

    # ---------------------------------------------------------------- routing

    async def handle(
        self, request: Request, responder: Responder, served: Served | None = None
    ) -> None:
        """Route one request (on TCP its head already carried the token)."""
        if self.off:
            await _send_error(responder, gateway_off(self.services.config.path))
            return
        if is_own_hop(request.headers):
            await _send_error(responder, gateway_loop())
            return
        method, path = request.method, request.path.rstrip("/")
        api = _API_BY_PATH.get(path)
        if api is not None and method == "POST":
            await self.model_request(request, responder, api)
        elif api == "responses" and is_websocket_request(request):
            # The Responses WebSocket (websocket.py): each turn through `model_request`.
            await serve_websocket(
                request,
                responder,
                self.model_request,
                client=client_name(request.headers),
                idle_timeout=self.services.config.snapshot.codexd.gateway.idle_timeout_s,
                served=served,
            )
        elif path == "/v1/models" and method == "GET":
            await responder.send(200, models_list(self._model_ids()))
        elif path.startswith(_MODEL_PATH) and method == "GET":
            model = path[len(_MODEL_PATH) :]
            if model in self._model_ids():
                await responder.send(200, _encoder.encode(model_object(model)))
            else:
                await _send_error(responder, model_not_found(model))
        else:
            await _send_error(responder, not_found_url(method, request.path))

    def _model_ids(self) -> list[str]:
        return [m.slug for m in self.services.catalogs.catalog().list_models()]

    # ---------------------------------------------------------------- model requests

    async def model_request(self, request: Request, responder: Responder, api: str) -> None:
        try:
            body = msgspec.json.decode(request.body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            # Not JSON, not UTF-8 (msgspec ≥ 0.23 says DecodeError, older releases
            # UnicodeDecodeError) or nested deeper than the decoder goes: all one bad body.
            await _send_error(
                responder,
                bad_body(
                    "We could not parse the JSON body of your request. The OpenAI API expects "
                    "a JSON payload: send the request body as JSON."
                ),
            )
            return
        if not isinstance(body, dict):
            await _send_error(responder, bad_body("The request body must be a JSON object."))
            return
        jobs = self.services.jobs
        owner = object()  # this request: its job ends with it
        try:
            job = await jobs.submit(submit_request(request.headers, body, api), owner=owner)
        except InvalidSubmit as err:
            await _send_error(responder, submit_error(err, request.headers))
            return
        except RpcError as err:
            await _send_error(responder, error_reply(err.to_object()))
            return
        try:
            await self._relay(job, _translator(job, api, body), responder)
        finally:
            jobs.release(owner)

    async def _relay(self, job: Job, tr: Translator, responder: Responder) -> None:
        await _Relay(job, tr, responder).run(self.services.jobs.manager)


def _translator(job: Job, api: str, body: dict[str, Any]) -> Translator:
    if api == "embeddings":
        return EmbeddingsJSON()
    stream = body.get("stream") is True
    if api == "responses":
        return ResponsesSSE() if stream else ResponsesJSON()
    completion_id = "chatcmpl-" + job.id.removeprefix("job_")
    created = int(job.created_at)
    if stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return ChatSSE(
            completion_id=completion_id,
            model=job.model,
            created=created,
            include_usage=include_usage,
        )
    return ChatJSON(completion_id=completion_id, model=job.model, created=created)


def _stream_headers(request_id: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        request_id,
    ]


async def _send_error(responder: Responder, error: HttpError, *extra: tuple[str, str]) -> None:
    await responder.send(error.status, error.body, headers=[*error.headers, *extra])


_INTERNAL_ERROR_BODY: Final = _encoder.encode(
    openai_error(
        "The codexd gateway had an internal error: the daemon log has the details.",
        "server_error",
    )
)


async def _internal_error(responder: Responder) -> None:
    await responder.send(500, _INTERNAL_ERROR_BODY)


def gateway_off(config_path: str) -> HttpError:
    """The answer on a gateway.sock passed in by a service manager while the config has the
    gateway off."""
    body = openai_error(
        f"the codexd gateway is off: set [codexd.gateway] enabled = true in {config_path} "
        "(it applies on reload)",
        "server_error",
        "gateway_off",
    )
    return HttpError(503, _encoder.encode(body), (("x-should-retry", "false"),))


def _overloaded_body(limit: int) -> bytes:
    return _encoder.encode(
        openai_error(
            f"codexd has too many connections ({limit}): close idle clients or raise "
            "[codexd] max_connections",
            "server_error",
            "overloaded",
        )
    )


async def _send_overloaded(stream: anyio.abc.ByteStream, limit: int) -> None:
    body = _overloaded_body(limit)
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    try:
        await stream.send(head + body)
    except SOCKET_ERRORS:
        pass
