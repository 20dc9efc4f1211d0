"""Reference models and checks shared by the hypothesis fuzz tests and the atheris harnesses.

Each `check_*` takes raw fuzz input, runs the real decoder on it (at arbitrary chunk
boundaries) and compares with a naive model written from the spec text alone (the protocol for
NDJSON, WHATWG "event stream interpretation" for SSE). A failed check raises AssertionError.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import msgspec

from codexctl.protocol import Envelope, ErrorKind
from codexd.rpc.envelope import Rejected, parse_request
from codexd.rpc.framing import LineFramer, Overflow
from codexd.upstream.sse import SSEDecoder, SSEEvent, SSEOverflowError

# An error message is read by a person and echoed into logs: it never grows with the input.
MAX_ERROR_MESSAGE = 600


def chunks_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------- NDJSON


def reference_lines(stream: bytes, max_line: int) -> list[bytes | Overflow]:
    """Lines end at LF, blank ones are skipped, a line (finished or not) longer than
    the bound ends the connection with one overflow."""
    *complete, tail = stream.split(b"\n")
    out: list[bytes | Overflow] = []
    for line in complete:
        if len(line) > max_line:
            out.append(Overflow(max_line))
            return out
        if line.strip():
            out.append(line)
    if len(tail) > max_line:
        out.append(Overflow(max_line))
    return out


def check_framer(stream: bytes, cuts: Sequence[int], max_line: int) -> list[bytes | Overflow]:
    framer = LineFramer(max_line)
    got: list[bytes | Overflow] = []
    for chunk in chunks_at(stream, cuts):
        got.extend(framer.feed(chunk))
        assert framer.buffered <= max_line, (framer.buffered, max_line)
    expected = reference_lines(stream, max_line)
    assert got == expected, (stream, cuts, max_line, got, expected)
    assert framer.failed == (bool(got) and isinstance(got[-1], Overflow))
    return got


def check_request(line: bytes) -> Envelope | Rejected:
    parsed = parse_request(line)
    if isinstance(parsed, Rejected):
        err = parsed.error
        assert err.kind in (ErrorKind.PARSE_ERROR, ErrorKind.INVALID_REQUEST), err.kind
        assert err.message
        assert len(err.message) <= MAX_ERROR_MESSAGE, len(err.message)
        rid = parsed.request_id
        assert rid is None or (isinstance(rid, int | str) and not isinstance(rid, bool))
        try:
            value = msgspec.json.decode(line)
        except msgspec.ValidationError:
            # A number out of range stops msgspec's untyped decoder before it reaches the rest
            # of the line, which may be valid (invalid_request) or malformed later (parse_error).
            assert err.kind in (ErrorKind.INVALID_REQUEST, ErrorKind.PARSE_ERROR), (line, err)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            assert err.kind == ErrorKind.PARSE_ERROR, (line, err)
        else:
            assert err.kind == ErrorKind.INVALID_REQUEST, (line, err)
            if not parsed.answer:
                assert isinstance(value, dict) and "id" not in value
        # The rejection encodes as a reply line (what the server writes back).
        msgspec.json.encode(err.to_object())
    else:
        assert isinstance(parsed, Envelope)
        assert isinstance(parsed.method, str)
        assert parsed.jsonrpc in (msgspec.UNSET, "2.0")
        assert parsed.id is msgspec.UNSET or (
            isinstance(parsed.id, int | str) and not isinstance(parsed.id, bool)
        )
        try:
            value = msgspec.json.decode(line)
        except UnicodeDecodeError:
            return parsed  # a bad byte inside a member nobody reads: skipped, as msgspec does
        assert isinstance(value, dict) and value["method"] == parsed.method
    return parsed


# --------------------------------------------------------------------------- SSE

_EOL = re.compile(rb"\r\n|\r|\n")


def reference_sse(stream: bytes) -> list[SSEEvent]:
    """WHATWG event-stream interpretation of a whole stream, then end of stream (an event
    whose lines all ended is dispatched; an unfinished last line is a cut stream)."""
    *complete, tail = _EOL.split(stream)
    events: list[SSEEvent] = []
    data: list[str] = []
    etype = ""
    last_id = ""
    retry: int | None = None

    def dispatch() -> None:
        nonlocal data, etype
        if data:
            events.append(SSEEvent("\n".join(data), etype or "message", last_id, retry))
        data = []
        etype = ""

    for i, raw in enumerate(complete):
        line = raw.decode("utf-8", errors="replace")
        if i == 0:
            line = line.removeprefix("\ufeff")
        if line == "":
            dispatch()
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            etype = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    if tail == b"":
        dispatch()
    return events


def decode_sse(stream: bytes, cuts: Sequence[int], bound: int) -> tuple[list[SSEEvent], bool]:
    """Feed the real decoder at the cuts, then close; (events, overflowed)."""
    decoder = SSEDecoder(bound)
    got: list[SSEEvent] = []
    try:
        for chunk in chunks_at(stream, cuts):
            got.extend(decoder.feed(chunk))
    except SSEOverflowError as exc:
        got.extend(exc.events)
        assert decoder.failed
        assert decoder.close() == []
        return got, True
    got.extend(decoder.close())
    return got, False


def check_sse(stream: bytes, cuts: Sequence[int], bound: int | None = None) -> list[SSEEvent]:
    expected = reference_sse(stream)
    got, overflowed = decode_sse(stream, cuts, bound or max(1, 2 * len(stream)))
    if bound is None:
        assert not overflowed
        assert got == expected, (stream, cuts, got, expected)
    else:
        # A bound may cut the stream short, never change or invent an event.
        assert got == expected[: len(got)], (stream, cuts, bound, got, expected)
        if not overflowed:
            assert got == expected
    return got
