"""DirectWriter: writes without a loop turn, never ahead of bytes still queued."""

from __future__ import annotations

import os
import socket
import tempfile

import anyio
import anyio.abc
import pytest

from codexd.netio import DirectWriter

pytestmark = pytest.mark.anyio


async def read_exactly(stream: anyio.abc.SocketStream, n: int) -> bytes:
    buf = b""
    with anyio.fail_after(5):
        while len(buf) < n:
            buf += await stream.receive()
    return buf


async def test_a_transport_stream_is_written_directly_only_while_nothing_is_queued() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    writer_side = await anyio.abc.SocketStream.from_socket(ours)  # type: ignore[attr-defined]
    reader_side = await anyio.abc.SocketStream.from_socket(theirs)  # type: ignore[attr-defined]
    async with writer_side, reader_side:
        direct = DirectWriter(writer_side)
        assert direct.write_now(b"first|") == 6
        assert await read_exactly(reader_side, 6) == b"first|"

        big = os.urandom(4 * 1024 * 1024)  # more than the socket takes: the rest is queued
        assert direct.write_now(big) == len(big)
        assert direct.write_now(b"|tail") is None  # it would overtake the queued bytes
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer_side.send, b"|tail")
            received = await read_exactly(reader_side, len(big) + 5)
        assert received == big + b"|tail"
        assert direct.write_now(b"|again") == 6  # drained: direct again
        assert await read_exactly(reader_side, 6) == b"|again"


async def test_anyio_unix_streams_are_written_to_the_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        listener = await anyio.create_unix_listener(path)
        async with listener, anyio.create_task_group() as tg:
            accepted: list[anyio.abc.SocketStream] = []
            ready = anyio.Event()

            async def accept(stream: anyio.abc.SocketStream) -> None:
                accepted.append(stream)
                ready.set()
                await anyio.sleep_forever()  # held open until the test ends

            tg.start_soon(listener.serve, accept)
            client = await anyio.connect_unix(path)
            async with client:
                await ready.wait()
                direct = DirectWriter(accepted[0])
                assert direct.write_now(b"hello") == 5
                assert await read_exactly(client, 5) == b"hello"
            tg.cancel_scope.cancel()
