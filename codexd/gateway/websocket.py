"""The Responses API over a WebSocket: `GET /v1/responses` with `Upgrade: websocket`.

What Codex CLI speaks to a provider with `supports_websockets = true` (and OpenAI's own
"WebSocket mode"). The client sends one JSON text message per turn, `{"type":
"response.create", …a Responses body…}`; the server answers with the same events a streamed
`POST /v1/responses` carries, one JSON object per text message, until `response.completed`
(or `response.failed`, or an `error` message). Turns follow each other on one connection.

Each `response.create` is answered by the gateway's POST route itself (`model_request`): the
same job, budget, retries and ledger row, owned by the turn and cancelled when the socket
closes. Only the framing differs: the route's Server-Sent Events are re-framed here as text
messages (`sse_events`), so the translation of job events lives in one place
(translate.ResponsesSSE).

Three things exist only on this transport:

- `previous_response_id` continues the connection's last response: the client sends only
  the new input items. Upstream is plain HTTP, so the gateway keeps the last response's full
  input and output (`Conversation`) and sends upstream the whole history, as an HTTP client
  would have. An id the connection does not hold goes upstream unchanged.
- `"generate": false` (Codex's warm-up) prepares that state without generating: it is
  answered here (`response.created`, `response.completed` with no output), and no job is made
  and nothing goes upstream.
- A message the gateway cannot take gets an `error` message in the shape Codex reads
  (`{"type": "error", "status", "error": {type, code, message, param}}`) and the connection
  stays open; a job's error before any output is the same message with the HTTP status the
  POST route would have answered.

Bounds: a message (and a turn's whole history) up to the gateway's body bound
(http.MAX_BODY_BYTES), and so is an event of the route's stream that one write leaves
unfinished (`SSEBlocks`; past it the turn ends with an `event_too_large` error message);
`MAX_QUEUED_MESSAGES` turns waiting behind the one being answered; a connection with no turn
for `[codexd.gateway] idle_timeout_s` is closed (1000), as an idle kept-alive HTTP connection
is. permessage-deflate is declined: on a local socket it costs CPU
and saves nothing, and inflating unbounded input is a memory hazard. When the gateway stops
(drain, shutdown, its listener moved away) a connection is closed with 1001 once its turn is
over.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from codexd.gateway.http import MAX_BODY_BYTES, SOCKET_ERRORS, Request, Responder
from codexd.gateway.translate import HttpError, openai_error
from codexd.netio import DirectWriter

log = logging.getLogger("codexd.gateway")

READ_CHUNK: Final = 65536
# `response.create` messages read while a turn is being answered, waiting their turn.
MAX_QUEUED_MESSAGES: Final = 8
# How long a closing handshake may take before the socket is closed regardless.
CLOSE_TIMEOUT_S: Final = 2.0
WEBSOCKET_VERSION: Final = "13"

# Close codes (RFC 6455 §7.4.1).
NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
ABNORMAL_CLOSURE: Final = 1006  # never sent: the log's word for a client gone without one
MESSAGE_TOO_BIG: Final = 1009

_encoder = msgspec.json.Encoder()


# --------------------------------------------------------------------------- handshake


def is_websocket_request(request: Request) -> bool:
    """`GET` asking for a WebSocket (the route then belongs to `serve_websocket`)."""
    return request.method == "GET" and request.headers.get("upgrade", "").lower() == "websocket"


def _handshake_error(status: int, message: str, *headers: tuple[str, str]) -> HttpError:
    body = _encoder.encode(openai_error(message, "invalid_request_error"))
    return HttpError(status, body, headers)


def accept(request: Request) -> list[tuple[str, str]] | HttpError:
    """The 101 response's headers for a WebSocket handshake, or the HTTP error that refuses
    it (naming the header at fault)."""
    if request.upgrade is None:
        return _handshake_error(
            400, "A WebSocket handshake needs `Connection: Upgrade` beside `Upgrade: websocket`."
        )
    version = request.headers.get("sec-websocket-version", "").strip()
    if version != WEBSOCKET_VERSION:
        return _handshake_error(
            426,
            f"Sec-WebSocket-Version {version or '(missing)'} is not supported: "
            f"send Sec-WebSocket-Version: {WEBSOCKET_VERSION}.",
            ("sec-websocket-version", WEBSOCKET_VERSION),
        )
    key = request.headers.get("sec-websocket-key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        return _handshake_error(
            400, "Sec-WebSocket-Key must be 16 random bytes in base64 (RFC 6455 §4.1)."
        )
    return [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", generate_accept_token(key.encode("ascii")).decode("ascii")),
    ]


# --------------------------------------------------------------------------- client messages


@dataclass(frozen=True, slots=True)
class Create:
    """`response.create`: a Responses body for a job (`stream` forced on)."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Warmup:
    """`response.create` with `"generate": false`: prepare the state, generate nothing."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Processed:
    """`response.processed`: the client acknowledges a response; nothing is answered."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A message the gateway cannot take: the `error` message that answers it."""

    event: bytes


ClientMessage = Create | Warmup | Processed | Refused

# Members of `response.create` that belong to the transport, not to the Responses body.
_TRANSPORT_MEMBERS: Final = frozenset({"type", "generate"})


def error_event(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """An `error` message as OpenAI's WebSocket sends it (and Codex reads it: a non-2xx
    `status` ends the turn with that HTTP error)."""
    error = openai_error(message, type_, code, param)["error"]
    return _encoder.encode({"type": "error", "status": status, "error": error})


def http_error_event(status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    """The POST route's HTTP error (status, OpenAI body, headers) as an `error` message."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        decoded = None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if not isinstance(error, dict):
        error = openai_error(body.decode("utf-8", "replace"), "server_error")["error"]
    event: dict[str, Any] = {"type": "error", "status": status, "error": error}
    if headers:
        event["headers"] = dict(headers)
    return _encoder.encode(event)


def read_message(text: str) -> ClientMessage:
    """One text message from the client."""
    try:
        message = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        return Refused(
            error_event(
                400,
                f"The WebSocket message is not valid JSON ({exc}): send each "
                '`{"type": "response.create", …}` as one JSON text message.',
                code="invalid_json",
            )
        )
    if not isinstance(message, dict):
        return Refused(
            error_event(400, "The WebSocket message must be a JSON object.", code="invalid_json")
        )
    kind = message.get("type")
    if kind == "response.create":
        generate = message.get("generate", True)
        if not isinstance(generate, bool):
            return Refused(
                error_event(
                    400,
                    f"Invalid type for 'generate': expected a boolean, got {generate!r}.",
                    code="invalid_type",
                    param="generate",
                )
            )
        body = {k: v for k, v in message.items() if k not in _TRANSPORT_MEMBERS}
        body["stream"] = True  # answered as events: always streamed
        return Create(body) if generate else Warmup(body)
    if kind == "response.processed":
        return Processed()
    if kind is None:
        return Refused(
            error_event(
                400,
                "Missing required parameter: 'type': send "
                '`{"type": "response.create", …}` with a Responses body.',
                code="missing_required_parameter",
                param="type",
            )
        )
    return Refused(
        error_event(
            400,
            f"Invalid value for 'type': {kind!r} is not supported here; send "
            "'response.create'.",
            code="invalid_value",
            param="type",
        )
    )


# --------------------------------------------------------------------------- conversation


def _as_items(value: Any) -> list[Any] | None:
    """A Responses `input` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return value
    return None


class Conversation:
    """The connection's last response, which `previous_response_id` may continue: its whole
    input and its output items (only the last one is kept, as OpenAI keeps it)."""

    __slots__ = ("_history", "last_id")

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._history: list[Any] = []

    def expand(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body with the history put back in front of its input when it continues the
        last response; else as it came (upstream answers for ids it may hold)."""
        previous = body.get("previous_response_id")
        if previous is None or previous != self.last_id:
            return body
        new = _as_items(body.get("input", []))
        if new is None:
            return body  # upstream names what is wrong with `input`
        expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
        expanded["input"] = [*self._history, *new]
        return expanded

    def forget(self) -> None:
        self.last_id = None
        self._history = []

    def remember(self, response_id: str, body: dict[str, Any], output: list[Any]) -> None:
        """A response completed: `body` is what was asked (expanded), `output` its items."""
        items = _as_items(body.get("input", []))
        self.last_id = response_id
        self._history = [*(items or []), *output]


class ResponseTracker:
    """What a turn's events say about its response: its id and output items, once
    `response.completed` has come (`completed`)."""

    __slots__ = ("_items", "completed", "output", "response_id")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self.completed = False
        self.response_id: str | None = None
        self.output: list[Any] = []

    def observe(self, etype: bytes, payload: bytes) -> None:
        if etype == b"response.output_item.done":
            item = _decode_member(payload, "item")
            if item is not None:
                self._items.append(item)
        elif etype == b"response.completed":
            response = _decode_member(payload, "response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                output = response.get("output")
                self.response_id = response["id"]
                self.output = output if isinstance(output, list) and output else self._items
                self.completed = True


def _decode_member(payload: bytes, name: str) -> Any:
    try:
        event = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    return event.get(name) if isinstance(event, dict) else None


class EventTooLarge(Exception):
    """A block of the POST route's stream grew past the message bound without ending."""


class SSEBlocks:
    """The POST route's SSE output, written in pieces of any size, back as whole
    `event:`/`data:` blocks: a block begun in one write waits for its end in the next ones,
    up to `max_block` bytes (past it: EventTooLarge, and the reframer stays failed). The
    search for a block's end resumes where the last one stopped, so a block dripped in small
    writes costs O(n)."""

    __slots__ = ("_buffer", "_failed", "_max", "_searched")

    def __init__(self, max_block: int) -> None:
        self._buffer = bytearray()
        self._max = max_block
        self._searched = 0
        self._failed = False

    @property
    def pending(self) -> int:
        """Bytes of a block begun and not yet ended."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        if self._failed:
            raise EventTooLarge(f"an event of the reply was over {self._max} bytes")
        buffer = self._buffer
        buffer += data
        end = buffer.rfind(b"\n\n", max(self._searched - 1, 0))
        whole = b""
        if end >= 0:
            whole = bytes(buffer[: end + 2])
            del buffer[: end + 2]
        self._searched = len(buffer)
        if len(buffer) > self._max:
            self._failed = True
            buffer.clear()
            raise EventTooLarge(f"an event of the reply is over {self._max} bytes")
        return sse_events(whole) if whole else []


def sse_events(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, JSON) of each whole `event:`/`data:` block the POST route streams."""
    out: list[tuple[bytes, bytes]] = []
    for block in data.split(b"\n\n"):
        if not block:
            continue
        head, sep, payload = block.partition(b"\ndata: ")
        if not sep:
            head, payload = b"", block.removeprefix(b"data: ")
        out.append((head.removeprefix(b"event: "), payload))
    return out


def warmup_events(response_id: str, body: Mapping[str, Any]) -> list[bytes]:
    """The answer to a warm-up: a response that was created and completed with no output."""
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "status": "in_progress",
        "model": body.get("model"),
        "output": [],
        "usage": None,
    }
    created = {"type": "response.created", "sequence_number": 0, "response": response}
    done = {**response, "status": "completed"}
    completed = {"type": "response.completed", "sequence_number": 1, "response": done}
    return [_encoder.encode(created), _encoder.encode(completed)]


def too_large_event(what: str) -> bytes:
    return error_event(
        400,
        f"The {what} is over {MAX_BODY_BYTES} bytes: start a new conversation without "
        "`previous_response_id`, or send less input.",
        code="request_too_large",
    )


# --------------------------------------------------------------------------- the shell


ModelRequest = Callable[[Request, Responder, str], Awaitable[None]]


class Served(Protocol):
    """The listener's view of the connection (server.Served)."""

    busy: bool
    closing: bool


async def serve_websocket(
    request: Request,
    responder: Responder,
    model_request: ModelRequest,
    *,
    client: str,
    idle_timeout: float,
    served: Served | None,
) -> None:
    """Answer the handshake and serve the connection's turns until it closes; `client` is
    the name its jobs are recorded under (for the log)."""
    accepted = accept(request)
    if isinstance(accepted, HttpError):
        await responder.send(accepted.status, accepted.body, headers=accepted.headers)
        return
    stream = await responder.switch_protocols(accepted)
    session = _Session(stream, request, model_request, client, idle_timeout, served)
    await session.run()


class _TurnResponder(Responder):
    """Where the POST route writes one turn's reply: its SSE events become text messages,
    and an HTTP error an `error` message."""

    __slots__ = ("_held", "blocks", "job_id", "scope", "session", "tracker")

    def __init__(self, session: _Session) -> None:
        super().__init__(session.stream)
        self.session = session
        self.tracker = ResponseTracker()
        self.blocks = SSEBlocks(MAX_BODY_BYTES)
        self.job_id: str | None = None
        self.scope = anyio.CancelScope()  # the turn: cancelled when its stream cannot go on
        self._held: list[bytes] = []

    def _note(self, headers: Sequence[tuple[str, str]]) -> None:
        for name, value in headers:
            if name == "x-request-id":
                self.job_id = value

    def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        self.started = True
        self.status = status
        self._note(headers)

    async def write(self, data: bytes) -> None:
        try:
            blocks = self.blocks.feed(data)
        except EventTooLarge as exc:
            log.warning("gateway: WebSocket turn %s ended: %s", self.job_id, exc)
            message = error_event(
                500,
                f"An event of this response is over {MAX_BODY_BYTES} bytes, more than one "
                "WebSocket message carries here: ask for less output in one response, or use "
                "POST /v1/responses.",
                type_="server_error",
                code="event_too_large",
            )
            await self.session.send_messages([message])
            self.scope.cancel()  # the turn ends (and its job with it); the connection lives
            return
        messages = []
        for etype, payload in blocks:
            self.tracker.observe(etype, payload)
            messages.append(payload)
        await self.session.send_messages(messages)

    def write_nowait(self, data: bytes, *, last: bool = False) -> None:
        """The relay writes from the job's own task, without awaiting; a WebSocket message
        cannot be sent that way, so the bytes wait for `flush` (which the relay's task runs
        as soon as `unsent` says there is something)."""
        if last:
            self.finished = True
        if data:
            self._held.append(data)

    @property
    def unsent(self) -> bool:
        return bool(self._held)

    async def flush(self) -> None:
        held, self._held = b"".join(self._held), []
        if held:
            await self.write(held)
        if self.finished:
            self._check_whole()

    async def finish(self, data: bytes = b"") -> None:
        self.finished = True
        await self.flush()
        await self.write(data)
        self._check_whole()

    def _check_whole(self) -> None:
        if self.blocks.pending:
            log.warning(
                "gateway: WebSocket turn %s ended inside an event: %d byte(s) not sent",
                self.job_id,
                self.blocks.pending,
            )

    async def send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.started = self.finished = True
        self.status = status
        self._note(headers)
        extra = [(n, v) for n, v in headers if n != "x-request-id"]
        event = http_error_event(status, body, extra) if status >= 400 else body
        await self.session.send_messages([event])


class _Session:
    """One upgraded connection: a reader task (frames, pings, close) and the turns, one at
    a time, in the connection's own task."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        request: Request,
        model_request: ModelRequest,
        client: str,
        idle_timeout: float,
        served: Served | None,
    ) -> None:
        self.stream = stream
        self.request = request
        self.model_request = model_request
        self.idle_timeout = idle_timeout
        self.served = served
        self.ws = Connection(ConnectionType.SERVER)
        self._direct = DirectWriter(stream) if isinstance(stream, anyio.abc.SocketStream) else None
        self._lock = anyio.Lock()
        self.conversation = Conversation()
        self.client = client
        self.responses = 0
        self.warmups = 0
        self.gone = False
        self.client_done = False
        self.turn: _TurnResponder | None = None  # the turn being answered
        self._scope: anyio.CancelScope | None = None  # the connection's task group
        # How the server ends the connection unless the client closed it first.
        self.close_code = GOING_AWAY
        self.close_reason = "codexd's gateway is stopping"

    # -- writing

    async def _send(self, data: bytes) -> None:
        if self.gone or not data:
            return
        async with self._lock:
            try:
                if self._direct is not None:
                    await self._direct.send(data)
                else:
                    await self.stream.send(data)
            except SOCKET_ERRORS:  # the client is gone: so is the connection
                self.gone = True
                if self._scope is not None:
                    self._client_done(self._scope)

    async def send_messages(self, messages: Sequence[bytes]) -> None:
        if self.ws.state is not ConnectionState.OPEN:
            return
        await self._send(
            b"".join(self.ws.send(TextMessage(data=m.decode("utf-8"))) for m in messages if m)
        )

    async def _close(self) -> None:
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            await self._send(
                self.ws.send(CloseConnection(code=self.close_code, reason=self.close_reason))
            )

    # -- the connection

    async def run(self) -> None:
        log.info("gateway: WebSocket /v1/responses opened by %s", self.client)
        send, receive = anyio.create_memory_object_stream[Create | Warmup](MAX_QUEUED_MESSAGES)
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._read, tg.cancel_scope, send)
                await self._turns(receive)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S):
                await self._close()
            log.info(
                "gateway: WebSocket /v1/responses from %s closed (%s) after %d response(s) "
                "and %d warm-up(s)",
                self.client,
                int(self.close_code),
                self.responses,
                self.warmups,
            )

    async def _read(
        self, scope: anyio.CancelScope, send: MemoryObjectSendStream[Create | Warmup]
    ) -> None:
        """Read frames until the client closes or goes away, then end the connection
        (which cancels the turn being answered, and so its job)."""
        data = self.request.upgrade or b""
        parts: list[str] = []
        size = 0
        binary = False
        with send:
            while True:
                if data:
                    self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage | BytesMessage):
                        binary = binary or isinstance(event, BytesMessage)
                        size += len(event.data)
                        if size > MAX_BODY_BYTES:
                            await self.send_messages([too_large_event("WebSocket message")])
                            self.close_code, self.close_reason = MESSAGE_TOO_BIG, "too big"
                            scope.cancel()
                            return
                        if isinstance(event, TextMessage):
                            parts.append(event.data)
                        if not event.message_finished:
                            continue
                        text = "".join(parts)
                        parts, size, was_binary, binary = [], 0, binary, False
                        await self._take(send, text, was_binary)
                    elif isinstance(event, Ping):
                        await self._send(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            # The client closes: answer its close frame with its code.
                            self.close_code, self.close_reason = event.code, event.reason or ""
                        else:  # a protocol error wsproto found: close with its code
                            self.close_code, self.close_reason = event.code, "protocol error"
                        self._client_done(scope)
                        return
                if self.gone:
                    self._client_done(scope)
                    return
                try:
                    data = await self.stream.receive(READ_CHUNK)
                except SOCKET_ERRORS:
                    data = b""
                if not data:  # gone without a close frame
                    self.gone = True
                    self.close_code, self.close_reason = ABNORMAL_CLOSURE, "connection lost"
                    self._client_done(scope)
                    return

    def _client_done(self, scope: anyio.CancelScope) -> None:
        """The client closed or went away: no further turn, and the one being answered is
        cancelled (with its job) unless its response is complete; then only the job's own
        end (its ledger row) is awaited, so a client that closes right after
        `response.completed`, as Codex does, leaves a completed job."""
        self.client_done = True
        if self.turn is None or not self.turn.tracker.completed:
            scope.cancel()

    async def _take(
        self,
        send: MemoryObjectSendStream[Create | Warmup],
        text: str,
        binary: bool,
    ) -> None:
        if binary:
            refused = error_event(
                400,
                "Binary WebSocket messages are not supported: send JSON as text messages.",
                code="invalid_json",
            )
            await self.send_messages([refused])
            return
        message = read_message(text)
        if isinstance(message, Refused):
            await self.send_messages([message.event])
        elif isinstance(message, Create | Warmup):
            try:
                send.send_nowait(message)
            except anyio.WouldBlock:
                await self.send_messages(
                    [
                        error_event(
                            400,
                            f"Over {MAX_QUEUED_MESSAGES} response.create messages are waiting "
                            "on this WebSocket: wait for each response before sending the next.",
                            code="response_already_in_flight",
                        )
                    ]
                )

    async def _turns(self, receive: MemoryObjectReceiveStream[Create | Warmup]) -> None:
        """Answer the queued messages one at a time; stop when the connection is idle too
        long or its listener is stopping."""
        served = self.served
        with receive:
            while True:
                if self.client_done:
                    return
                if served is not None:
                    if served.closing:
                        return
                    served.busy = False  # idle: a stopping listener may close it now
                message: Create | Warmup | None = None
                with anyio.move_on_after(self.idle_timeout):
                    try:
                        message = await receive.receive()
                    except anyio.EndOfStream:
                        return
                if message is None:
                    self.close_code, self.close_reason = NORMAL_CLOSURE, "idle"
                    return
                if served is not None:
                    served.busy = True
                await self._answer(message)

    async def _answer(self, message: Create | Warmup) -> None:
        conversation = self.conversation
        body = conversation.expand(message.body)
        conversation.forget()
        if isinstance(message, Warmup):
            response_id = "resp_" + secrets.token_hex(16)
            conversation.remember(response_id, body, [])
            self.warmups += 1
            await self.send_messages(warmup_events(response_id, body))
            return
        encoded = _encoder.encode(body)
        if len(encoded) > MAX_BODY_BYTES:
            await self.send_messages([too_large_event("conversation")])
            return
        turn = self.turn = _TurnResponder(self)
        post = Request("POST", "/v1/responses", self.request.headers, encoded)
        try:
            with turn.scope:
                await self.model_request(post, turn, "responses")
        finally:
            self.turn = None
        self.responses += 1
        log.debug("gateway: WebSocket response.create answered by %s", turn.job_id)
        tracker = turn.tracker
        if tracker.completed and tracker.response_id is not None:
            conversation.remember(tracker.response_id, body, tracker.output)
