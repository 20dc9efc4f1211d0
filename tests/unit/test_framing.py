"""The NDJSON framer and the request parser, fed whole, byte by byte, and at random splits."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from codexctl.protocol import Envelope, ErrorKind
from codexd.rpc.envelope import Rejected, parse_request
from codexd.rpc.framing import LineFramer, Overflow


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[bytes | Overflow]:
    out: list[bytes | Overflow] = []
    for c in chunks:
        out.extend(framer.feed(c))
    return out


def test_lines_whole_and_byte_by_byte() -> None:
    data = b'{"a":1}\n\n  \n{"b":2}\r\n{"c":'
    assert LineFramer(100).feed(data) == [b'{"a":1}', b'{"b":2}\r']
    framer = LineFramer(100)
    assert feed_all(framer, [bytes([b]) for b in data]) == [b'{"a":1}', b'{"b":2}\r']
    assert framer.buffered == len(b'{"c":')


def test_overflow_on_a_complete_line_and_on_an_unfinished_one() -> None:
    f = LineFramer(4)
    assert f.feed(b"1234\n12345\n1\n") == [b"1234", Overflow(4)]
    assert f.failed
    assert f.feed(b"1\n") == []
    g = LineFramer(4)
    assert g.feed(b"123") == []
    assert g.feed(b"45") == [Overflow(4)]
    assert g.buffered == 0


@given(st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=20), st.data())
def test_any_split_gives_the_same_lines(lines: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    expected = [line for line in lines if line.strip()]
    assert feed_all(LineFramer(64), chunks) == expected


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_parser(line: bytes) -> None:
    parsed = parse_request(line)
    if isinstance(parsed, Rejected):
        assert parsed.error.kind in (ErrorKind.PARSE_ERROR, ErrorKind.INVALID_REQUEST)
        assert parsed.error.message
        assert parsed.request_id is None or isinstance(parsed.request_id, int | str)
    else:
        assert isinstance(parsed, Envelope)
        assert isinstance(parsed.method, str)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=10,
    )
)
def test_arbitrary_json_values_yield_a_request_or_a_precise_error(value: object) -> None:
    parsed = parse_request(msgspec.json.encode(value))
    if isinstance(parsed, Rejected):
        assert parsed.error.kind == ErrorKind.INVALID_REQUEST
    else:
        assert isinstance(value, dict) and isinstance(value.get("method"), str)


def test_rejections() -> None:
    assert parse_request(b"{").error.kind == ErrorKind.PARSE_ERROR  # type: ignore[union-attr]
    batch = parse_request(b'[{"id":1,"method":"x"}]')
    assert isinstance(batch, Rejected) and "batch" in batch.error.message
    bad_version = parse_request(b'{"jsonrpc":"1.0","method":"x"}')
    assert isinstance(bad_version, Rejected) and not bad_version.answer
    ok = parse_request(b'{"id":"q","method":"daemon/ping","params":{"a":[1]}}')
    assert isinstance(ok, Envelope) and ok.id == "q"
    assert isinstance(ok.params, msgspec.Raw) and bytes(ok.params) == b'{"a":[1]}'
