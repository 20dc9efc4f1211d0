"""A fake OpenAI API on 127.0.0.1 with scriptable faults.

Endpoints: `POST /v1/responses`, `POST /v1/chat/completions` (streamed as SSE with the real
event sequence, or one JSON object), `POST /v1/embeddings` (deterministic unit vectors, as
numbers or base64 float32), `GET /v1/models[/{id}]`, and the ChatGPT backend's
`POST /backend-api/codex/responses` (same wire as /v1/responses),
`GET /backend-api/codex/models` (the list `list_codex_models()` sets, in Codex's catalog
format) and the plan's usage windows at `GET /backend-api/wham/usage` (`set_plan_usage()`,
`plan_usage_requests()`). Shapes follow what OpenAI's API and the ChatGPT backend send.

Control API (thread-safe): `script()` queues outcomes for the next model requests (FIFO,
optionally per path), `requests` is the request log, `stats()` the counters, `wait_for()` /
`wait_until()` block until a predicate over the counters holds.

Run it inside a task group (`base_url = await tg.start(fake.serve)`), in a background thread
(`with FakeOpenAI.running() as fake:`), or as a process
(`python -m codexd.testing.fake_openai --port N [--issuer]`, which prints its base URL first,
then the issuer's URL when asked to serve one).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import math
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.to_thread
import msgspec

from codexd.testing.fake_issuer import FakeIssuer
from codexd.testing.http import (
    HttpServer,
    Request,
    Responder,
    StatsCell,
    add_counts,
    not_found,
    serve_in_thread,
)

DEFAULT_REPLY_TEXT = "Hello from the fake upstream."
DEFAULT_MODEL = "gpt-5"
DEFAULT_MODELS = ("gpt-5", "gpt-5-codex", "gpt-5-mini", "gpt-4.1", "gpt-4o-mini")
MODEL_CREATED = 1_700_000_000

RESPONSES_PATH = "/v1/responses"
CHAT_PATH = "/v1/chat/completions"
CHATGPT_RESPONSES_PATH = "/backend-api/codex/responses"
CHATGPT_MODELS_PATH = "/backend-api/codex/models"
EMBEDDINGS_PATH = "/v1/embeddings"
MODEL_PATHS = frozenset({RESPONSES_PATH, CHAT_PATH, CHATGPT_RESPONSES_PATH, EMBEDDINGS_PATH})
PLAN_USAGE_PATH = "/backend-api/wham/usage"
FIVE_HOURS_S = 5 * 3600
ONE_WEEK_S = 7 * 86400
# Vectors of the fake's embeddings when the request sets no `dimensions` (small: tests read
# them; OpenAI's text-embedding-3-small has 1536).
DEFAULT_EMBEDDING_DIMENSIONS = 16

# Reported in x-ratelimit-* headers when no limit is enforced.
NOMINAL_RPM = 10_000
NOMINAL_TPM = 30_000_000
WINDOW_S = 60.0
DEFAULT_MAX_LOG = 10_000

# What a stream gets for "malformed data lines": not JSON, then the stream carries on.
MALFORMED_SSE = b'data: {"type": "response.output_text.delta", "delta": \n\n'

CAPTIVE_PORTAL_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to the network</title></head>"
    b"<body><h1>Welcome to Hotel WiFi</h1><p>Please accept the terms to continue.</p>"
    b"</body></html>\n"
)

_encoder = msgspec.json.Encoder()


# ---------------------------------------------------------------------------------------------
# Outcomes


@dataclass(frozen=True, slots=True)
class StreamFailure:
    """A failure reported inside a 200 stream: `response.failed` (Responses) or an `error`
    object (Chat), after `after_deltas` text deltas."""

    code: str = "server_error"
    message: str = "The server had an error processing your request. Sorry about that!"
    type: str = "server_error"
    after_deltas: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """A 200 reply, with optional faults. Counts are of SSE events written (a Responses
    stream of k deltas has k + 8 events; a Chat stream k + 3 chunks, + 1 with usage, + [DONE])."""

    text: str | None = None  # None: the server's default reply text
    deltas: tuple[str, ...] | None = None  # explicit split; overrides text
    first_byte_delay_s: float = 0.0
    delta_delay_s: float = 0.0
    drop_after: int | None = None  # close the connection after N events, no completion
    stall_after: int | None = None  # stay open and silent after N events until the client goes
    hold_after: int | None = None  # after N events, wait for FakeOpenAI.release(), then go on
    malformed_after: int | None = None  # one non-JSON `data:` line after N events, then go on
    truncated: bool = False  # last JSON cut in half (whole body when not streamed)
    failure: StreamFailure | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RawReply:
    """Any status with a fixed body (errors, captive portals)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


Outcome = Reply | RawReply


def error_body(
    message: str, type: str | None, code: str | int | None, param: str | None = None
) -> bytes:
    return _encoder.encode(
        {"error": {"message": message, "type": type, "param": param, "code": code}}
    )


def _seconds_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def rate_limited(
    *,
    retry_after: float | str | None = None,
    retry_after_ms: float | None = None,
    try_again_in: str | None = "1.5s",
    per: Literal["tokens", "requests"] = "tokens",
    model: str = DEFAULT_MODEL,
) -> RawReply:
    """429 `rate_limit_exceeded`; `try_again_in` (e.g. "1.5s", "20ms") goes into the message,
    `retry_after` (seconds, or an HTTP date as str) and `retry_after_ms` into headers."""
    if per == "tokens":
        what = "tokens per min (TPM): Limit 30000, Used 22999, Requested 12528."
    else:
        what = "requests per min (RPM): Limit 60, Used 60, Requested 1."
    hint = f" Please try again in {try_again_in}." if try_again_in else ""
    message = (
        f"Rate limit reached for {model} in organization org-fake on {what}{hint}"
        " Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    headers: list[tuple[str, str]] = [(f"x-ratelimit-remaining-{per}", "0")]
    if retry_after is not None:
        value = retry_after if isinstance(retry_after, str) else _seconds_text(retry_after)
        headers.append(("retry-after", value))
    if retry_after_ms is not None:
        headers.append(("retry-after-ms", _seconds_text(retry_after_ms)))
    return RawReply(429, error_body(message, per, "rate_limit_exceeded"), headers=tuple(headers))


def insufficient_quota() -> RawReply:
    return RawReply(
        429,
        error_body(
            "You exceeded your current quota, please check your plan and billing details. For"
            " more information on this error, read the docs:"
            " https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            "insufficient_quota",
        ),
    )


def usage_limit_reached(
    *,
    plan_type: str = "plus",
    resets_in_seconds: int = 3600,
    now: float | None = None,
    active_limit: str = "codex",
) -> RawReply:
    """The ChatGPT backend's 429: both `resets_at` and
    `resets_in_seconds`, with the x-codex-* headers of a spent primary window."""
    wall = time.time() if now is None else now
    resets_at = int(wall) + resets_in_seconds
    body = _encoder.encode(
        {
            "error": {
                "type": "usage_limit_reached",
                "message": "The usage limit has been reached",
                "plan_type": plan_type,
                "resets_at": resets_at,
                "resets_in_seconds": resets_in_seconds,
                "eligible_promo": None,
            }
        }
    )
    headers = (
        ("x-codex-active-limit", active_limit),
        ("x-codex-plan-type", plan_type),
        ("x-codex-primary-used-percent", "100"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-primary-reset-after-seconds", str(resets_in_seconds)),
        ("x-codex-primary-reset-at", str(resets_at)),
        ("x-codex-secondary-used-percent", "40"),
        ("x-codex-secondary-window-minutes", "10080"),
        ("x-codex-secondary-reset-at", str(int(wall) + 5 * 86400)),
        ("x-codex-credits-has-credits", "False"),
        ("x-codex-credits-balance", "0"),
        ("x-codex-credits-unlimited", "False"),
    )
    return RawReply(429, body, headers=headers)


def usage_not_included(*, plan_type: str = "free") -> RawReply:
    body = _encoder.encode(
        {
            "error": {
                "type": "usage_not_included",
                "message": "Codex is not included in your plan.",
                "plan_type": plan_type,
            }
        }
    )
    return RawReply(429, body)


_SERVER_ERRORS: dict[int, tuple[str, str | None, str | int | None]] = {
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "cf_bad_gateway", 502),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
    504: ("Gateway timeout.", "cf_gateway_timeout", 504),
}


def server_error(status: int = 500, *, code: str | None = None) -> RawReply:
    """A 5xx with OpenAI's body for that status; `code="server_is_overloaded"` on a 503 is the
    overload signal Codex tells apart."""
    message, type_, default_code = _SERVER_ERRORS.get(status, _SERVER_ERRORS[500])
    return RawReply(status, error_body(message, type_, code if code is not None else default_code))


def context_length_exceeded() -> RawReply:
    return RawReply(
        400,
        error_body(
            "Your input exceeds the context window of this model. Please adjust your input and"
            " try again.",
            "invalid_request_error",
            "context_length_exceeded",
            "input",
        ),
    )


def unauthorized(
    reason: Literal["invalid_api_key", "token_expired"] = "invalid_api_key",
) -> RawReply:
    if reason == "token_expired":
        body = error_body(
            "Provided authentication token is expired. Please try signing in again.",
            "invalid_request_error",
            "token_expired",
        )
    else:
        body = error_body(
            "Incorrect API key provided: sk-fake***. You can find your API key at"
            " https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
    return RawReply(401, body)


def captive_portal() -> RawReply:
    """A 200 whose body is an HTML page, as a Wi-Fi login page answers."""
    return RawReply(200, CAPTIVE_PORTAL_HTML, content_type="text/html; charset=utf-8")


def dropped(after: int) -> Reply:
    return Reply(drop_after=after)


def stalled(after: int) -> Reply:
    return Reply(stall_after=after)


def malformed(after: int) -> Reply:
    return Reply(malformed_after=after)


def truncated_json() -> Reply:
    return Reply(truncated=True)


def stream_failed(
    code: str = "server_error",
    message: str = "The server had an error processing your request. Sorry about that!",
    *,
    type: str = "server_error",
    after_deltas: int = 0,
) -> Reply:
    return Reply(failure=StreamFailure(code, message, type, after_deltas))


# ---------------------------------------------------------------------------------------------
# Deterministic text, tokens and usage


def split_deltas(text: str) -> tuple[str, ...]:
    """Word-sized deltas, each carrying its leading space: "Hello from" → ("Hello", " from")."""
    parts = tuple(re.findall(r"\s*\S+", text))
    if not parts:
        return (text,) if text else ()
    tail = text[len("".join(parts)) :]
    if tail:
        parts = (*parts[:-1], parts[-1] + tail)
    return parts


def count_tokens(text: str) -> int:
    """The fake's tokenizer: one token per four characters, rounded up."""
    return (len(text) + 3) // 4


_TEXT_KEYS = frozenset({"content", "text", "input", "output", "arguments", "instructions"})


def input_text(body: Any) -> str:
    """Every prompt string of a Responses or Chat body, in order (what input tokens count)."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key in _TEXT_KEYS:
                    walk(item)

    if isinstance(body, dict):
        for key in ("instructions", "input", "messages"):
            walk(body.get(key))
    return "\n".join(parts)


def embedding_inputs(body: Mapping[str, Any]) -> list[str | list[int]]:
    """An embeddings body's inputs, one per vector: a string, a token array, or a list of
    either."""
    inp = body.get("input")
    if isinstance(inp, str):
        return [inp]
    if isinstance(inp, list) and inp and all(isinstance(t, int) for t in inp):
        return [inp]
    return list(inp) if isinstance(inp, list) else []


def embedding_vector(item: str | list[int], dimensions: int) -> list[float]:
    """The fake's vector for one input: a function of the input alone, unit length, every
    component a float32 value (so the float and base64 encodings say the same numbers)."""
    seed = hashlib.sha256(_encoder.encode(item)).digest()
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        raw += [(b - 127.5) / 127.5 for b in digest]
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def embedding_tokens(item: str | list[int]) -> int:
    """Tokens of one input: a token array's length, else the fake's tokenizer."""
    return len(item) if isinstance(item, list) else count_tokens(item)


def embeddings_reply(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """What the fake answers to `POST /v1/embeddings` with `body`."""
    dims = body.get("dimensions")
    dimensions = dims if isinstance(dims, int) and dims > 0 else DEFAULT_EMBEDDING_DIMENSIONS
    base64_wanted = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(embedding_inputs(body)):
        vector = embedding_vector(item, dimensions)
        tokens += embedding_tokens(item)
        encoded: list[float] | str = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            if base64_wanted
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def responses(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens,
        }

    def chat(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


def usage_for(
    body: Any, reply_text: str, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> Usage:
    """The usage the fake reports for `body` answered with `reply_text`."""
    input_tokens = count_tokens(input_text(body))
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=min(cached_tokens, input_tokens),
        output_tokens=count_tokens(reply_text) + reasoning_tokens,
        reasoning_tokens=reasoning_tokens,
    )


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: "12ms", "1s", "6m0s", "2s81ms", "5h50m30ms"."""
    total_ms = max(0, math.ceil(round(seconds * 1000, 6)))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    if not hours and not minutes and not secs:
        return f"{millis}ms"
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    if secs or not millis:
        out += f"{secs}s"
    if millis:
        out += f"{millis}ms"
    return out


# ---------------------------------------------------------------------------------------------
# Rate limits


class RollingWindow:
    """Request starts and their tokens in the last 60 seconds of `now`."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def _prune(self, now: float) -> None:
        # The small tolerance keeps `now + wait_for_room(...)` past the boundary despite rounding.
        while self._entries and self._entries[0][0] <= now - WINDOW_S + 1e-9:
            _, tokens = self._entries.popleft()
            self._tokens -= tokens

    def requests(self, now: float) -> int:
        self._prune(now)
        return len(self._entries)

    def tokens(self, now: float) -> int:
        self._prune(now)
        return self._tokens

    def add(self, now: float, tokens: int) -> None:
        self._prune(now)
        self._entries.append((now, tokens))
        self._tokens += tokens

    def wait_for_room(
        self, now: float, requests_limit: int, tokens_limit: int, tokens: int
    ) -> float:
        """Seconds until one more request of `tokens` fits (0 if it fits now)."""
        self._prune(now)
        count, used = len(self._entries), self._tokens
        if count < requests_limit and used + tokens <= tokens_limit:
            return 0.0
        for start, spent in self._entries:
            count -= 1
            used -= spent
            if count < requests_limit and used + tokens <= tokens_limit:
                return max(0.0, start + WINDOW_S - now)
        return WINDOW_S  # larger than the whole token limit: it never fits

    def full_reset_in(self, now: float) -> float:
        self._prune(now)
        return self._entries[-1][0] + WINDOW_S - now if self._entries else 0.0


@dataclass(frozen=True, slots=True)
class CodexLimits:
    """The ChatGPT backend's x-codex-* headers, sent on /backend-api/ paths."""

    primary_used_percent: float = 12.0
    primary_window_minutes: int = 300
    primary_resets_in_s: int = 3600
    secondary_used_percent: float = 3.0
    secondary_window_minutes: int = 10080
    secondary_resets_in_s: int = 5 * 86400
    has_credits: bool = False
    unlimited: bool = False
    balance: str = "0"
    plan_type: str = "plus"

    def headers(self, wall_now: float) -> list[tuple[str, str]]:
        return [
            ("x-codex-plan-type", self.plan_type),
            ("x-codex-primary-used-percent", _seconds_text(self.primary_used_percent)),
            ("x-codex-primary-window-minutes", str(self.primary_window_minutes)),
            ("x-codex-primary-reset-at", str(int(wall_now) + self.primary_resets_in_s)),
            ("x-codex-primary-reset-after-seconds", str(self.primary_resets_in_s)),
            ("x-codex-secondary-used-percent", _seconds_text(self.secondary_used_percent)),
            ("x-codex-secondary-window-minutes", str(self.secondary_window_minutes)),
            ("x-codex-secondary-reset-at", str(int(wall_now) + self.secondary_resets_in_s)),
            ("x-codex-secondary-reset-after-seconds", str(self.secondary_resets_in_s)),
            ("x-codex-credits-has-credits", str(self.has_credits)),
            ("x-codex-credits-unlimited", str(self.unlimited)),
            ("x-codex-credits-balance", self.balance),
        ]


def plan_usage(
    *,
    primary_used_percent: float = 12.0,
    secondary_used_percent: float = 3.0,
    primary_resets_in_s: int = 3600,
    secondary_resets_in_s: int = 5 * 86400,
    plan_type: str = "plus",
    limit_reached: bool | None = None,
    credits: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """A `/wham/usage` body as the ChatGPT backend sends it: a 5-hour primary and a weekly
    secondary window (`reset_at` in epoch seconds), the plan and its credits."""
    wall = int(time.time() if now is None else now)
    spent = primary_used_percent >= 100 or secondary_used_percent >= 100

    def window(used: float, length_s: int, resets_in_s: int) -> dict[str, Any]:
        return {
            "used_percent": used,
            "limit_window_seconds": length_s,
            "reset_after_seconds": resets_in_s,
            "reset_at": wall + resets_in_s,
        }

    reached = spent if limit_reached is None else limit_reached
    return {
        "plan_type": plan_type,
        "rate_limit": {
            "allowed": not reached,
            "limit_reached": reached,
            "primary_window": window(primary_used_percent, FIVE_HOURS_S, primary_resets_in_s),
            "secondary_window": window(secondary_used_percent, ONE_WEEK_S, secondary_resets_in_s),
        },
        "credits": dict(credits)
        if credits is not None
        else {"has_credits": False, "unlimited": False, "balance": "0"},
    }


# ---------------------------------------------------------------------------------------------
# Log and counters


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any  # decoded JSON, or None when the body was empty or not JSON
    raw_body: bytes
    time: float  # the fake's clock (monotonic by default) when the request arrived
    status: int  # what the fake answered
    connection: int  # serial number of the TCP connection it came on (keep-alive reuses one)
    usage: Usage | None = None  # what a successful reply reports


@dataclass(frozen=True, slots=True)
class Stats:
    requests: int = 0  # every HTTP request
    model_requests: int = 0  # POSTs to the model paths
    in_flight: int = 0  # model requests being answered now
    peak_in_flight: int = 0
    completed_streams: int = 0  # SSE streams that ended with their terminal event
    completed_replies: int = 0  # non-streamed 200 replies
    disconnects: int = 0  # the client went away before the reply was complete
    dropped: int = 0  # streams the script cut off
    rate_limited: int = 0  # 429s from the enforced limits
    scripted: int = 0  # scripted outcomes consumed
    plan_usage_reads: int = 0  # GETs of the plan's usage windows (/backend-api/wham/usage)


# ---------------------------------------------------------------------------------------------
# The server


_PEAKS = {"in_flight": "peak_in_flight"}


@dataclass(slots=True)
class _Frame:
    data: bytes
    is_delta: bool = False


@dataclass(slots=True)
class _Flight:
    responder: Responder
    stream: bool = False
    completed: bool = False
    dropped: bool = False
    settled: bool = False


class FakeOpenAI:
    """The fake API. All public methods are safe to call from any thread."""

    def __init__(
        self,
        *,
        reply: Reply | None = None,
        reply_text: str = DEFAULT_REPLY_TEXT,
        models: Sequence[str] = DEFAULT_MODELS,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        api_keys: Collection[str] | None = None,
        codex_limits: CodexLimits | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        max_log: int = DEFAULT_MAX_LOG,
        issuer: FakeIssuer | None = None,
    ) -> None:
        self._default_reply = reply or Reply()
        self._reply_text = reply_text
        self._models = tuple(models)
        self._rpm_limit = rpm_limit
        self._tpm_limit = tpm_limit
        self._api_keys = frozenset(api_keys) if api_keys is not None else None
        self._codex_limits = codex_limits
        self._clock = clock
        self._server = HttpServer(self._handle, host=host, port=port)
        self._host = host
        self._issuer = issuer

        self._lock = threading.Lock()
        self._released = threading.Event()
        self._script: deque[tuple[str | None, Outcome]] = deque()
        self._log: deque[RecordedRequest] = deque(maxlen=max_log)
        self._stats = StatsCell(Stats())
        self._window = RollingWindow()
        self._ids = itertools.count(1)
        self._codex_models: tuple[Mapping[str, Any], ...] = ()
        self._plan_usage: RawReply | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server.bound_port is None:
            raise RuntimeError("the fake is not serving yet")
        return self._server.bound_port

    @property
    def origin(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base, as `base_url` of a provider: http://127.0.0.1:PORT/v1"""
        return f"{self.origin}/v1"

    @property
    def issuer(self) -> FakeIssuer:
        """The issuer served on this server (`issuer.origin` is `[codexd] auth_issuer`)."""
        if self._issuer is None:
            raise RuntimeError("this fake was made without an issuer")
        return self._issuer

    @property
    def chatgpt_base_url(self) -> str:
        """As Codex's `chatgpt_base_url`; `codex/responses` is appended to it."""
        return f"{self.origin}/backend-api/"

    # -- running --------------------------------------------------------------------------

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; `await tg.start(fake.serve)` returns `base_url`."""
        self._stats.bind_loop()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._server.serve)
                if self._issuer is not None:
                    self._issuer.mount(self.origin)
                    self._issuer.bind_loop()
                task_status.started(self.base_url)
        finally:
            self._released.set()  # no worker thread left waiting on a held stream

    @classmethod
    @contextmanager
    def running(cls, **kwargs: Any) -> Iterator[FakeOpenAI]:
        """A fake serving from a background thread with its own event loop."""
        fake = cls(**kwargs)
        with fake.serving_in_thread():
            yield fake

    @contextmanager
    def serving_in_thread(self) -> Iterator[None]:
        with serve_in_thread(self.serve, name="fake-openai"):
            yield

    # -- control --------------------------------------------------------------------------

    def list_codex_models(self, models: Iterable[Mapping[str, Any]]) -> None:
        """What `GET /backend-api/codex/models` answers from now on: `{"models": [...]}`."""
        with self._lock:
            self._codex_models = tuple(models)

    def script(self, *outcomes: Outcome, path: str | None = None, times: int = 1) -> None:
        """Queue outcomes for the next model requests, in order; `path` limits an outcome to
        requests of that path (e.g. "/v1/chat/completions"). Unscripted requests get the
        default reply."""
        with self._lock:
            for _ in range(times):
                for outcome in outcomes:
                    self._script.append((path, outcome))

    def clear_script(self) -> None:
        with self._lock:
            self._script.clear()

    def pending(self) -> int:
        """Scripted outcomes not yet consumed."""
        with self._lock:
            return len(self._script)

    def release(self) -> None:
        """Let every stream held by `Reply.hold_after` go on (and later ones pass)."""
        self._released.set()

    def set_reply(self, reply: Reply, *, text: str | None = None) -> None:
        """Change the default reply (and its text) for unscripted requests."""
        with self._lock:
            self._default_reply = reply
            if text is not None:
                self._reply_text = text

    def set_plan_usage(self, body: Mapping[str, Any] | RawReply | None) -> None:
        """What `GET /backend-api/wham/usage` answers: a body (see `plan_usage()`), any
        status and bytes (a `RawReply`: a 500, a body that is not JSON), or None for the
        default `plan_usage()` of the moment."""
        with self._lock:
            if body is None or isinstance(body, RawReply):
                self._plan_usage = body
            else:
                self._plan_usage = RawReply(200, _encoder.encode(body))

    def plan_usage_requests(self) -> list[RecordedRequest]:
        """The logged reads of the plan's usage windows (with their headers)."""
        with self._lock:
            return [r for r in self._log if r.path == PLAN_USAGE_PATH]

    @property
    def reply_text(self) -> str:
        with self._lock:
            return self._reply_text

    @property
    def requests(self) -> list[RecordedRequest]:
        """The request log, oldest first (the last `max_log` requests)."""
        with self._lock:
            return list(self._log)

    def model_requests(self, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r for r in self._log if r.path in MODEL_PATHS and (path is None or r.path == path)
            ]

    def stats(self) -> Stats:
        return self._stats.value

    def reset(self) -> None:
        """Forget the log, counters (except what is in flight), script and rate window."""
        with self._lock:
            self._log.clear()
            self._script.clear()
            self._window = RollingWindow()
        self._stats.update(lambda s: Stats(in_flight=s.in_flight, peak_in_flight=s.in_flight))

    def wait_for(self, predicate: Callable[[Stats], bool], timeout: float = 10.0) -> Stats:
        """Block (from another thread) until `predicate(stats)` holds; TimeoutError after
        `timeout` seconds."""
        return self._stats.wait_for(predicate, timeout)

    async def wait_until(self, predicate: Callable[[Stats], bool]) -> Stats:
        """Wait (in the fake's event loop) until `predicate(stats)` holds. Bound it with
        `anyio.fail_after`."""
        return await self._stats.wait_until(predicate)

    def _update(self, **changes: int) -> None:
        self._stats.update(lambda s: add_counts(s, _PEAKS, **changes))

    def _take_outcome(self, path: str) -> Outcome:
        with self._lock:
            index = next(
                (i for i, (only, _) in enumerate(self._script) if only is None or only == path),
                None,
            )
            if index is None:
                return self._default_reply
            outcome = self._script[index][1]
            del self._script[index]
        self._update(scripted=1)
        return outcome

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    async def _handle(self, request: Request, responder: Responder) -> None:
        arrived = self._clock()
        self._update(requests=1)
        if request.method == "POST" and request.path in MODEL_PATHS:
            await self._model_request(request, responder, arrived)
            return
        if request.method == "GET" and (
            request.path == "/v1/models" or request.path.startswith("/v1/models/")
        ):
            await self._models_request(request, responder, arrived)
            return
        if request.method == "GET" and request.path == CHATGPT_MODELS_PATH:
            await self._codex_models_request(request, responder, arrived)
            return
        if request.method == "GET" and request.path == PLAN_USAGE_PATH:
            await self._plan_usage_request(request, responder, arrived)
            return
        if self._issuer is not None and self._issuer.owns(request.path):
            await self._issuer.handle(request, responder)
            return
        await not_found(request, responder)
        self._log_plain(request, 404, arrived)

    def _log_plain(self, request: Request, status: int, arrived: float) -> None:
        try:
            body: Any = request.json() if request.body else None
        except msgspec.DecodeError:
            body = None
        self._append_log(request, body, status, arrived, None)

    def _append_log(
        self, request: Request, body: Any, status: int, arrived: float, usage: Usage | None
    ) -> None:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            body=body,
            raw_body=request.body,
            time=arrived,
            status=status,
            connection=request.connection,
            usage=usage,
        )
        with self._lock:
            self._log.append(record)

    async def _models_request(self, request: Request, responder: Responder, arrived: float) -> None:
        failure = self._auth_failure(request)  # with `api_keys`, as the real API: 401
        if failure is not None:
            self._append_log(request, None, failure.status, arrived, None)
            await responder.send(
                failure.status,
                failure.body,
                content_type=failure.content_type,
                headers=[("x-request-id", self._request_id())],
            )
            return
        if request.path == "/v1/models":
            payload: Any = {"object": "list", "data": [_model_object(m) for m in self._models]}
            status = 200
        else:
            model_id = request.path.removeprefix("/v1/models/")
            if model_id in self._models:
                payload, status = _model_object(model_id), 200
            else:
                status = 404
                payload = msgspec.json.decode(
                    error_body(
                        f"The model '{model_id}' does not exist or you do not have access to it.",
                        "invalid_request_error",
                        "model_not_found",
                    )
                )
        self._append_log(request, None, status, arrived, None)
        await responder.send_json(status, payload, headers=[("x-request-id", self._request_id())])

    async def _codex_models_request(
        self, request: Request, responder: Responder, arrived: float
    ) -> None:
        failure = self._auth_failure(request)
        if failure is not None:
            self._append_log(request, None, failure.status, arrived, None)
            await responder.send(failure.status, failure.body, content_type=failure.content_type)
            return
        with self._lock:
            payload = {"models": list(self._codex_models)}
        self._append_log(request, None, 200, arrived, None)
        await responder.send_json(200, payload, headers=[("x-request-id", self._request_id())])

    async def _plan_usage_request(
        self, request: Request, responder: Responder, arrived: float
    ) -> None:
        self._update(plan_usage_reads=1)
        with self._lock:
            reply = self._plan_usage
        reply = self._auth_failure(request) or reply
        if reply is None:
            reply = RawReply(200, _encoder.encode(plan_usage()))
        self._append_log(request, None, reply.status, arrived, None)
        await responder.send(
            reply.status,
            reply.body,
            content_type=reply.content_type,
            headers=[("x-request-id", self._request_id()), *reply.headers],
        )

    def _request_id(self) -> str:
        return f"req_{self._next_id():032x}"

    def _auth_failure(self, request: Request) -> RawReply | None:
        if self._issuer is not None and request.path.startswith("/backend-api/"):
            header = request.headers.get("authorization", "")
            token = header[7:].strip() if header.startswith("Bearer ") else ""
            if self._issuer.access_token_failure(token) is not None:
                return unauthorized("token_expired")
            return None
        if self._api_keys is None:
            return None
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return RawReply(
                401,
                error_body(
                    "You didn't provide an API key. You need to provide your API key in an"
                    " Authorization header using Bearer auth (i.e. Authorization: Bearer"
                    " YOUR_KEY), or as the password field (with blank username) if you're"
                    " accessing the API from your browser and are prompted for a username and"
                    " password. You can obtain an API key from"
                    " https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    None,
                ),
            )
        if header[7:].strip() not in self._api_keys:
            return unauthorized("invalid_api_key")
        return None

    def _limit_headers(self, now: float) -> list[tuple[str, str]]:
        rpm = self._rpm_limit or NOMINAL_RPM
        tpm = self._tpm_limit or NOMINAL_TPM
        with self._lock:
            used_requests = self._window.requests(now)
            used_tokens = self._window.tokens(now)
            reset = self._window.full_reset_in(now)
        return [
            ("x-ratelimit-limit-requests", str(rpm)),
            ("x-ratelimit-limit-tokens", str(tpm)),
            ("x-ratelimit-remaining-requests", str(max(0, rpm - used_requests))),
            ("x-ratelimit-remaining-tokens", str(max(0, tpm - used_tokens))),
            ("x-ratelimit-reset-requests", go_duration(reset)),
            ("x-ratelimit-reset-tokens", go_duration(reset)),
        ]

    def _admit(self, now: float, tokens: int, model: str) -> RawReply | None:
        """Count the request in the window, or answer 429 when an enforced limit is spent."""
        if self._rpm_limit is None and self._tpm_limit is None:
            with self._lock:
                self._window.add(now, tokens)
            return None
        rpm = self._rpm_limit or NOMINAL_RPM
        tpm = self._tpm_limit or NOMINAL_TPM
        with self._lock:
            used_requests = self._window.requests(now)
            used_tokens = self._window.tokens(now)
            if used_requests < rpm and used_tokens + tokens <= tpm:
                self._window.add(now, tokens)
                return None
            wait = self._window.wait_for_room(now, rpm, tpm, tokens)
        self._update(rate_limited=1)
        per: Literal["tokens", "requests"] = "requests" if used_requests >= rpm else "tokens"
        if per == "requests":
            what = f"requests per min (RPM): Limit {rpm}, Used {used_requests}, Requested 1."
        else:
            what = f"tokens per min (TPM): Limit {tpm}, Used {used_tokens}, Requested {tokens}."
        message = (
            f"Rate limit reached for {model} in organization org-fake on {what}"
            f" Please try again in {go_duration(wait)}."
            " Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        return RawReply(
            429,
            error_body(message, per, "rate_limit_exceeded"),
            headers=(
                ("retry-after", str(max(1, math.ceil(wait)))),
                ("retry-after-ms", str(math.ceil(wait * 1000))),
            ),
        )

    async def _model_request(self, request: Request, responder: Responder, arrived: float) -> None:
        flight = _Flight(responder)
        self._update(model_requests=1, in_flight=1)
        try:
            await self._answer_model_request(request, responder, arrived, flight)
        finally:
            self._settle(flight)

    def _settle(self, flight: _Flight) -> None:
        """Count the end of a model request. Called before the last byte goes out, so a client
        that has read a whole reply finds the counters already updated."""
        if flight.settled:
            return
        flight.settled = True
        changes = {"in_flight": -1}
        if flight.dropped:
            changes["dropped"] = 1
        elif flight.responder.client_gone and not flight.responder.finished:
            changes["disconnects"] = 1
        elif flight.completed:
            changes["completed_streams" if flight.stream else "completed_replies"] = 1
        self._update(**changes)

    async def _answer_model_request(
        self, request: Request, responder: Responder, arrived: float, flight: _Flight
    ) -> None:
        try:
            body: Any = request.json()
        except msgspec.DecodeError:
            body = None
        if not isinstance(body, dict):
            self._append_log(request, None, 400, arrived, None)
            await responder.send(
                400,
                error_body(
                    "We could not parse the JSON body of your request. (HINT: This likely means"
                    " you aren't using your HTTP library correctly. The OpenAI API expects a"
                    " JSON payload, but what was sent was not valid JSON.)",
                    "invalid_request_error",
                    None,
                ),
            )
            return
        chatgpt = request.path.startswith("/backend-api/")
        wire: Literal["responses", "chat"] = "chat" if request.path == CHAT_PATH else "responses"
        model = body.get("model") if isinstance(body.get("model"), str) else DEFAULT_MODEL
        assert isinstance(model, str)
        request_id = self._request_id()
        base_headers = [("x-request-id", request_id), ("openai-processing-ms", "1")]

        embeddings = request.path == EMBEDDINGS_PATH
        with self._lock:
            reply_text = "" if embeddings else self._reply_text
        # Admission comes before the script, so a 429 from the enforced limits does not eat a
        # scripted outcome; its token estimate assumes the default reply.
        failure = self._auth_failure(request) or self._admit(
            self._clock(), count_tokens(input_text(body)) + count_tokens(reply_text), model
        )
        usage: Usage | None = None
        outcome: Outcome
        if failure is not None:
            outcome = failure
        else:
            outcome = self._take_outcome(request.path)
            if isinstance(outcome, Reply):
                text = _reply_text(outcome, reply_text)
                usage = usage_for(
                    body,
                    text,
                    cached_tokens=outcome.cached_tokens,
                    reasoning_tokens=outcome.reasoning_tokens,
                )

        headers = list(base_headers)
        if not chatgpt:
            headers += self._limit_headers(self._clock())
        elif self._codex_limits is not None:
            headers += self._codex_limits.headers(time.time())

        if isinstance(outcome, RawReply):
            self._append_log(request, body, outcome.status, arrived, None)
            if outcome.delay_s:
                await anyio.sleep(outcome.delay_s)
            flight.completed = outcome.status == 200
            self._settle(flight)
            await responder.send(
                outcome.status,
                outcome.body,
                content_type=outcome.content_type,
                headers=_merge(outcome.headers, headers),
            )
            return

        assert usage is not None
        reply = outcome
        if embeddings:
            await self._send_embeddings(request, reply, body, model, arrived, headers, flight)
            return
        deltas = reply.deltas if reply.deltas is not None else split_deltas(text)
        stream = body.get("stream") is True
        flight.stream = stream
        self._append_log(request, body, 200, arrived, usage)
        headers = _merge(reply.headers, headers)
        ident = self._next_id()

        if reply.first_byte_delay_s:
            await anyio.sleep(reply.first_byte_delay_s)
        if not stream:
            await self._send_whole(
                responder, reply, wire, ident, model, body, deltas, usage, headers, flight
            )
            return
        if wire == "chat":
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            frames = _chat_frames(ident, model, deltas, usage, reply, include_usage)
        else:
            frames = _responses_frames(ident, model, body, deltas, usage, reply)
        await self._stream(responder, reply, frames, headers, flight)

    async def _send_embeddings(
        self,
        request: Request,
        reply: Reply,
        body: dict[str, Any],
        model: str,
        arrived: float,
        headers: list[tuple[str, str]],
        flight: _Flight,
    ) -> None:
        """One JSON reply (embeddings are never streamed); of `reply`'s faults it honours
        `first_byte_delay_s`, `drop_after` (any value: no reply at all), `stall_after` (any
        value: silence until the client goes) and `truncated`."""
        if not embedding_inputs(body):
            self._append_log(request, body, 400, arrived, None)
            self._settle(flight)
            message = "'$.input' is invalid. Please check the API reference."
            error = error_body(message, "invalid_request_error", None, "input")
            await flight.responder.send(400, error, headers=headers)
            return
        payload = embeddings_reply(body, model)
        tokens = payload["usage"]["prompt_tokens"]
        self._append_log(request, body, 200, arrived, Usage(tokens, 0, 0, 0))
        if reply.first_byte_delay_s:
            await anyio.sleep(reply.first_byte_delay_s)
        if reply.drop_after is not None:
            await self._drop(flight.responder, flight)
            return
        if reply.stall_after is not None:
            await anyio.sleep_forever()
        data = _encoder.encode(payload)
        if reply.truncated:
            data = data[: len(data) // 2]
        flight.completed = not reply.truncated
        self._settle(flight)
        await flight.responder.send(200, data, headers=_merge(reply.headers, headers))

    async def _send_whole(
        self,
        responder: Responder,
        reply: Reply,
        wire: Literal["responses", "chat"],
        ident: int,
        model: str,
        body: dict[str, Any],
        deltas: Sequence[str],
        usage: Usage,
        headers: list[tuple[str, str]],
        flight: _Flight,
    ) -> None:
        if reply.drop_after is not None:
            flight.dropped = True
            self._settle(flight)
            await responder.abort()
            return
        if reply.stall_after is not None:
            await anyio.sleep_forever()
        text = "".join(deltas)
        if reply.failure is not None:
            failure = reply.failure
            self._settle(flight)
            await responder.send(
                500, error_body(failure.message, failure.type, failure.code), headers=headers
            )
            return
        if wire == "chat":
            payload = _chat_completion(ident, model, text, usage)
        else:
            payload = _response_object(ident, model, body, "completed", text, usage)
        data = _encoder.encode(payload)
        if reply.truncated:
            data = data[: len(data) // 2]
        flight.completed = True
        self._settle(flight)
        await responder.send(200, data, headers=headers)

    async def _stream(
        self,
        responder: Responder,
        reply: Reply,
        frames: list[_Frame],
        headers: list[tuple[str, str]],
        flight: _Flight,
    ) -> None:
        await responder.start(
            200,
            [
                ("content-type", "text/event-stream; charset=utf-8"),
                ("cache-control", "no-cache"),
                *headers,
            ],
        )
        last = len(frames) - 1
        for sent, frame in enumerate(frames):
            if reply.drop_after is not None and sent >= reply.drop_after:
                await self._drop(responder, flight)
                return
            if reply.stall_after is not None and sent >= reply.stall_after:
                await anyio.sleep_forever()
            if reply.malformed_after is not None and sent == reply.malformed_after:
                await responder.write(MALFORMED_SSE)
            if reply.hold_after is not None and sent == reply.hold_after:
                await anyio.to_thread.run_sync(self._released.wait, abandon_on_cancel=True)
            if frame.is_delta and reply.delta_delay_s:
                await anyio.sleep(reply.delta_delay_s)
            if sent == last:
                break
            await responder.write(frame.data)
        # The last event, and what follows it.
        if reply.drop_after is not None or reply.stall_after is not None:
            await responder.write(frames[last].data)
            if reply.drop_after is not None:
                await self._drop(responder, flight)
                return
            await anyio.sleep_forever()
        flight.completed = reply.failure is None and not reply.truncated
        self._settle(flight)
        await responder.write(frames[last].data)
        await responder.finish()

    async def _drop(self, responder: Responder, flight: _Flight) -> None:
        flight.dropped = True
        self._settle(flight)
        await responder.abort()


def _merge(
    first: Iterable[tuple[str, str]], then: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Headers of `first`, then those of `then` whose names `first` does not set."""
    merged = list(first)
    seen = {name.lower() for name, _ in merged}
    merged += [(name, value) for name, value in then if name.lower() not in seen]
    return merged


def _reply_text(reply: Reply, default: str) -> str:
    if reply.deltas is not None:
        return "".join(reply.deltas)
    return default if reply.text is None else reply.text


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "openai"}


# ---------------------------------------------------------------------------------------------
# Wire shapes


def _sse(event: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"


def _response_object(
    ident: int,
    model: str,
    body: Mapping[str, Any],
    status: str,
    text: str | None,
    usage: Usage | None,
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    output = [] if text is None else [_message_item(ident, "completed", text)]
    return {
        "id": f"resp_{ident:032x}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": error,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage.responses() if usage is not None else None,
        "user": None,
        "metadata": {},
    }


def _message_item(ident: int, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {
        "id": f"msg_{ident:032x}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _responses_frames(
    ident: int,
    model: str,
    body: Mapping[str, Any],
    deltas: Sequence[str],
    usage: Usage,
    reply: Reply,
) -> list[_Frame]:
    item_id = f"msg_{ident:032x}"
    sequence = itertools.count()
    frames: list[_Frame] = []

    def add(event: str, *, is_delta: bool = False, **fields: Any) -> None:
        payload = {"type": event, "sequence_number": next(sequence), **fields}
        frames.append(_Frame(_sse(event, payload), is_delta))

    add(
        "response.created", response=_response_object(ident, model, body, "in_progress", None, None)
    )
    add(
        "response.in_progress",
        response=_response_object(ident, model, body, "in_progress", None, None),
    )
    add(
        "response.output_item.added",
        output_index=0,
        item=_message_item(ident, "in_progress", None),
    )
    text_part: dict[str, Any] = {"item_id": item_id, "output_index": 0, "content_index": 0}
    add(
        "response.content_part.added",
        **text_part,
        part={"type": "output_text", "text": "", "annotations": []},
    )
    failure = reply.failure
    for index, delta in enumerate(deltas):
        if failure is not None and index >= failure.after_deltas:
            break
        add("response.output_text.delta", is_delta=True, **text_part, delta=delta, logprobs=[])
    if failure is not None:
        error = {"code": failure.code, "message": failure.message}
        add(
            "response.failed",
            response=_response_object(ident, model, body, "failed", None, None, error),
        )
        return frames
    text = "".join(deltas)
    add("response.output_text.done", **text_part, text=text, logprobs=[])
    add(
        "response.content_part.done",
        **text_part,
        part={"type": "output_text", "text": text, "annotations": []},
    )
    add("response.output_item.done", output_index=0, item=_message_item(ident, "completed", text))
    add(
        "response.completed",
        response=_response_object(ident, model, body, "completed", text, usage),
    )
    if reply.truncated:
        frames[-1] = _Frame(_truncate_sse(frames[-1].data))
    return frames


def _truncate_sse(frame: bytes) -> bytes:
    head, _, data = frame.partition(b"data: ")
    payload = data.rstrip(b"\n")
    return head + b"data: " + payload[: len(payload) // 2] + b"\n\n"


def _chat_completion(ident: int, model: str, text: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{ident:029x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage.chat(),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _chat_frames(
    ident: int, model: str, deltas: Sequence[str], usage: Usage, reply: Reply, include_usage: bool
) -> list[_Frame]:
    created = int(time.time())
    frames: list[_Frame] = []

    def chunk(
        choices: list[dict[str, Any]], usage_value: Any = None, is_delta: bool = False
    ) -> None:
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{ident:029x}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if include_usage:
            payload["usage"] = usage_value
        frames.append(_Frame(b"data: " + _encoder.encode(payload) + b"\n\n", is_delta))

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    chunk([choice({"role": "assistant", "content": "", "refusal": None})])
    failure = reply.failure
    for index, delta in enumerate(deltas):
        if failure is not None and index >= failure.after_deltas:
            break
        chunk([choice({"content": delta})], is_delta=True)
    if failure is not None:
        error = error_body(failure.message, failure.type, failure.code)
        frames.append(_Frame(b"data: " + error + b"\n\n"))
        return frames
    chunk([choice({}, "stop")])
    if include_usage:
        chunk([], usage.chat())
    if reply.truncated:
        frames[-1] = _Frame(_truncate_sse(frames[-1].data))
        return frames
    frames.append(_Frame(b"data: [DONE]\n\n"))
    return frames


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m codexd.testing.fake_openai",
        description="Serve the fake OpenAI API on loopback until killed; prints its base URL.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", default=DEFAULT_REPLY_TEXT, help="the reply text")
    parser.add_argument("--delta-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-byte-delay-ms", type=float, default=0.0)
    parser.add_argument("--rpm", type=int, default=None, help="enforce requests per minute")
    parser.add_argument("--tpm", type=int, default=None, help="enforce tokens per minute")
    parser.add_argument("--api-key", action="append", default=None, help="accept only these keys")
    parser.add_argument(
        "--issuer",
        action="store_true",
        help="also serve the fake OAuth issuer; its URL is printed on the second line",
    )
    args = parser.parse_args(argv)

    fake = FakeOpenAI(
        reply=Reply(
            delta_delay_s=args.delta_delay_ms / 1000,
            first_byte_delay_s=args.first_byte_delay_ms / 1000,
        ),
        reply_text=args.reply,
        rpm_limit=args.rpm,
        tpm_limit=args.tpm,
        api_keys=args.api_key,
        host=args.host,
        port=args.port,
        issuer=FakeIssuer() if args.issuer else None,
    )

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            base_url = await tg.start(fake.serve)
            print(base_url, flush=True)
            if args.issuer:
                print(fake.issuer.origin, flush=True)

    try:
        anyio.run(run)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
