"""The one shell around httpx: send one attempt upstream and stream its events back.

Everything it decides is delegated to the pure modules: `sse` decodes, `wire` normalises,
`errors` classifies. The response is always read inside `async with` so it is closed on
every path, including cancellation (which is how `job/cancel` reaches upstream at once).
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.lowlevel
import httpx

from codexctl.protocol import MAX_SERVER_MESSAGE_BYTES
from codexd.jobs import MAX_RETAINED_LOG_BYTES
from codexd.security.scrub import GENERIC, Scrubber
from codexd.upstream.errors import (
    UpstreamError,
    UpstreamFailure,
    classify_http,
    is_event_stream,
    is_json,
    reply_too_large,
    stream_event_too_large,
    stream_idle_timeout,
    transport_errors,
)
from codexd.upstream.sse import SSEDecoder, SSEEvent, SSEOverflowError
from codexd.upstream.transport import Http11Transport
from codexd.upstream.wire import Event, Outcome, StreamNormalizer

MAX_ERROR_BODY: Final = 64 * 1024
MAX_EVENT_BYTES: Final = 8 << 20
# A whole (not streamed) reply (embeddings). Finished jobs' logs share MAX_RETAINED_LOG_BYTES,
# where such a reply counts once: a quarter of it at most, so that one reply never pushes out
# every other finished job (itself included). Its `job/event` line must also pass codexctl's
# bound on one message, with room for the line's envelope.
REPLY_LINE_ROOM: Final = 4096
MAX_REPLY_BYTES: Final = min(
    MAX_RETAINED_LOG_BYTES // 4, MAX_SERVER_MESSAGE_BYTES - REPLY_LINE_ROOM
)
CONNECT_TIMEOUT_S: Final = 10.0
PROBE_TIMEOUT_S: Final = 30.0
# How long the rest of a body may take after its final event before the connection is
# dropped instead of kept (upstream ends the body right after that event).
FINISH_BODY_WAIT_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request. `scrubber` knows what it carries, for the text of its failures."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    idle_timeout_s: float
    scrubber: Scrubber = GENERIC


@dataclass(slots=True)
class AttemptResult:
    outcome: Outcome
    headers: Mapping[str, str]


_ssl_context: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """Building a verifying context loads the CA bundle (~20 ms): do it once, not per pool."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context(trust_env=True)
    return _ssl_context


def new_transport(max_connections: int = 1000) -> Http11Transport:
    """The keep-alive pool that model requests to one provider go through."""
    return Http11Transport(ssl_context=shared_ssl_context, max_connections=max_connections)


def new_http_client(max_connections: int = 1000) -> httpx.AsyncClient:
    """For one-off calls (the OAuth issuer): a keep-alive pool with explicit limits and no
    5 s read timeout."""
    return httpx.AsyncClient(
        verify=shared_ssl_context(),
        timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=100, keepalive_expiry=30
        ),
        follow_redirects=False,
        trust_env=True,
    )


async def run_attempt(
    transport: httpx.AsyncBaseTransport,
    attempt: Attempt,
    normalizer: StreamNormalizer,
    on_event: Callable[[Event], None],
    *,
    on_headers: Callable[[Mapping[str, str]], None] | None = None,
    on_batch: Callable[[], None] | None = None,
    wall_now: Callable[[], float] = time.time,
) -> AttemptResult:
    """One upstream request. Events are handed to `on_event` as they arrive, and `on_batch`
    is called once the events of each piece of the body read have been; the result is the
    stream's outcome (a StreamResult or an UpstreamError) and the response headers."""
    headers: Mapping[str, str] = {}
    scrubber = attempt.scrubber
    try:
        with transport_errors(scrubber=scrubber):
            request = httpx.Request(
                "POST",
                _url(attempt.url),
                headers=attempt.headers,
                content=attempt.body,
                extensions={
                    "timeout": {
                        "connect": CONNECT_TIMEOUT_S,
                        "read": attempt.idle_timeout_s,
                        "write": attempt.idle_timeout_s,
                        "pool": None,
                    }
                },
            )
            response = await transport.handle_async_request(request)
        try:
            headers = {k.lower(): v for k, v in response.headers.items()}
            if on_headers is not None:
                on_headers(headers)
            if not normalizer.streamed:
                outcome = await _whole(response, headers, attempt, normalizer, on_event, wall_now)
                return AttemptResult(outcome, headers)
            if response.status_code != 200 or not is_event_stream(headers):
                with transport_errors(scrubber=scrubber):
                    body = await _read_bounded(response, MAX_ERROR_BODY)
                error = classify_http(
                    response.status_code, headers, body, wall_now(), scrubber=scrubber
                )
                return AttemptResult(error, headers)
            outcome = await _pump(response, attempt, normalizer, on_event, on_batch)
            return AttemptResult(outcome, headers)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
    except UpstreamFailure as failure:
        return AttemptResult(failure.error, headers)


async def _whole(
    response: httpx.Response,
    headers: Mapping[str, str],
    attempt: Attempt,
    normalizer: StreamNormalizer,
    on_event: Callable[[Event], None],
    wall_now: Callable[[], float],
) -> Outcome:
    """A reply that is one JSON object (embeddings): read whole, within MAX_REPLY_BYTES. A
    drop or a stall while reading it is a failed request, not a stream drop."""
    scrubber = attempt.scrubber
    ok = response.status_code == 200 and is_json(headers)
    with transport_errors(scrubber=scrubber):
        body = await _read_bounded(response, MAX_REPLY_BYTES + 1 if ok else MAX_ERROR_BODY)
    if not ok:
        return classify_http(
            response.status_code,
            headers,
            body,
            wall_now(),
            scrubber=scrubber,
            expected="a JSON reply",
        )
    if len(body) > MAX_REPLY_BYTES:
        return reply_too_large(MAX_REPLY_BYTES)
    for event in normalizer.feed_body(body):
        on_event(event)
    return normalizer.finish()


async def fetch(
    transport: httpx.AsyncBaseTransport,
    url: str,
    headers: Mapping[str, str],
    *,
    limit: int,
    timeout_s: float = PROBE_TIMEOUT_S,
    wall_now: Callable[[], float] = time.time,
    scrubber: Scrubber = GENERIC,
) -> bytes | UpstreamError:
    """One GET: its body (at most `limit` bytes; a longer one is cut there) when upstream
    answered 2xx, else what went wrong, classified (and scrubbed) as for a model request."""
    try:
        with transport_errors(scrubber=scrubber):
            request = httpx.Request(
                "GET",
                _url(url),
                headers=headers,
                extensions={
                    "timeout": {
                        "connect": CONNECT_TIMEOUT_S,
                        "read": timeout_s,
                        "write": timeout_s,
                        "pool": None,
                    }
                },
            )
            response = await transport.handle_async_request(request)
        try:
            if 200 <= response.status_code < 300:
                if limit <= 0:
                    return b""
                with transport_errors(scrubber=scrubber):
                    return await _read_bounded(response, limit)
            got = {k.lower(): v for k, v in response.headers.items()}
            with transport_errors(scrubber=scrubber):
                body = await _read_bounded(response, MAX_ERROR_BODY)
            return classify_http(response.status_code, got, body, wall_now(), scrubber=scrubber)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
    except UpstreamFailure as failure:
        return failure.error


async def probe(
    transport: httpx.AsyncBaseTransport,
    url: str,
    headers: Mapping[str, str],
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    wall_now: Callable[[], float] = time.time,
    scrubber: Scrubber = GENERIC,
) -> UpstreamError | None:
    """One GET (`{base_url}/models`, to check a key): None when upstream answered 2xx, else
    what went wrong, classified (and scrubbed) as for a model request."""
    got = await fetch(
        transport, url, headers, limit=0, timeout_s=timeout_s, wall_now=wall_now, scrubber=scrubber
    )
    return got if isinstance(got, UpstreamError) else None


async def _pump(
    response: httpx.Response,
    attempt: Attempt,
    normalizer: StreamNormalizer,
    on_event: Callable[[Event], None],
    on_batch: Callable[[], None] | None,
) -> Outcome:
    idle_timeout_s = attempt.idle_timeout_s
    decoder = SSEDecoder(MAX_EVENT_BYTES)
    chunks = _body(response)
    # One scope whose deadline moves with the stream: the idle timeout costs no new scope per
    # chunk, and its expiry is told apart from a transport error (TimeoutError is an OSError,
    # which `transport_errors` would report as a dropped connection). Reading the event loop's
    # clock is dear next to a chunk, so the deadline moves only once a slice of the timeout
    # has passed, with that slice added: the stream ends after idling for between 1 and 1.125
    # times the timeout.
    slack = idle_timeout_s / 8
    moved_at = -math.inf
    first_text_seen = False
    with anyio.CancelScope() as idle:
        while True:
            now = time.monotonic()
            if now - moved_at >= slack:
                moved_at = now
                idle.deadline = anyio.current_time() + idle_timeout_s + slack
            try:
                with transport_errors(in_stream=True, scrubber=attempt.scrubber):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except UpstreamFailure as failure:
                if isinstance(failure.__cause__, httpx.ReadTimeout):
                    return stream_idle_timeout(idle_timeout_s)
                raise
            try:
                events = decoder.feed(chunk)
            except SSEOverflowError as exc:
                _deliver(exc.events, normalizer, on_event)
                return stream_event_too_large(exc.limit)
            if await _deliver_batch(events, normalizer, on_event, on_batch, first_text_seen):
                break
            first_text_seen = normalizer.has_text
    if normalizer.outcome is not None:
        await _finish_body(chunks)
        return normalizer.outcome
    if idle.cancelled_caught:
        return stream_idle_timeout(idle_timeout_s)
    _deliver(decoder.close(), normalizer, on_event)
    return normalizer.finish()


async def _finish_body(chunks: AsyncIterator[bytes]) -> None:
    """Read the little that follows the final event (the chunked body's terminator), so that
    the connection goes back to the keep-alive pool: closing a response that was not read to
    its end closes its connection, and the next request would pay for a new one."""
    read = 0
    with anyio.move_on_after(FINISH_BODY_WAIT_S):
        try:
            with transport_errors(in_stream=True):
                async for chunk in chunks:
                    read += len(chunk)
                    if read > MAX_ERROR_BODY:
                        return
        except UpstreamFailure:
            return


def _deliver(
    events: list[SSEEvent],
    normalizer: StreamNormalizer,
    on_event: Callable[[Event], None],
    start: int = 0,
    until_text: bool = False,
) -> int:
    """Feed decoded SSE events from `start` on; returns the index after the last one fed:
    it stops once the normaliser has an outcome and, with `until_text`, after the first event
    that brought text."""
    for i in range(start, len(events)):
        for event in normalizer.feed_sse(events[i]):
            on_event(event)
        if normalizer.outcome is not None or (until_text and normalizer.has_text):
            return i + 1
    return len(events)


async def _deliver_batch(
    events: list[SSEEvent],
    normalizer: StreamNormalizer,
    on_event: Callable[[Event], None],
    on_batch: Callable[[], None] | None,
    text_seen: bool,
) -> bool:
    """Feed the events of one read and end the batch; True once the normaliser has an
    outcome. Until text was seen the batch ends after the first event that brings some, and
    the loop gets one turn there: readers of the job (a gateway client, a job/subscribe)
    write the first text before the rest of a burst that came in the same read is handled.
    Later batches are not split: writing them whole is cheaper."""
    at = 0
    while at < len(events):
        at = _deliver(events, normalizer, on_event, at, until_text=not text_seen)
        if on_batch is not None:
            on_batch()
        if normalizer.outcome is not None:
            return True
        if not text_seen and normalizer.has_text:
            text_seen = True
            await anyio.lowlevel.checkpoint()
    return False


_urls: dict[str, httpx.URL] = {}
MAX_CACHED_URLS: Final = 256


def _url(text: str) -> httpx.URL:
    """Parsing a URL costs more than the rest of building a request; the few endpoints a
    daemon talks to are parsed once."""
    url = _urls.get(text)
    if url is None:
        if len(_urls) >= MAX_CACHED_URLS:
            _urls.clear()
        url = _urls[text] = httpx.URL(text)
    return url


def _body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The raw body, straight from the transport's stream (no per-chunk re-chunking)."""
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    return stream.__aiter__()


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in _body(response):
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])


__all__ = [
    "Attempt",
    "AttemptResult",
    "UpstreamError",
    "fetch",
    "new_http_client",
    "new_transport",
    "probe",
    "run_attempt",
]
