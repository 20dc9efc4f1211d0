"""Writing to a socket without anyio's two trips through the event loop per `send`.

`await stream.send()` on anyio's asyncio socket stream passes a cancel checkpoint and a
shielded yield after the write: two loop turns per write, where a write to an idle socket
needs none. `write_now` writes at once when that cannot reorder bytes:

- a stream over an asyncio transport (TCP, or a socket handed in): the bytes go to the
  transport, which sends what the socket takes and buffers the rest in order; only when its
  buffer is empty, so that flow control stays with `stream.send` (which waits while the
  transport is paused) once a client reads slowly;
- anyio's own Unix socket stream (no transport, nothing buffered between writes): straight
  to the socket; a partial write returns the count and the caller sends the rest.
"""

from __future__ import annotations

import socket
from typing import Protocol

import anyio.abc


class _Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


_TRANSPORT_METHODS = ("write", "get_write_buffer_size", "is_closing")


class DirectWriter:
    """Writes for one socket stream, used by one writer at a time. `write_now` returns how
    many bytes were taken (0: none), or None when the bytes must go through `stream.send`."""

    __slots__ = ("_raw", "_transport")

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        # anyio's asyncio socket stream keeps its transport here; a stream without one (or a
        # future anyio that moves it) is written through a real socket, or not directly.
        transport = getattr(stream, "_transport", None)
        self._transport: _Transport | None = None
        self._raw: socket.socket | None = None
        if all(callable(getattr(transport, name, None)) for name in _TRANSPORT_METHODS):
            self._transport = transport
            return
        try:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        except anyio.TypedAttributeLookupError:
            return
        if isinstance(raw, socket.socket):
            self._raw = raw

    def write_now(self, data: bytes) -> int | None:
        transport = self._transport
        if transport is not None:
            if transport.is_closing() or transport.get_write_buffer_size():
                return None
            transport.write(data)
            return len(data)
        if self._raw is None:
            return None
        try:
            return self._raw.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return None  # the stream meets the same error and reports it
