"""Byte-level fuzzing of the two decoders that read untrusted bytes: the control socket's
NDJSON framer + request parser and the upstream SSE decoder. Each input is compared
with a naive model written from the spec, fed at arbitrary chunk boundaries."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ_EXAMPLES
from tests.fuzz.oracles import check_framer, check_request, check_sse, reference_sse

pytestmark = pytest.mark.fuzz

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

cuts = st.lists(st.integers(0, 2000), max_size=12)

# JSON values and near-requests: the ids, methods and params a confused client sends.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", "", None, 2.0]) | json_values,
        "id": st.integers(-(2**70), 2**70) | st.text(max_size=10) | json_values,
        "method": st.sampled_from(["daemon/status", "job/submit", "x", ""]) | json_values,
        "params": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
    },
)


def encode_loosely(value: object) -> bytes:
    """Python's json accepts big ints; it is the encoder a careless client may use."""
    return json.dumps(value).encode()


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with bytes flipped, cut, duplicated or spliced in."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b"\n", b"\r", b"\x00", b'"', b"{", b"]", b"\xff", b"\xc3", b" "])
            )
        else:
            data[pos:pos] = data[max(0, pos - 6) : pos]
    return bytes(data)


request_lines = (
    st.binary(max_size=300)
    | requests.map(encode_loosely)
    | mutated(requests.map(encode_loosely))
    | json_values.map(encode_loosely)
)


# --------------------------------------------------------------------------- NDJSON


@FUZZ
@given(
    lines=st.lists(request_lines | st.sampled_from([b"", b" ", b"\r", b"\t \r"]), max_size=12),
    tail=st.binary(max_size=40),
    cuts=cuts,
    max_line=st.integers(1, 400),
)
def test_framer_matches_the_model_at_any_split(
    lines: list[bytes], tail: bytes, cuts: list[int], max_line: int
) -> None:
    stream = b"\n".join(lines) + b"\n" + tail
    check_framer(stream, cuts, max_line)


@FUZZ
@given(stream=st.binary(max_size=600), cuts=cuts, max_line=st.integers(1, 64))
def test_framer_on_raw_bytes(stream: bytes, cuts: list[int], max_line: int) -> None:
    check_framer(stream, cuts, max_line)


@FUZZ
@given(line=request_lines)
def test_every_line_is_a_request_or_a_precise_rejection(line: bytes) -> None:
    check_request(line)


def test_a_huge_bad_line_gets_a_short_message() -> None:
    # What the server echoes back never grows with what the client sent.
    for line in (b'{"method": ' + b"1" * 100_000 + b"}", b"[" * 50_000, b'{"id": "' + b"x" * 10**5):
        check_request(line)


def test_framed_lines_of_a_valid_stream_parse_back() -> None:
    reqs = [{"jsonrpc": "2.0", "id": i, "method": "daemon/status"} for i in range(50)]
    stream = b"".join(msgspec.json.encode(r) + b"\n" for r in reqs)
    lines = check_framer(stream, list(range(0, len(stream), 7)), 1 << 20)
    ids = [check_request(line).id for line in lines if isinstance(line, bytes)]  # type: ignore[union-attr]
    assert ids == list(range(50))


# --------------------------------------------------------------------------- SSE

sse_values = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]) | st.sampled_from(["\u2028", "\x85", ":"]),
    max_size=20,
)
sse_field_lines = st.one_of(
    st.tuples(
        st.sampled_from(["data", "event", "id", "retry", "comment", "x", ""]), sse_values
    ).map(lambda fv: f"{fv[0]}:{fv[1]}" if fv[0] != "comment" else f":{fv[1]}"),
    st.sampled_from(["data", "data:", "data: ", "retry: 10", "retry:5", "id: \0", "\ufeffdata:x"]),
    st.just(""),
)
sse_eols = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    parts: list[str] = ["\ufeff"] if draw(st.booleans()) else []
    for line in draw(st.lists(sse_field_lines, max_size=25)):
        parts.append(line + draw(sse_eols))
    if draw(st.booleans()):
        parts.append(draw(sse_field_lines))  # an unfinished last line: a cut stream
    raw = "".join(parts).encode()
    if draw(st.booleans()):
        raw = draw(mutated(st.just(raw)))
    return raw


@FUZZ
@given(stream=sse_streams(), cuts=cuts)
def test_sse_matches_the_model_at_any_split(stream: bytes, cuts: list[int]) -> None:
    check_sse(stream, cuts)


@FUZZ
@given(stream=st.binary(max_size=500), cuts=cuts)
def test_sse_on_raw_bytes(stream: bytes, cuts: list[int]) -> None:
    check_sse(stream, cuts)


@FUZZ
@given(stream=sse_streams() | st.binary(max_size=300), cuts=cuts, bound=st.integers(1, 80))
def test_sse_bound_cuts_short_but_never_changes_an_event(
    stream: bytes, cuts: list[int], bound: int
) -> None:
    check_sse(stream, cuts, bound)


def test_model_sanity() -> None:
    # The model itself, on the spec's own examples.
    assert [e.data for e in reference_sse(b"data: YHOO\ndata: +2\ndata: 10\n\n")] == [
        "YHOO\n+2\n10"
    ]
    assert reference_sse(b"data:test\n\ndata: test\n\n")[0] == reference_sse(b"data: test\n\n")[0]
    assert reference_sse(b"data: cut") == []
    assert [e.data for e in reference_sse(b"data: a\r\ndata: b")] == []
    assert [e.data for e in reference_sse(b"data: a\r\n")] == ["a"]
