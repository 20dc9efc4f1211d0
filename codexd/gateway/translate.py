"""Job events → what the OpenAI API would have sent. Pure: typed events in, bytes out.

A gateway request is a job; its reply is rebuilt from the job's event log:

- Responses, streamed: the upstream events themselves as SSE (`event: TYPE` / `data: JSON`),
  the job's own `job.*` events left out.
- Responses, not streamed: the `response` object of `response.completed`.
- Chat, streamed: `chat.completion.chunk` data lines rebuilt from the text deltas, the
  function calls and `job.completed`'s usage, then `data: [DONE]`.
- Chat, not streamed: one `chat.completion` object.
- Embeddings (never streamed): the provider's `list` object of `embeddings.result`, as it came.

Errors use OpenAI's bodies and status codes (`error_reply`). A stream has two phases: until
the first byte goes out every failure can still be an HTTP status and a daemon retry is
invisible; after it, a failure or a retry ends the stream in-stream (`response.failed`, or a
`data: {"error": …}` line), as OpenAI does, and never replays output twice.

`response.created` and `response.in_progress` are held back until the first event that
carries output, so a retry between them and the first output is still invisible.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from codexctl.protocol import (
    ErrorData,
    ErrorKind,
    ErrorObject,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRetrying,
    Usage,
)
from codexctl.results import EMBEDDINGS_RESULT
from codexd.hop import LOOP_CODE, LOOP_MESSAGE
from codexd.jobs import JobEvent, UpstreamEvent

_encoder = msgspec.json.Encoder()

# Held until output starts (see the module docstring).
_PREAMBLE: Final = frozenset({"response.created", "response.in_progress"})
_FINAL_RESPONSE: Final = frozenset({"response.completed", "response.incomplete"})

RETRY_AFTER_OUTPUT_MESSAGE: Final = (
    "The upstream stream was interrupted after output had started; codexd would have retried, "
    "but the output already sent cannot be taken back: send the request again."
)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def openai_error(
    message: str, type_: str | None, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def invalid_api_key() -> HttpError:
    """OpenAI's 401 for a missing or wrong key (the gateway's TCP token rule)."""
    return HttpError(
        401,
        _encoder.encode(
            openai_error(
                "Incorrect API key provided. The codexd gateway on TCP needs "
                "`Authorization: Bearer <token>`; `codexctl gateway token` prints the token.",
                "invalid_request_error",
                "invalid_api_key",
            )
        ),
    )


def not_found_url(method: str, path: str) -> HttpError:
    return HttpError(
        404,
        _encoder.encode(openai_error(f"Invalid URL ({method} {path})", "invalid_request_error")),
    )


def model_not_found(model: str) -> HttpError:
    return HttpError(
        404,
        _encoder.encode(
            openai_error(
                f"The model '{model}' does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        ),
    )


def bad_body(message: str, status: int = 400) -> HttpError:
    return HttpError(status, _encoder.encode(openai_error(message, "invalid_request_error")))


def gateway_loop() -> HttpError:
    """A request codexd itself sent upstream came back to its gateway (codexd/hop.py)."""
    return HttpError(
        400, _encoder.encode(openai_error(LOOP_MESSAGE, "invalid_request_error", LOOP_CODE))
    )


_PARAM_AT: Final = re.compile(r"at `\$\.body\.([A-Za-z0-9_]+)")

# kind → (status, type, code when upstream gave none, may the SDK retry it)
_ERRORS: Final[Mapping[str, tuple[int, str, str | None, bool]]] = {
    ErrorKind.INVALID_PARAMS: (400, "invalid_request_error", None, False),
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error", None, False),
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error", None, False),
    ErrorKind.CONTEXT_LENGTH_EXCEEDED: (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        False,
    ),
    ErrorKind.UNAUTHENTICATED: (401, "invalid_request_error", "unauthenticated", False),
    ErrorKind.AUTH_EXPIRED: (401, "invalid_request_error", "token_expired", False),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", None, False),
    ErrorKind.RATE_LIMITED: (429, "requests", "rate_limit_exceeded", True),
    ErrorKind.QUOTA_EXCEEDED: (429, "insufficient_quota", "insufficient_quota", False),
    ErrorKind.USAGE_LIMIT_REACHED: (429, "usage_limit_reached", "usage_limit_reached", False),
    ErrorKind.BUDGET_EXCEEDED: (429, "insufficient_quota", "budget_exceeded", False),
    ErrorKind.UPSTREAM_ERROR: (502, "server_error", None, False),
    ErrorKind.STREAM_ERROR: (502, "server_error", "stream_error", False),
    ErrorKind.OVERLOADED: (503, "server_error", "overloaded", True),
    ErrorKind.CANCELLED: (503, "server_error", "cancelled", False),
}


def error_reply(error: ErrorObject) -> HttpError:
    """The status, OpenAI body and headers for a codexd error (by its kind).

    The daemon has already retried what it retries, so errors it gave up on carry
    `x-should-retry: false` (the SDK honours it); a rate limit keeps its Retry-After so the
    SDK can wait as it would for OpenAI."""
    data = error.data or ErrorData(kind=ErrorKind.INTERNAL_ERROR.value, retryable=False)
    status, type_, default_code, retry = _ERRORS.get(data.kind, (500, "server_error", None, False))
    upstream = data.http_status
    if data.kind == ErrorKind.BAD_REQUEST and upstream is not None and 400 <= upstream < 500:
        status = upstream if upstream not in (401, 429) else 400
    elif data.kind == ErrorKind.UPSTREAM_ERROR and upstream is not None and upstream >= 500:
        status = upstream
    code = data.upstream_code or default_code
    match = _PARAM_AT.search(error.message)
    body = openai_error(error.message, type_, code, match.group(1) if match else None)
    headers: list[tuple[str, str]] = []
    if data.retry_after_s is not None and data.retry_after_s >= 0:
        headers.append(("retry-after", str(math.ceil(data.retry_after_s))))
        headers.append(("retry-after-ms", str(math.ceil(data.retry_after_s * 1000))))
    if not retry:
        headers.append(("x-should-retry", "false"))
    if data.request_id:
        headers.append(("x-upstream-request-id", data.request_id))
    return HttpError(status, _encoder.encode(body), tuple(headers))


# --------------------------------------------------------------------------- job events


def _stream_interrupted() -> ErrorObject:
    return ErrorObject(
        code=-32033,
        message=RETRY_AFTER_OUTPUT_MESSAGE,
        data=ErrorData(kind=ErrorKind.STREAM_ERROR.value, retryable=True),
    )


class Translator:
    """Fed the job's events in order; `feed` returns bytes for the body now.

    `error` is set when the reply must be an HTTP error instead (only while nothing was
    sent); `done` when the reply is whole. Non-streamed translators keep everything for
    `body()`."""

    stream: bool = True

    def __init__(self) -> None:
        self.sent = False
        self.done = False
        self.error: HttpError | None = None

    def feed(self, event: JobEvent) -> bytes:
        if self.done:
            return b""
        if isinstance(event, UpstreamEvent):
            return self._upstream(event)
        if isinstance(event, JobFailed):
            return self._fail(event.error)
        if isinstance(event, JobCancelled):
            return self._fail(
                ErrorObject(
                    code=-32041,
                    message="codexd cancelled the request (it is shutting down): send it again",
                    data=ErrorData(kind=ErrorKind.CANCELLED.value, retryable=False),
                )
            )
        if isinstance(event, JobRetrying):
            if self.sent:
                return self._fail(_stream_interrupted())
            self._reset()
            return b""
        if isinstance(event, JobCompleted):
            out = self._completed(event)
            self.done = True
            return out
        return b""  # job.queued, job.started

    def overflow(self) -> bytes:
        """The job's bounded log dropped events we had not read yet."""
        return self._fail(
            ErrorObject(
                code=-32033,
                message="the client read the stream too slowly and codexd's job log moved past "
                "it: send the request again",
                data=ErrorData(kind=ErrorKind.STREAM_ERROR.value, retryable=True),
            )
        )

    def _fail(self, error: ErrorObject) -> bytes:
        self.done = True
        if not self.sent:
            self.error = error_reply(error)
            return b""
        return self._in_stream_failure(error)

    def _mark(self, data: bytes) -> bytes:
        if data:
            self.sent = True
        return data

    # -- for subclasses
    def _reset(self) -> None:
        pass

    def _upstream(self, event: UpstreamEvent) -> bytes:
        return b""

    def _completed(self, done: JobCompleted) -> bytes:
        return b""

    def _in_stream_failure(self, error: ErrorObject) -> bytes:
        return b""

    def body(self) -> bytes:
        raise NotImplementedError


def sse(etype: str, raw: bytes) -> bytes:
    return b"event: " + etype.encode() + b"\ndata: " + raw + b"\n\n"


class ResponsesSSE(Translator):
    def __init__(self) -> None:
        super().__init__()
        self._held: list[bytes] = []
        self._response: dict[str, Any] | None = None
        self._last_seq = -1

    def _reset(self) -> None:
        self._held.clear()
        self._response = None
        self._last_seq = -1

    def _upstream(self, event: UpstreamEvent) -> bytes:
        if event.sequence_number is not None:
            self._last_seq = event.sequence_number
        frame = sse(event.type, event.raw)
        if event.type in _PREAMBLE:
            response = event.data.get("response")
            if isinstance(response, dict):
                self._response = response
            if not self.sent:
                self._held.append(frame)
                return b""
        if self._held:
            frame = b"".join(self._held) + frame
            self._held.clear()
        return self._mark(frame)

    def _completed(self, done: JobCompleted) -> bytes:
        # response.completed went out already; a provider that never sent output still
        # gets its held preamble.
        out = b"".join(self._held)
        self._held.clear()
        return self._mark(out)

    def _in_stream_failure(self, error: ErrorObject) -> bytes:
        response = dict(self._response or {"id": "resp_codexd", "object": "response"})
        response["status"] = "failed"
        data = error.data
        code = (data.upstream_code if data else None) or "server_error"
        response["error"] = {"code": code, "message": error.message}
        seq = self._last_seq + 1
        event = {"type": "response.failed", "sequence_number": seq, "response": response}
        return sse("response.failed", _encoder.encode(event))


class ResponsesJSON(Translator):
    stream = False

    def __init__(self) -> None:
        super().__init__()
        self._final: dict[str, Any] | None = None
        self._done_event: JobCompleted | None = None

    def _reset(self) -> None:
        self._final = None

    def _upstream(self, event: UpstreamEvent) -> bytes:
        if event.type in _FINAL_RESPONSE:
            response = event.data.get("response")
            if isinstance(response, dict):
                self._final = response
        return b""

    def _completed(self, done: JobCompleted) -> bytes:
        self._done_event = done
        return b""

    def body(self) -> bytes:
        if self._final is not None:
            return _encoder.encode(self._final)
        done = self._done_event or _NOTHING
        return _encoder.encode(
            {
                "id": done.response_id or "resp_codexd",
                "object": "response",
                "status": "completed",
                "output": [_message_item(done.output_text)] if done.output_text else [],
                "usage": _responses_usage(done.usage),
            }
        )


def _message_item(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


_NOTHING: Final = JobCompleted(output_text="", usage=Usage(), cost_usd=0.0, response_id=None)


def _responses_usage(u: Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens, "cache_write_tokens": 0},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def chat_usage(u: Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def _tool_call(item: Mapping[str, Any], index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": item.get("call_id") or item.get("id") or "",
        "type": "function",
        "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")},
    }
    if index is not None:
        call = {"index": index, **call}
    return call


class _ChatBase(Translator):
    def __init__(self, *, completion_id: str, model: str, created: int) -> None:
        super().__init__()
        self.completion_id = completion_id
        self.model = model
        self.created = created
        self._calls: list[dict[str, Any]] = []

    def _reset(self) -> None:
        self._calls.clear()

    def _finish_reason(self) -> str:
        return "tool_calls" if self._calls else "stop"


class ChatSSE(_ChatBase):
    def __init__(
        self, *, completion_id: str, model: str, created: int, include_usage: bool
    ) -> None:
        super().__init__(completion_id=completion_id, model=model, created=created)
        self.include_usage = include_usage
        self._prefix = (
            b'{"id":'
            + _encoder.encode(completion_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + _encoder.encode(model)
            + b',"system_fingerprint":null,"choices":'
        )
        self._suffix = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def _chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return b"data: " + self._prefix + _encoder.encode([choice]) + self._suffix

    def _first(self) -> bytes:
        if self.sent:
            return b""
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def _upstream(self, event: UpstreamEvent) -> bytes:
        if event.type == "response.output_text.delta":
            delta = event.delta
            if not delta:
                return b""
            return self._mark(self._first() + self._chunk({"content": delta}))
        if event.type == "response.output_item.done":
            item = event.data.get("item")
            if not isinstance(item, dict) or item.get("type") != "function_call":
                return b""
            index = len(self._calls)
            self._calls.append(item)
            calls = {"tool_calls": [_tool_call(item, index)]}
            return self._mark(self._first() + self._chunk(calls))
        return b""

    def _completed(self, done: JobCompleted) -> bytes:
        out = self._first() + self._chunk({}, self._finish_reason())
        if self.include_usage:
            usage = _encoder.encode(chat_usage(done.usage))
            out += b"data: " + self._prefix + b"[]" + b',"usage":' + usage + b"}\n\n"
        return self._mark(out + b"data: [DONE]\n\n")

    def _in_stream_failure(self, error: ErrorObject) -> bytes:
        reply = error_reply(error)
        return b"data: " + reply.body + b"\n\n"


class ChatJSON(_ChatBase):
    stream = False

    def __init__(self, *, completion_id: str, model: str, created: int) -> None:
        super().__init__(completion_id=completion_id, model=model, created=created)
        self._done_event: JobCompleted | None = None

    def _upstream(self, event: UpstreamEvent) -> bytes:
        if event.type == "response.output_item.done":
            item = event.data.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                self._calls.append(item)
        return b""

    def _completed(self, done: JobCompleted) -> bytes:
        self._done_event = done
        return b""

    def body(self) -> bytes:
        done = self._done_event or _NOTHING
        message: dict[str, Any] = {
            "role": "assistant",
            "content": done.output_text or (None if self._calls else ""),
            "refusal": None,
            "annotations": [],
        }
        if self._calls:
            message["tool_calls"] = [_tool_call(c) for c in self._calls]
        return _encoder.encode(
            {
                "id": done.response_id or self.completion_id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": self._finish_reason(),
                    }
                ],
                "usage": chat_usage(done.usage),
                "system_fingerprint": None,
            }
        )


class EmbeddingsJSON(Translator):
    """The provider's embeddings reply as it came (base64 vectors stay base64, for the SDKs
    that decode them): `embeddings.result` without the `type` the job added."""

    stream = False

    def __init__(self) -> None:
        super().__init__()
        self._reply: bytes | None = None

    def _reset(self) -> None:
        self._reply = None

    def _upstream(self, event: UpstreamEvent) -> bytes:
        if event.type == EMBEDDINGS_RESULT:
            raw = event.raw
            if raw.startswith(_EMBEDDINGS_TYPE_MEMBER):  # the usual case: no decoding
                # One copy of what may be megabytes of vectors, not two.
                self._reply = b"".join((b"{", memoryview(raw)[len(_EMBEDDINGS_TYPE_MEMBER) :]))
            else:
                data = event.data
                data.pop("type", None)
                self._reply = _encoder.encode(data)
        return b""

    def body(self) -> bytes:
        if self._reply is None:
            return _encoder.encode({"object": "list", "data": [], "model": "", "usage": None})
        return self._reply


_EMBEDDINGS_TYPE_MEMBER: Final = b'{"type":' + _encoder.encode(EMBEDDINGS_RESULT) + b","


# --------------------------------------------------------------------------- models


def model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "codexd"}


def models_list(ids: list[str]) -> bytes:
    return _encoder.encode({"object": "list", "data": [model_object(i) for i in ids]})
