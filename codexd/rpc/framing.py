"""NDJSON framing without I/O: bytes in, complete lines out.

The shell reads from the socket and feeds; the framer never buffers more than `max_line`
bytes of an unfinished line, and remembers how far it searched so that a peer dripping a
byte at a time costs O(n), not O(n²).
"""

from __future__ import annotations

from typing import NamedTuple


class Overflow(NamedTuple):
    """A line longer than the bound: the connection must be answered -32600 and closed."""

    limit: int


class LineFramer:
    __slots__ = ("_buf", "_failed", "_max_line", "_scanned")

    def __init__(self, max_line: int) -> None:
        if max_line <= 0:
            raise ValueError("max_line must be positive")
        self._max_line = max_line
        self._buf = bytearray()
        self._scanned = 0
        self._failed = False

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | Overflow]:
        """Lines completed by `data`, in order, without their newline; empty lines skipped.

        After an `Overflow` the framer stays failed and returns nothing more.
        """
        if self._failed:
            return []
        out: list[bytes | Overflow] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, self._scanned))
            if nl < 0:
                break
            line_len = nl - start
            if line_len > self._max_line:
                return self._fail(out)
            line = bytes(buf[start:nl])
            start = nl + 1
            self._scanned = start
            if line.strip():
                out.append(line)
        if start:
            del buf[:start]
            self._scanned = 0
        if len(buf) > self._max_line:
            return self._fail(out)
        self._scanned = len(buf)
        return out

    def _fail(self, out: list[bytes | Overflow]) -> list[bytes | Overflow]:
        self._failed = True
        self._buf = bytearray()
        out.append(Overflow(self._max_line))
        return out

    def __repr__(self) -> str:
        state = "failed" if self._failed else f"{len(self._buf)} bytes pending"
        return f"<LineFramer max_line={self._max_line} {state}>"
