"""Server-sent events without I/O: bytes in, events out (WHATWG HTML, "event stream").

Lines end at CR, LF or CRLF and nowhere else: `str.splitlines()` would also split on U+2028,
U+0085 and friends, which may stand raw inside a JSON `delta`. Each line is decoded as UTF-8
on its own (a line terminator is never part of a multi-byte sequence).

Memory is bounded by `max_event_bytes`: the field lines of the event being built plus the
unfinished line may not exceed it. Past the bound `feed` raises `SSEOverflowError` and the
decoder stays failed; the shell turns that into `stream_error`.
"""

from __future__ import annotations

import re
from typing import NoReturn

import msgspec

_EOL = re.compile(rb"[\r\n]")
_CR = 0x0D
_LF = 0x0A


class SSEEvent(msgspec.Struct, frozen=True):
    """One dispatched event. `id` and `retry` are the last ones seen so far (they persist
    across events, per spec)."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEOverflowError(Exception):
    """An event (or a line) grew past `max_event_bytes`.

    `events` holds the events completed by the same `feed` call before the overflow, so that
    nothing already received is lost.
    """

    def __init__(self, limit: int, events: list[SSEEvent]) -> None:
        super().__init__(f"server-sent event larger than {limit} bytes")
        self.limit = limit
        self.events = events


class SSEDecoder:
    __slots__ = (
        "_buf",
        "_data",
        "_event_bytes",
        "_event_type",
        "_failed",
        "_last_id",
        "_max",
        "_retry",
        "_scanned",
        "_seen_first_line",
        "_skip_lf",
    )

    def __init__(self, max_event_bytes: int) -> None:
        if max_event_bytes <= 0:
            raise ValueError("max_event_bytes must be positive")
        self._max = max_event_bytes
        self._buf = bytearray()
        self._scanned = 0
        self._skip_lf = False
        self._seen_first_line = False
        self._failed = False
        self._data: list[str] = []
        self._event_type = ""
        self._last_id = ""
        self._retry: int | None = None
        self._event_bytes = 0

    @property
    def failed(self) -> bool:
        return self._failed

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by `chunk`, in order. Raises `SSEOverflowError` past the bound."""
        if self._failed:
            raise SSEOverflowError(self._max, [])
        out: list[SSEEvent] = []
        if not chunk:
            return out
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        buf = self._buf
        buf += chunk
        if _CR not in chunk:
            # Lines end only at LF here (what is left of earlier chunks holds no line end):
            # one split instead of a search per line.
            last = buf.rfind(b"\n", self._scanned)
            if last >= 0:
                lines = bytes(buf[:last]).split(b"\n")
                del buf[: last + 1]
                for raw in lines:
                    self._line(raw, out)
            self._scanned = len(buf)
            if self._event_bytes + len(buf) > self._max:
                self._fail(out)
            return out
        start = 0
        while True:
            m = _EOL.search(buf, self._scanned)
            if m is None:
                break
            end = m.start()
            if buf[end] == _CR:
                if end + 1 == len(buf):
                    self._skip_lf = True
                    after = end + 1
                else:
                    after = end + 2 if buf[end + 1] == _LF else end + 1
            else:
                after = end + 1
            self._line(bytes(buf[start:end]), out)
            start = after
            self._scanned = after
        if start:
            del buf[:start]
        self._scanned = len(buf)
        if self._event_bytes + len(buf) > self._max:
            self._fail(out)
        return out

    def close(self) -> list[SSEEvent]:
        """End of stream. An event whose lines all ended but which lacks the final blank line
        is still dispatched (servers that omit it exist); an unfinished last line means a cut
        stream, and the event it belongs to is discarded."""
        if self._failed:
            return []
        out: list[SSEEvent] = []
        if not self._buf:
            self._dispatch(out)
        self._buf = bytearray()
        self._scanned = 0
        self._reset_event()
        return out

    def _line(self, raw: bytes, out: list[SSEEvent]) -> None:
        if self._event_bytes + len(raw) > self._max:
            self._fail(out)
        line = raw.decode("utf-8", errors="replace")
        if not self._seen_first_line:
            self._seen_first_line = True
            line = line.removeprefix("\ufeff")
        if not line:
            self._dispatch(out)
            return
        if line[0] == ":":
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event_type = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        else:
            return
        self._event_bytes += len(raw)

    def _dispatch(self, out: list[SSEEvent]) -> None:
        if self._data:
            out.append(
                SSEEvent(
                    data="\n".join(self._data),
                    event=self._event_type or "message",
                    id=self._last_id,
                    retry=self._retry,
                )
            )
        self._reset_event()

    def _reset_event(self) -> None:
        self._data = []
        self._event_type = ""
        self._event_bytes = 0

    def _fail(self, out: list[SSEEvent]) -> NoReturn:
        self._failed = True
        self._buf = bytearray()
        self._reset_event()
        raise SSEOverflowError(self._max, out)

    def __repr__(self) -> str:
        state = "failed" if self._failed else f"{len(self._buf) + self._event_bytes} bytes pending"
        return f"<SSEDecoder max_event_bytes={self._max} {state}>"
