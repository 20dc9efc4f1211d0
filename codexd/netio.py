"""Writing to a socket without anyio's two trips through the event loop per `send`.

`await stream.send()` on anyio's asyncio socket stream passes a cancel checkpoint and a
shielded yield after the write: two loop turns per write, where a write to an idle socket
needs none. `DirectWriter.send` writes at once when that cannot reorder or lose bytes:

- a stream over an asyncio transport (TCP, or a socket handed in): only while the
  transport's buffer is empty, the bytes go to the transport, which sends what the socket
  takes; if it had to queue the rest, `send` waits for that to drain exactly as
  `stream.send` does (anyio pauses on any queued byte), so closing the stream afterwards
  (which aborts the transport) never drops a response's tail;
- anyio's own Unix socket stream (no transport, nothing queued between writes): straight
  to the socket, and what it did not take goes through `stream.send`.

`send_nowait` is the same first step without the wait, for a writer that must not await
(the gateway writes a job's events as the job emits them): it says how much it took, and the
caller sends the rest with `send` before anything else.
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
    """Writes for one socket stream, used by one writer at a time."""

    __slots__ = ("_raw", "_stream", "_transport")

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self._stream = stream
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

    async def send(self, data: bytes) -> None:
        """Like `stream.send(data)`: returns once the kernel has every byte."""
        transport = self._transport
        if transport is not None:
            if transport.is_closing() or transport.get_write_buffer_size():
                await self._stream.send(data)
                return
            transport.write(data)
            if transport.get_write_buffer_size():
                await self._stream.send(b"")  # waits until the queued rest is written
            return
        sent = self._write_raw(data)
        if sent < len(data):
            await self._stream.send(data[sent:] if sent else data)

    def send_nowait(self, data: bytes) -> int:
        """Hand over at once what can go without passing bytes queued before: how many of
        `data`'s bytes were taken (on a transport all or none; on a socket what it took).
        What the transport queued is drained by the next `send` or by `drain`."""
        transport = self._transport
        if transport is not None:
            if transport.is_closing() or transport.get_write_buffer_size():
                return 0
            transport.write(data)
            return len(data)
        return self._write_raw(data)

    async def drain(self) -> None:
        """Return once the kernel has every byte handed over (at once when it has them)."""
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size():
            await self._stream.send(b"")

    def _write_raw(self, data: bytes) -> int:
        if self._raw is None:
            return 0
        try:
            return self._raw.send(data)
        except OSError:  # would block, or an error the stream meets and reports
            return 0
