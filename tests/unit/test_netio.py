"""DirectWriter: writes without a loop turn, never ahead of queued bytes, never losing any."""

from __future__ import annotations

import contextlib
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


async def test_a_transport_stream_send_returns_once_the_kernel_has_every_byte() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    writer_side = await anyio.abc.SocketStream.from_socket(ours)  # type: ignore[attr-defined]
    reader_side = await anyio.abc.SocketStream.from_socket(theirs)  # type: ignore[attr-defined]
    async with reader_side:
        direct = DirectWriter(writer_side)
        await direct.send(b"first|")
        assert await read_exactly(reader_side, 6) == b"first|"

        big = os.urandom(4 * 1024 * 1024)  # more than the socket takes at once
        received = b""
        async with anyio.create_task_group() as tg:

            async def write_then_close() -> None:
                await direct.send(b"|head|")
                await direct.send(big)
                await writer_side.aclose()  # aborts the transport: anything queued is lost

            tg.start_soon(write_then_close)
            with anyio.fail_after(5), contextlib.suppress(anyio.EndOfStream):
                while True:  # to the writer's close
                    received += await reader_side.receive()
        assert received == b"|head|" + big


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
                big = os.urandom(4 * 1024 * 1024)
                async with anyio.create_task_group() as writers:
                    writers.start_soon(direct.send, b"hello" + big)
                    assert await read_exactly(client, 5 + len(big)) == b"hello" + big
            tg.cancel_scope.cancel()


async def test_send_nowait_takes_nothing_while_bytes_wait_and_never_reorders() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    writer_side = await anyio.abc.SocketStream.from_socket(ours)  # type: ignore[attr-defined]
    reader_side = await anyio.abc.SocketStream.from_socket(theirs)  # type: ignore[attr-defined]
    async with reader_side, writer_side:
        direct = DirectWriter(writer_side)
        assert direct.send_nowait(b"one|") == 4  # an idle socket takes it at once
        big = os.urandom(4 * 1024 * 1024)  # more than the socket takes: the rest is queued
        assert direct.send_nowait(big) == len(big)
        assert direct.send_nowait(b"|two") == 0  # queued bytes go first: nothing taken
        received = b""
        async with anyio.create_task_group() as tg:

            async def write_rest() -> None:
                await direct.send(b"|two")
                await direct.drain()

            tg.start_soon(write_rest)
            received = await read_exactly(reader_side, 4 + len(big) + 4)
        assert received == b"one|" + big + b"|two"
