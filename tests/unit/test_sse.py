"""SSEDecoder: every case fed whole, byte by byte, and at hypothesis-chosen splits."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codexd.upstream.sse import SSEDecoder, SSEEvent, SSEOverflowError

BIG = 1 << 16


def run(chunks: list[bytes], max_event_bytes: int = BIG) -> tuple[list[SSEEvent], bool]:
    """All events the decoder yields for `chunks`, and whether it overflowed."""
    dec = SSEDecoder(max_event_bytes)
    out: list[SSEEvent] = []
    for chunk in chunks:
        try:
            out += dec.feed(chunk)
        except SSEOverflowError as exc:
            out += exc.events
            return out, True
    out += dec.close()
    return out, False


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, prev = [], 0
    for p in points:
        pieces.append(data[prev:p])
        prev = p
    pieces.append(data[prev:])
    return pieces


FEEDS = [whole, bytewise]

CASES: list[tuple[str, bytes, list[SSEEvent]]] = [
    ("one event", b"data: hello\n\n", [SSEEvent(data="hello")]),
    ("multi-line data joins with LF", b"data: a\ndata: b\ndata:\n\n", [SSEEvent(data="a\nb\n")]),
    (
        "event type and id",
        b"event: response.created\nid: 7\ndata: {}\n\n",
        [SSEEvent(data="{}", event="response.created", id="7")],
    ),
    (
        "id persists, event type does not",
        b"event: x\nid: 1\ndata: a\n\ndata: b\n\n",
        [SSEEvent(data="a", event="x", id="1"), SSEEvent(data="b", id="1")],
    ),
    ("id with NUL is ignored", b"id: a\x00b\ndata: x\n\n", [SSEEvent(data="x")]),
    (
        "retry digits kept, others ignored",
        b"retry: 1500\ndata: a\n\nretry: 1.5\ndata: b\n\n",
        [SSEEvent(data="a", retry=1500), SSEEvent(data="b", retry=1500)],
    ),
    ("comments are ignored", b": keep-alive\n\n: ping\ndata: x\n\n", [SSEEvent(data="x")]),
    ("CR line ends", b"data: a\rdata: b\r\r", [SSEEvent(data="a\nb")]),
    ("CRLF line ends", b"data: a\r\ndata: b\r\n\r\n", [SSEEvent(data="a\nb")]),
    ("mixed line ends", b"data: a\r\ndata: b\rdata: c\n\r\n", [SSEEvent(data="a\nb\nc")]),
    (
        "U+2028, U+2029, U+0085 and \\x1c stay inside a line",
        'data: {"delta":"a\u2028b\u2029c\x85d\x1ce"}\n\n'.encode(),
        [SSEEvent(data='{"delta":"a\u2028b\u2029c\x85d\x1ce"}')],
    ),
    ("no space after colon", b"data:x\n\n", [SSEEvent(data="x")]),
    ("only one leading space is removed", b"data:  x\n\n", [SSEEvent(data=" x")]),
    ("field without colon", b"data\n\n", [SSEEvent(data="")]),
    (
        "blank line without data dispatches nothing",
        b"event: x\n\n\n\ndata: y\n\n",
        [SSEEvent(data="y")],
    ),
    ("unknown fields are ignored", b"foo: bar\ndata: x\n\n", [SSEEvent(data="x")]),
    ("leading BOM is dropped", b"\xef\xbb\xbfdata: x\n\n", [SSEEvent(data="x")]),
    ("invalid UTF-8 becomes U+FFFD", b"data: a\xffb\n\n", [SSEEvent(data="a\ufffdb")]),
    ("multibyte UTF-8 across the stream", "data: żółw 🐢\n\n".encode(), [SSEEvent(data="żółw 🐢")]),
    ("missing final blank line still dispatches", b"data: [DONE]\n", [SSEEvent(data="[DONE]")]),
    ("a cut last line is discarded", b'data: a\n\ndata: {"partial', [SSEEvent(data="a")]),
]


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(("name", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cases(feed, name: str, data: bytes, expected: list[SSEEvent]) -> None:
    assert run(feed(data)) == (expected, False)


@settings(max_examples=300)
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0, max_value=80)))
def test_cases_at_any_split(case: tuple[str, bytes, list[SSEEvent]], cuts: list[int]) -> None:
    _, data, expected = case
    assert run(split_at(data, cuts)) == (expected, False)


def test_responses_stream_with_real_field_names() -> None:
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1"}},
        {"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hel"},
        {"type": "response.output_text.delta", "sequence_number": 2, "delta": "lo\u2028!"},
    ]
    raw = b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n".encode()
        for e in events
    )
    for feed in FEEDS:
        got, overflowed = run(feed(raw))
        assert not overflowed
        assert [json.loads(e.data) for e in got] == events
        assert [e.event for e in got] == [e["type"] for e in events]


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("feed", FEEDS)
def test_overflow_of_accumulated_data_keeps_earlier_events(feed) -> None:
    data = b"data: ok\n\n" + b"data: 0123456789\n" * 10 + b"\n"
    events, overflowed = run(feed(data), max_event_bytes=64)
    assert overflowed
    assert events == [SSEEvent(data="ok")]


@pytest.mark.parametrize("feed", FEEDS)
def test_overflow_of_one_long_line(feed) -> None:
    events, overflowed = run(feed(b": " + b"x" * 100 + b"\n\ndata: late\n\n"), max_event_bytes=50)
    assert overflowed
    assert events == []


def test_an_unterminated_line_past_the_bound_overflows_before_its_end() -> None:
    dec = SSEDecoder(16)
    dec.feed(b"data: " + b"x" * 10)
    with pytest.raises(SSEOverflowError) as info:
        dec.feed(b"x")
    assert info.value.limit == 16
    assert "16 bytes" in str(info.value)


def test_a_failed_decoder_stays_failed() -> None:
    dec = SSEDecoder(8)
    with pytest.raises(SSEOverflowError):
        dec.feed(b"data: 0123456789")
    assert dec.failed
    with pytest.raises(SSEOverflowError):
        dec.feed(b"\n\n")
    assert dec.close() == []


def test_keepalive_comments_between_events_never_accumulate() -> None:
    dec = SSEDecoder(32)
    for _ in range(1000):
        assert dec.feed(b": keep-alive\n\n") == []
    assert dec.feed(b"data: x\n\n") == [SSEEvent(data="x")]


def test_the_bound_counts_an_event_not_the_stream() -> None:
    dec = SSEDecoder(32)
    for i in range(1000):
        assert dec.feed(f"data: {i:020d}\n\n".encode()) == [SSEEvent(data=f"{i:020d}")]


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SSEDecoder(0)


# --------------------------------------------------------------------------- properties

SSE_ALPHABET = st.sampled_from(
    [
        b"data:",
        b"data: ",
        b"event: ",
        b"id:",
        b"retry: 12",
        b":",
        b"\r",
        b"\n",
        b"\r\n",
        b"x",
        b" ",
        b"\x00",
        b"\xff",
        "\u2028".encode(),
        b"\xef\xbb\xbf",
        b"[DONE]",
    ]
)


@settings(max_examples=500)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400)), bound=st.integers(1, 64))
def test_arbitrary_bytes_never_crash_and_splits_do_not_matter(
    data: bytes, cuts: list[int], bound: int
) -> None:
    assert run(split_at(data, cuts), bound) == run([data], bound)


@settings(max_examples=500)
@given(
    parts=st.lists(SSE_ALPHABET, max_size=60),
    cuts=st.lists(st.integers(0, 300)),
    bound=st.sampled_from([8, 24, BIG]),
)
def test_sse_like_input_splits_do_not_matter(
    parts: list[bytes], cuts: list[int], bound: int
) -> None:
    data = b"".join(parts)
    expected = run([data], bound)
    assert run(split_at(data, cuts), bound) == expected
    assert run(bytewise(data), bound) == expected


@settings(max_examples=200)
@given(
    payloads=st.lists(st.text(max_size=30), max_size=8), eol=st.sampled_from(["\n", "\r", "\r\n"])
)
def test_any_text_round_trips(payloads: list[str], eol: str) -> None:
    # A data line holds any text except CR/LF: JSON encoding guarantees that upstream.
    payloads = [json.dumps(p, ensure_ascii=False) for p in payloads]
    raw = "".join(f"data: {p}{eol}{eol}" for p in payloads).encode()
    events, overflowed = run(bytewise(raw))
    assert not overflowed
    assert [e.data for e in events] == payloads
