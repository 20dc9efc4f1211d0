"""Every upstream failure as a value with an error kind and a message a person can act on.

This is the one module that looks at httpx exceptions and upstream error bodies. Classifiers
are pure: status, headers, body bytes and the wall clock (`now`, UNIX seconds) in, an
`UpstreamError` out. The error bodies and codes are those OpenAI's API, the ChatGPT backend
and OpenAI-compatible servers send (tests/unit/test_upstream_errors.py has one of each).
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, tzinfo
from typing import Any, Final

import httpx
import msgspec

from codexctl.protocol import ERROR_TABLE, ErrorKind, RpcError
from codexd.clock import rfc3339
from codexd.security.scrub import GENERIC, MAX_WORD, Scrubber

BILLING_URL: Final = "platform.openai.com/account/billing"
PLUS_URL: Final = "https://chatgpt.com/explore/plus"
_HTML = re.compile(rb"^\s*(?:<!doctype html|<html|<head|<body|<\?xml)", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")


class UpstreamError(msgspec.Struct, frozen=True, kw_only=True):
    """An upstream failure. `in_stream` marks a failure after the event stream had started
    (it counts against `stream_max_retries`, not `request_max_retries`). `upstream_message`
    is upstream's own text, kept for retry hints such as "try again in 1.5s".

    Every string upstream had a say in (`message`, `upstream_code`, `request_id`,
    `upstream_message`) went through the attempt's `Scrubber` (codexd/security/scrub.py) before it
    was put here."""

    kind: ErrorKind
    message: str
    retryable: bool
    retry_after_s: float | None = None
    resets_at: str | None = None
    http_status: int | None = None
    upstream_code: str | None = None
    request_id: str | None = None
    upstream_message: str | None = None
    in_stream: bool = False

    @property
    def is_unauthorized(self) -> bool:
        """A 401: the session layer refreshes the credentials once and tries again; if the
        retry fails too, this error (kind `auth_expired`) ends the job."""
        return self.http_status == 401

    def to_rpc_error(self) -> RpcError:
        data: dict[str, Any] = {"retryable": self.retryable}
        for name in ("retry_after_s", "resets_at", "http_status", "upstream_code", "request_id"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return RpcError(self.kind, self.message, **data)


class UpstreamFailure(Exception):
    """Carries an `UpstreamError` through code that must unwind (see `transport_errors`)."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


def _error(kind: ErrorKind, message: str, **fields: Any) -> UpstreamError:
    fields.setdefault("retryable", ERROR_TABLE[kind][1])
    return UpstreamError(kind=kind, message=message, **fields)


# --------------------------------------------------------------------------- small helpers


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def request_id_of(headers: Mapping[str, str], scrubber: Scrubber = GENERIC) -> str | None:
    h = lower_headers(headers)
    return scrubber.word(h.get("x-request-id") or h.get("x-oai-request-id"))


def is_event_stream(headers: Mapping[str, str]) -> bool:
    content_type = lower_headers(headers).get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def is_json(headers: Mapping[str, str]) -> bool:
    content_type = lower_headers(headers).get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def format_duration(seconds: float) -> str:
    """`45s`, `12m`, `1h12m`, `2d3h`: precise enough to plan by, short enough to read."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    minutes = (s + 59) // 60 if s < 3600 else s // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def format_at(ts: float, now: float, tz: tzinfo | None = None) -> str:
    """`14:05 (in 1h12m)` in the daemon's local time (with the date when not today)."""
    local = datetime.fromtimestamp(ts, tz)
    today = datetime.fromtimestamp(now, tz)
    fmt = "%H:%M" if local.date() == today.date() else "%Y-%m-%d %H:%M"
    return f"{local.strftime(fmt)} (in {format_duration(ts - now)})"


def format_reset(resets_at: float, now: float, tz: tzinfo | None = None) -> str:
    """`resets at 14:05 (in 1h12m)`."""
    return f"resets at {format_at(resets_at, now, tz)}"


# --------------------------------------------------------------------------- error bodies


class _Detail(msgspec.Struct):
    """`error` of an OpenAI error body; also the ChatGPT usage-limit extras."""

    message: str | None = None
    type: str | None = None
    code: str | int | None = None
    param: str | None = None
    plan_type: str | None = None
    resets_at: float | None = None
    resets_in_seconds: float | None = None


class _Body(msgspec.Struct):
    error: _Detail | str | None = None
    detail: str | None = None
    message: str | None = None
    code: str | None = None


class _Parsed(msgspec.Struct):
    """An error body's fields, each scrubbed."""

    message: str | None = None
    type: str | None = None
    code: str | None = None
    plan_type: str | None = None
    resets_at: float | None = None
    resets_in_seconds: float | None = None
    is_html: bool = False
    raw_text: str | None = None


def _detail_from(obj: Any) -> _Detail | None:
    try:
        return msgspec.convert(obj, _Detail)
    except msgspec.ValidationError:
        if isinstance(obj, Mapping):
            msg, typ, code = obj.get("message"), obj.get("type"), obj.get("code")
            return _Detail(
                message=msg if isinstance(msg, str) else None,
                type=typ if isinstance(typ, str) else None,
                code=code if isinstance(code, str) else None,
            )
        return None


def _parse_body(body: bytes, scrub: Scrubber) -> _Parsed:
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        # The whole (already bounded) body is scrubbed before it is cut: cut first, a secret
        # straddling the cut would leave its head behind, and no longer match to be removed.
        text = body.decode("utf-8", errors="replace")
        if _HTML.match(body):
            return _Parsed(is_html=True, raw_text=scrub(_TAGS.sub(" ", text), 200) or None)
        return _Parsed(raw_text=scrub(text) or None)
    if not isinstance(doc, Mapping):
        return _Parsed(raw_text=scrub(str(doc)) or None)
    detail = _detail_from(doc.get("error")) if isinstance(doc.get("error"), Mapping) else None
    if detail is None:
        top = _detail_from(doc) or _Detail()
        err = doc.get("error")
        message = err if isinstance(err, str) else doc.get("detail")
        detail = _Detail(
            message=message if isinstance(message, str) else top.message,
            type=top.type,
            code=top.code,
        )
    return _Parsed(
        message=scrub(detail.message or "") or None,
        type=scrub.word(detail.type),
        code=scrub.word(str(detail.code)) if detail.code is not None else None,
        plan_type=scrub.word(detail.plan_type),
        resets_at=detail.resets_at,
        resets_in_seconds=detail.resets_in_seconds,
    )


def _said(parsed: _Parsed) -> str:
    """`: <upstream message>` when upstream said anything, else empty."""
    text = parsed.message or parsed.raw_text
    return f": {text}" if text else ""


# --------------------------------------------------------------------------- classifiers


def _quota_exceeded(**fields: Any) -> UpstreamError:
    return _error(
        ErrorKind.QUOTA_EXCEEDED,
        "the OpenAI account is out of quota (insufficient_quota): "
        f"add credits at {BILLING_URL}, then try again",
        upstream_code="insufficient_quota",
        **fields,
    )


def _context_length_exceeded(parsed_message: str | None, **fields: Any) -> UpstreamError:
    tail = f" (upstream: {parsed_message})" if parsed_message else ""
    return _error(
        ErrorKind.CONTEXT_LENGTH_EXCEEDED,
        "the request does not fit the model's context window: shorten the input or pick a "
        f"model with a larger window{tail}",
        upstream_code="context_length_exceeded",
        **fields,
    )


def _usage_limit(parsed: _Parsed, now: float, tz: tzinfo | None, **fields: Any) -> UpstreamError:
    resets: float | None = parsed.resets_at
    if resets is None and parsed.resets_in_seconds is not None:
        resets = now + parsed.resets_in_seconds
    return usage_limit_reached(resets, parsed.plan_type, now, tz=tz, **fields)


def usage_limit_reached(
    resets: float | None,
    plan_type: str | None,
    now: float,
    *,
    tz: tzinfo | None = None,
    **fields: Any,
) -> UpstreamError:
    """The ChatGPT plan's limit is spent until `resets` (epoch s, or unknown): what upstream's
    429 says, and what the plan's windows say before any request is sent."""
    plan = f" ({plan_type} plan)" if plan_type else ""
    if resets is not None:
        when = format_reset(resets, now, tz)
        fields.update(resets_at=rfc3339(resets), retry_after_s=max(0.0, resets - now))
    else:
        when = "try again later"
    return _error(
        ErrorKind.USAGE_LIMIT_REACHED,
        f"ChatGPT usage limit reached{plan}; {when}. Meanwhile an API key works: "
        "codexctl login --api-key",
        upstream_code="usage_limit_reached",
        **fields,
    )


def _usage_not_included(**fields: Any) -> UpstreamError:
    return _error(
        ErrorKind.USAGE_LIMIT_REACHED,
        f"this ChatGPT plan does not include Codex: upgrade at {PLUS_URL}, or use an API key "
        "(codexctl login --api-key)",
        upstream_code="usage_not_included",
        **fields,
    )


def _rate_limited(parsed_message: str | None, **fields: Any) -> UpstreamError:
    tail = f": {parsed_message}" if parsed_message else ""
    return _error(
        ErrorKind.RATE_LIMITED,
        f"rate limited by upstream{tail}",
        upstream_code="rate_limit_exceeded",
        upstream_message=parsed_message,
        **fields,
    )


# Upstream codes that no retry can cure: classified by their code wherever they appear, and
# never retried (upstream/retry.py reads this set).
NEVER_RETRIED_CODES: Final = frozenset(
    {"insufficient_quota", "usage_limit_reached", "usage_not_included", "context_length_exceeded"}
)


def classify_http(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    *,
    tz: tzinfo | None = None,
    scrubber: Scrubber = GENERIC,
    expected: str = "an event stream",
) -> UpstreamError:
    """A response that is not the event stream we asked for: an HTTP error status, or a 2xx
    whose body is not `text/event-stream` (a captive portal's HTML page, a proxy's JSON).

    `body` is what the shell read of it (bounded). `tz` is for tests; the daemon's local time
    zone is used otherwise. `scrubber` knows what the request carried (codexd/security/scrub.py).
    `expected` names what a 2xx should have carried (a JSON reply, for embeddings).
    """
    parsed = _parse_body(body, scrubber)
    code = parsed.code or parsed.type
    common: dict[str, Any] = {
        "http_status": status,
        "request_id": request_id_of(headers, scrubber),
    }

    if 200 <= status < 300:
        content_type = scrubber(lower_headers(headers).get("content-type") or "", MAX_WORD)
        content_type = content_type or "no content type"
        what = "an HTML page" if parsed.is_html else content_type
        said = "" if parsed.is_html else _said(parsed)
        return _error(
            ErrorKind.UPSTREAM_ERROR,
            f"upstream answered {status} with {what} instead of {expected}{said}; a "
            "proxy or captive portal may be intercepting the connection: check the network "
            "and the provider's base_url",
            **common,
        )
    if code in NEVER_RETRIED_CODES or parsed.type in NEVER_RETRIED_CODES:
        return _by_code(
            code if code in NEVER_RETRIED_CODES else parsed.type, parsed, now, tz, common
        )
    if status == 400 and _mentions_context_window(parsed):
        return _context_length_exceeded(parsed.message, **common)
    if status == 429:
        return _rate_limited(parsed.message or parsed.raw_text, **common)
    if status == 401:
        return _error(
            ErrorKind.AUTH_EXPIRED,
            # The job runner replaces this with the credential's own name and remedy.
            f"upstream rejected the credentials (401{_code_tag(parsed)}): check the credential "
            "in use (codexctl whoami)",
            upstream_code=parsed.code,
            **common,
        )
    if status == 403:
        body_text = (parsed.raw_text or parsed.message or "").lower()
        if "cloudflare" in body_text and "blocked" in body_text:
            message = (
                "access blocked by Cloudflare (403): this usually happens when connecting "
                "from a restricted region or through a flagged network; try another network"
            )
        else:
            message = f"upstream refused access (403{_code_tag(parsed)}){_said(parsed)}"
        return _error(ErrorKind.BAD_REQUEST, message, upstream_code=parsed.code, **common)
    if status >= 500:
        overloaded = code in ("server_is_overloaded", "slow_down")
        hint = (
            "the model is at capacity; try again later or pick another model"
            if overloaded
            else "upstream had a server error; try again later"
        )
        said = _said(parsed) if not parsed.is_html else ""
        return _error(
            ErrorKind.UPSTREAM_ERROR,
            f"{hint} ({status}{_code_tag(parsed)}{said})",
            upstream_code=parsed.code,
            upstream_message=parsed.message,
            **common,
        )
    return _error(
        ErrorKind.BAD_REQUEST,
        f"upstream rejected the request ({status}{_code_tag(parsed)}){_said(parsed)}",
        upstream_code=parsed.code,
        **common,
    )


def _mentions_context_window(parsed: _Parsed) -> bool:
    text = (parsed.message or "").lower()
    return "context length" in text or "context window" in text


def _code_tag(parsed: _Parsed) -> str:
    tag = parsed.code or parsed.type
    return f" {tag}" if tag else ""


def _by_code(
    code: str | None, parsed: _Parsed, now: float, tz: tzinfo | None, common: dict[str, Any]
) -> UpstreamError:
    if code == "insufficient_quota":
        return _quota_exceeded(**common)
    if code == "usage_limit_reached":
        return _usage_limit(parsed, now, tz, **common)
    if code == "usage_not_included":
        return _usage_not_included(**common)
    return _context_length_exceeded(parsed.message, **common)


def classify_stream_event(
    event: Mapping[str, Any],
    now: float = 0.0,
    *,
    tz: tzinfo | None = None,
    scrubber: Scrubber = GENERIC,
) -> UpstreamError:
    """A failure reported inside the stream: Responses `response.failed` (`response.error`),
    an `error` event (`code`, `message` at the top, or under `error`), or a Chat chunk that
    carries `error`. `now` matters only for a usage limit's reset time."""
    err: Any = None
    if event.get("type") == "response.failed":
        response = event.get("response")
        if isinstance(response, Mapping):
            err = response.get("error")
    if err is None:
        err = event.get("error")
    if not isinstance(err, Mapping):
        err = event
    parsed = _parse_body(msgspec.json.encode({"error": dict(err)}), scrubber)
    code = parsed.code or parsed.type
    common: dict[str, Any] = {"in_stream": True}
    if code in NEVER_RETRIED_CODES:
        return _by_code(code, parsed, now, tz, common)
    if code == "rate_limit_exceeded":
        return _rate_limited(parsed.message, **common)
    tag = f" ({code})" if code else ""
    said = f": {parsed.message}" if parsed.message else ""
    if code and (code.startswith("invalid_") or parsed.type == "invalid_request_error"):
        return _error(
            ErrorKind.BAD_REQUEST,
            f"upstream rejected the request{tag}{said}",
            upstream_code=code,
            **common,
        )
    # Codex retries every other `response.failed`: server_error,
    # overload and codes we do not know yet.
    return _error(
        ErrorKind.UPSTREAM_ERROR,
        f"upstream failed the response{tag}{said}",
        upstream_code=code,
        upstream_message=parsed.message,
        **common,
    )


def stream_ended_early() -> UpstreamError:
    return _error(
        ErrorKind.STREAM_ERROR,
        "stream disconnected before completion: upstream closed it without a final event",
        in_stream=True,
    )


def stream_idle_timeout(timeout_s: float) -> UpstreamError:
    return _error(
        ErrorKind.STREAM_ERROR,
        f"stream idle for {format_duration(timeout_s)} (stream_idle_timeout_ms): upstream "
        "stopped sending events",
        in_stream=True,
    )


def stream_event_too_large(limit: int) -> UpstreamError:
    return _error(
        ErrorKind.STREAM_ERROR,
        f"upstream sent an event larger than {limit} bytes; the stream was abandoned",
        in_stream=True,
    )


def reply_malformed(detail: str) -> UpstreamError:
    """A whole (not streamed) reply that is not what the API sends; retried as a request."""
    return _error(
        ErrorKind.UPSTREAM_ERROR,
        f"upstream sent a malformed reply ({GENERIC(detail, 120)}); check the provider's "
        "base_url",
    )


def reply_too_large(limit: int) -> UpstreamError:
    """A whole reply over the bound: asking again would bring the same (never retried)."""
    return _error(
        ErrorKind.UPSTREAM_ERROR,
        f"upstream's reply is larger than {limit >> 20} MiB, more than codexd holds for one "
        'job: send fewer inputs per request, or ask for encoding_format "base64"',
        retryable=False,
    )


def stream_malformed(detail: str) -> UpstreamError:
    return _error(
        ErrorKind.STREAM_ERROR,
        f"upstream sent a malformed event ({GENERIC(detail, 120)})",
        in_stream=True,
    )


# --------------------------------------------------------------------------- transport


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _host_of(exc: BaseException) -> str:
    if isinstance(exc, httpx.RequestError):
        try:
            return exc.request.url.host or "upstream"
        except RuntimeError:
            pass
    return "upstream"


_DNS_TEXT: Final = (
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "no address associated",
    "getaddrinfo failed",
)


def classify_transport(
    exc: Exception, *, in_stream: bool = False, scrubber: Scrubber = GENERIC
) -> UpstreamError:
    """An httpx (or socket) exception. `in_stream`: it happened after the response headers,
    while the events were being read; then it is a stream drop (`stream_error`)."""
    host = _host_of(exc)
    chain = list(_chain(exc))
    text = " ".join(str(e) for e in chain).lower()
    common: dict[str, Any] = {"in_stream": in_stream}

    if in_stream:
        if isinstance(exc, httpx.TimeoutException):
            return _error(
                ErrorKind.STREAM_ERROR,
                f"stream disconnected before completion: no data from {host} within the read "
                "timeout",
                **common,
            )
        return _error(
            ErrorKind.STREAM_ERROR,
            f"stream disconnected before completion: {_transport_detail(exc, scrubber)}",
            **common,
        )
    if any(isinstance(e, socket.gaierror) for e in chain) or any(t in text for t in _DNS_TEXT):
        message = (
            f"cannot resolve {host}: check the network connection, DNS and the provider's base_url"
        )
    elif any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or (
        "certificate verify failed" in text
    ):
        message = (
            f"TLS certificate of {host} could not be verified: a proxy may be intercepting "
            "the connection (set SSL_CERT_FILE to its CA bundle if you trust it)"
        )
    elif any(isinstance(e, ConnectionRefusedError) for e in chain) or "connection refused" in text:
        message = f"connection to {host} refused: is the server running and base_url right?"
    elif isinstance(exc, httpx.ProxyError):
        message = f"the HTTP proxy failed to reach {host}: check HTTPS_PROXY/ALL_PROXY"
    elif isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        message = f"timed out connecting to {host}: check the network connection"
    elif isinstance(exc, httpx.TimeoutException):
        message = f"{host} did not answer in time: try again later"
    elif isinstance(exc, httpx.RemoteProtocolError):
        message = f"{host} closed the connection without a response: try again later"
    elif isinstance(exc, httpx.UnsupportedProtocol):
        return _error(
            ErrorKind.BAD_REQUEST,
            f"the provider's base_url is not an http(s) URL ({_transport_detail(exc, scrubber)})",
            **common,
        )
    else:
        message = f"connection to {host} failed: {_transport_detail(exc, scrubber)}"
    return _error(ErrorKind.UPSTREAM_ERROR, message, **common)


def _transport_detail(exc: BaseException, scrubber: Scrubber) -> str:
    return scrubber(str(exc), 200) or type(exc).__name__


@contextmanager
def transport_errors(*, in_stream: bool = False, scrubber: Scrubber = GENERIC) -> Iterator[None]:
    """Turn httpx and socket exceptions raised inside into `UpstreamFailure(error)`."""
    try:
        yield
    except (httpx.TransportError, httpx.StreamError, OSError) as exc:
        error = classify_transport(exc, in_stream=in_stream, scrubber=scrubber)
        raise UpstreamFailure(error) from exc
