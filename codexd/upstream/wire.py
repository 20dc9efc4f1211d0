"""What both wire APIs share: request bodies from a job's body plus config defaults, the
endpoint URL, normalised usage, the result of a finished stream, and the normaliser base.

`job/submit`: fill what the body leaves out, force `stream: true` (and
`stream_options.include_usage` on Chat), pass through every member we do not know.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal
from urllib.parse import urlencode

import msgspec

from codexctl.protocol import Usage
from codexd.jobs import UpstreamEvent
from codexd.security.scrub import GENERIC, Scrubber
from codexd.upstream.errors import UpstreamError, stream_ended_early, stream_malformed
from codexd.upstream.sse import SSEEvent

Api = Literal["responses", "chat", "embeddings"]
API_PATHS: Final[Mapping[str, str]] = {
    "responses": "responses",
    "chat": "chat/completions",
    "embeddings": "embeddings",
}

# Responses has no frequency/presence penalties: sending them is a 400 `unknown_parameter`.
RESPONSES_MODEL_PARAMS: Final = ("temperature", "top_p")
CHAT_MODEL_PARAMS: Final = ("temperature", "top_p", "frequency_penalty", "presence_penalty")


class RequestDefaults(msgspec.Struct, frozen=True, kw_only=True):
    """What config supplies for a request (built by the config layer from the snapshot).

    `model` is already resolved (config, profile, else the catalog's default). A
    `reasoning_summary` of "none" means: ask for no summary (Codex's meaning).
    `model_params` are `[model_params]`: temperature, top_p, frequency_penalty,
    presence_penalty, max_tokens.
    """

    model: str
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None
    verbosity: str | None = None
    model_params: dict[str, float | int] = msgspec.field(default_factory=dict)


def _sub_object(out: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A copy of `out[key]` to fill in, or None when the body set it to something else
    (an explicit `"reasoning": null` is the caller's choice and is kept)."""
    if key not in out:
        return {}
    value = out[key]
    return dict(value) if isinstance(value, Mapping) else None


def build_responses_body(body: Mapping[str, Any], defaults: RequestDefaults) -> dict[str, Any]:
    out = dict(body)
    if out.get("model") is None:
        out["model"] = defaults.model
    summary = defaults.reasoning_summary if defaults.reasoning_summary != "none" else None
    if defaults.reasoning_effort is not None or summary is not None:
        reasoning = _sub_object(out, "reasoning")
        if reasoning is not None:
            if defaults.reasoning_effort is not None:
                reasoning.setdefault("effort", defaults.reasoning_effort)
            if summary is not None:
                reasoning.setdefault("summary", summary)
            out["reasoning"] = reasoning
    if defaults.verbosity is not None:
        text = _sub_object(out, "text")
        if text is not None:
            text.setdefault("verbosity", defaults.verbosity)
            out["text"] = text
    params = defaults.model_params
    for key in RESPONSES_MODEL_PARAMS:
        if key in params and key not in out:
            out[key] = params[key]
    if "max_tokens" in params and "max_output_tokens" not in out:
        out["max_output_tokens"] = params["max_tokens"]
    out["stream"] = True
    return out


def build_chat_body(body: Mapping[str, Any], defaults: RequestDefaults) -> dict[str, Any]:
    out = dict(body)
    if out.get("model") is None:
        out["model"] = defaults.model
    if defaults.reasoning_effort is not None and "reasoning_effort" not in out:
        out["reasoning_effort"] = defaults.reasoning_effort
    if defaults.verbosity is not None and "verbosity" not in out:
        out["verbosity"] = defaults.verbosity
    params = defaults.model_params
    for key in CHAT_MODEL_PARAMS:
        if key in params and key not in out:
            out[key] = params[key]
    has_cap = "max_completion_tokens" in out or "max_tokens" in out
    if "max_tokens" in params and not has_cap:
        out["max_completion_tokens"] = params["max_tokens"]
    out["stream"] = True
    options = out.get("stream_options")
    out["stream_options"] = {
        **(options if isinstance(options, Mapping) else {}),
        "include_usage": True,
    }
    return out


def build_embeddings_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """Sent as it is (not streamed): the config's model, reasoning and `[model_params]` are
    for models that write text, so the body names its own model (job/submit requires it)."""
    return dict(body)


def build_body(api: Api, body: Mapping[str, Any], defaults: RequestDefaults) -> dict[str, Any]:
    if api == "chat":
        return build_chat_body(body, defaults)
    if api == "embeddings":
        return build_embeddings_body(body)
    return build_responses_body(body, defaults)


def endpoint_url(
    base_url: str, api: Api | Literal["models"], query_params: Mapping[str, str] | None = None
) -> str:
    """`{base_url}/responses`, `{base_url}/chat/completions`, `{base_url}/embeddings` (or
    `{base_url}/models`), plus
    the provider's `query_params` (Azure's `api-version`)."""
    url = base_url.rstrip("/") + "/" + ("models" if api == "models" else API_PATHS[api])
    if query_params:
        url += ("&" if "?" in url else "?") + urlencode(dict(query_params))
    return url


# --------------------------------------------------------------------------- usage and result


class _Details(msgspec.Struct):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class _ResponsesUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None


class _ChatUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None


def _usage(
    input_tokens: int | None,
    output_tokens: int | None,
    total: int | None,
    cached: _Details | None,
    reasoning: _Details | None,
) -> Usage:
    i, o = input_tokens or 0, output_tokens or 0
    return Usage(
        input_tokens=i,
        cached_input_tokens=(cached.cached_tokens if cached else None) or 0,
        output_tokens=o,
        reasoning_tokens=(reasoning.reasoning_tokens if reasoning else None) or 0,
        total_tokens=total if total is not None else i + o,
    )


def usage_from_responses(raw: Any) -> Usage | None:
    """`response.usage` of `response.completed`."""
    try:
        u = msgspec.convert(raw, _ResponsesUsage)
    except msgspec.ValidationError:
        return None
    return _usage(
        u.input_tokens,
        u.output_tokens,
        u.total_tokens,
        u.input_tokens_details,
        u.output_tokens_details,
    )


def usage_from_chat(raw: Any) -> Usage | None:
    """`usage` of the final Chat chunk (`stream_options.include_usage`)."""
    try:
        u = msgspec.convert(raw, _ChatUsage)
    except msgspec.ValidationError:
        return None
    return _usage(
        u.prompt_tokens,
        u.completion_tokens,
        u.total_tokens,
        u.prompt_tokens_details,
        u.completion_tokens_details,
    )


class StreamResult(msgspec.Struct, frozen=True):
    """What `job.completed` needs from a finished stream (or whole reply): `output_text` is
    None for a reply that has no text (embeddings)."""

    output_text: str | None
    usage: Usage | None
    response_id: str | None


Outcome = StreamResult | UpstreamError
Event = UpstreamEvent

_decoder = msgspec.json.Decoder()


class StreamNormalizer:
    """Decoded SSE events of one attempt in, job events out.

    The shell feeds every `SSEEvent` to `feed_sse` and appends what it returns to the job
    log; once `outcome` is set it stops reading (a `response.failed` ends the attempt at
    once, without waiting for EOF). At EOF it calls `finish()`, which turns a stream that
    ended without its completion event into a `stream_error`. A failure's text passes
    `scrubber`, which knows what the attempt's request carried.

    A normaliser with `streamed = False` reads one whole JSON reply instead: the shell reads
    the body (bounded) and hands it to `feed_body`, which sets `outcome`.
    """

    streamed: ClassVar[bool] = True

    def __init__(
        self, wall_now: Callable[[], float] = time.time, scrubber: Scrubber = GENERIC
    ) -> None:
        self._wall_now = wall_now
        self._scrubber = scrubber
        self._text: list[str] = []
        self.outcome: Outcome | None = None

    @property
    def output_text(self) -> str:
        """Text streamed so far (non-empty means a retry must reset the output)."""
        return "".join(self._text)

    @property
    def has_text(self) -> bool:
        return bool(self._text)

    def feed_sse(self, sse: SSEEvent) -> list[Event]:
        if self.outcome is not None:
            return []
        special = self._special_data(sse.data)
        if special is not None:
            return special
        try:
            obj = _decoder.decode(sse.data)
        except msgspec.DecodeError as exc:
            self.outcome = stream_malformed(f"not JSON: {exc}")
            return []
        if not isinstance(obj, dict):
            self.outcome = stream_malformed("not a JSON object")
            return []
        return self.feed(obj)

    def feed(self, obj: Mapping[str, Any]) -> list[Event]:
        raise NotImplementedError

    def feed_body(self, body: bytes) -> list[Event]:
        raise NotImplementedError

    def finish(self) -> Outcome:
        if self.outcome is None:
            self.outcome = self._at_eof()
        return self.outcome

    def _special_data(self, data: str) -> list[Event] | None:
        return None

    def _at_eof(self) -> Outcome:
        return stream_ended_early()
