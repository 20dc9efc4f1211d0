"""The gateway's HTTP/1.1 shell (`serve_http`) on a real Unix socket pair."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from codexd.config.schema import DEFAULT_GATEWAY_HEAD_TIMEOUT_S, DEFAULT_GATEWAY_IDLE_TIMEOUT_S
from codexd.gateway.http import MAX_PIPELINED_BYTES, Refusal, Request, Responder, serve_http

pytestmark = pytest.mark.anyio


async def _internal_error(responder: Responder) -> None:
    await responder.send(500, b"{}")


@asynccontextmanager
async def served(handler: object, **options: Any) -> AsyncIterator[anyio.abc.SocketStream]:
    """`serve_http(handler)` on one end of a socket pair; yields the client end."""
    options.setdefault("head_timeout", DEFAULT_GATEWAY_HEAD_TIMEOUT_S)
    options.setdefault("idle_timeout", DEFAULT_GATEWAY_IDLE_TIMEOUT_S)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = await anyio.abc.SocketStream.from_socket(ours)  # type: ignore[attr-defined]
    client = await anyio.abc.SocketStream.from_socket(theirs)  # type: ignore[attr-defined]
    async with anyio.create_task_group() as tg:

        async def serve() -> None:
            async with server:
                await serve_http(server, handler, on_error=_internal_error, **options)  # type: ignore[arg-type]

        tg.start_soon(serve)
        async with client:
            yield client
        tg.cancel_scope.cancel()


def post(path: str, body: bytes = b"{}") -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


async def read_responses(client: anyio.abc.SocketStream, count: int) -> list[bytes]:
    """`count` whole responses with Content-Length bodies, as raw bytes each."""
    buf = b""
    out: list[bytes] = []
    while len(out) < count:
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end].lower()
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(buf) >= end + 4 + length:
                    out.append(buf[: end + 4 + length])
                    buf = buf[end + 4 + length :]
                    break
            buf += await client.receive()
    return out


async def echo_path(request: Request, responder: Responder) -> None:
    await responder.send(200, request.path.encode(), content_type="text/plain")


async def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    async with served(echo_path) as client:
        await client.send(post("/one"))
        (first,) = await read_responses(client, 1)
        assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"/one")
        await client.send(post("/two") + post("/three"))
        second, third = await read_responses(client, 2)
        assert second.endswith(b"/two") and third.endswith(b"/three")


class Forever:
    """A handler that never answers and tells when it started and when it was cancelled."""

    def __init__(self) -> None:
        self.started, self.cancelled = anyio.Event(), anyio.Event()

    async def __call__(self, request: Request, responder: Responder) -> None:
        self.started.set()
        try:
            await anyio.sleep_forever()  # never answers; only the client can end it
        finally:
            self.cancelled.set()


async def test_a_client_that_goes_away_cancels_its_handler() -> None:
    forever = Forever()

    async with served(forever) as client:
        await client.send(post("/v1/chat/completions"))
        await forever.started.wait()
        await client.send_eof()
        with anyio.fail_after(2):
            await forever.cancelled.wait()


async def test_pipelining_past_the_bound_while_a_handler_runs_closes_the_connection() -> None:
    forever = Forever()

    async with served(forever) as client:
        await client.send(post("/v1/responses"))
        await forever.started.wait()
        filler = b"x" * 8192
        sent = 0
        with anyio.fail_after(5):
            while not forever.cancelled.is_set() and sent <= MAX_PIPELINED_BYTES + len(filler):
                await client.send(filler)
                sent += len(filler)
            await forever.cancelled.wait()
        assert sent > MAX_PIPELINED_BYTES - len(filler)
        assert await read_to_eof(client) == b""  # closed without a response


async def test_a_streamed_response_sends_its_head_with_the_first_bytes() -> None:
    head_made, peeked = anyio.Event(), anyio.Event()

    async def stream(request: Request, responder: Responder) -> None:
        responder.start(200, [("content-type", "text/event-stream")])
        head_made.set()
        await peeked.wait()
        await responder.write(b"data: 1\n\n")
        await responder.finish(b"data: [DONE]\n\n")

    async with served(stream) as client:
        await client.send(post("/v1/responses"))
        await head_made.wait()
        fd = client.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        with (
            socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM) as raw,
            pytest.raises(BlockingIOError),  # nothing was written yet
        ):
            raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        peeked.set()
        buf = b""
        with anyio.fail_after(2):
            while not buf.endswith(b"0\r\n\r\n"):
                buf += await client.receive()
        head, _, body = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"transfer-encoding: chunked" in head.lower()
        assert body == b"9\r\ndata: 1\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


async def test_an_oversized_body_is_413_and_bad_http_is_400() -> None:
    async with served(echo_path, max_body_bytes=10) as client:
        await client.send(post("/v1/responses", b"x" * 11))
        (reply,) = await read_responses(client, 1)
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert b"the request body is over 10 bytes" in reply
    async with served(echo_path) as client:
        await client.send(b"NOT HTTP\r\n\r\n")
        (reply,) = await read_responses(client, 1)
        assert reply.startswith(b"HTTP/1.1 400 ") and b"not valid HTTP/1.1" in reply


async def read_to_eof(client: anyio.abc.SocketStream) -> bytes:
    buf = b""
    with anyio.fail_after(5):
        try:
            while True:
                buf += await client.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return buf


async def test_connection_close_and_http10_clients_get_one_response_and_a_close() -> None:
    async with served(echo_path) as client:
        await client.send(
            b"POST /bye HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        )
        reply = await read_to_eof(client)
        assert reply.startswith(b"HTTP/1.1 200 ") and b"\r\nconnection: close\r\n" in reply
        assert reply.endswith(b"/bye")
    async with served(echo_path) as client:
        await client.send(b"GET /old HTTP/1.0\r\n\r\n")
        reply = await read_to_eof(client)
        assert b"\r\nconnection: close\r\n" in reply and reply.endswith(b"/old")


async def test_an_http10_client_gets_a_stream_without_chunked_framing() -> None:
    async def stream(request: Request, responder: Responder) -> None:
        responder.start(200, [("content-type", "text/event-stream")])
        await responder.write(b"data: 1\n\n")
        await responder.finish(b"data: [DONE]\n\n")

    async with served(stream) as client:
        await client.send(b"POST /v1/responses HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}")
        head, _, body = (await read_to_eof(client)).partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower() and b"connection: close" in head
        assert body == b"data: 1\n\ndata: [DONE]\n\n"


async def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body() -> None:
    async with served(echo_path) as client:
        await client.send(
            b"POST /big HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n"
        )
        with anyio.fail_after(2):
            interim = await client.receive()
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send(b"hello")
        (reply,) = await read_responses(client, 1)
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"/big")


async def test_chunked_request_bodies_are_read_and_bounded() -> None:
    bodies: list[bytes] = []

    async def record(request: Request, responder: Responder) -> None:
        bodies.append(request.body)
        await responder.send(200, b"{}")

    chunked = b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    async with served(record, max_body_bytes=10) as client:
        await client.send(chunked + b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        (reply,) = await read_responses(client, 1)
        assert reply.startswith(b"HTTP/1.1 200 ") and bodies == [b"abcdefg"]
        await client.send(chunked + b"6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n")
        reply = await read_to_eof(client)
        assert reply.startswith(b"HTTP/1.1 413 ") and b"over 10 bytes" in reply
        assert bodies == [b"abcdefg"]


async def test_an_oversized_head_is_431_and_a_head_request_gets_no_body() -> None:
    async with served(echo_path) as client:
        await client.send(b"GET /x HTTP/1.1\r\nhost: x\r\nbig: " + b"y" * 70_000 + b"\r\n\r\n")
        reply = await read_to_eof(client)
        assert reply.startswith(b"HTTP/1.1 431 ") and b"head is over 65536 bytes" in reply
    async with served(echo_path) as client:
        await client.send(b"HEAD /v1/models HTTP/1.1\r\nhost: x\r\n\r\n" + post("/after"))
        buf = b""
        with anyio.fail_after(2):
            while not buf.endswith(b"/after"):
                buf += await client.receive()
        first, _, rest = buf.partition(b"\r\n\r\n")
        assert b"content-length: 10" in first  # the length of the body a GET would get
        assert rest.startswith(b"HTTP/1.1 200 ")  # no body bytes between the two heads


async def test_a_good_request_then_garbage_is_answered_then_refused() -> None:
    async with served(echo_path) as client:
        await client.send(post("/good") + b"BAD REQUEST LINE\r\n\r\n")
        reply = await read_to_eof(client)
        first, second = reply.split(b"HTTP/1.1 400 ")
        assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"/good")
        assert b"not valid HTTP/1.1" in second


async def test_an_upgrade_request_is_answered_and_the_connection_closed() -> None:
    async with served(echo_path) as client:
        await client.send(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
            b"\x81\x85not http"
        )
        reply = await read_to_eof(client)
        assert reply.startswith(b"HTTP/1.1 200 ") and b"connection: close" in reply
        assert reply.endswith(b"/ws")


async def test_an_upgrade_handler_takes_the_connection_over_with_the_bytes_after_the_head() -> None:
    heard: list[bytes] = []

    async def echo_upgraded(request: Request, responder: Responder) -> None:
        assert request.upgrade is not None
        stream = await responder.switch_protocols([("upgrade", "echo")])
        data = request.upgrade  # what came in with the head
        while not data.endswith(b"bye"):
            data += await stream.receive()
        heard.append(data)
        await stream.send(b"heard:" + data)

    with anyio.fail_after(10):  # a hang guard: bytes the parser ate would never arrive
        async with served(echo_upgraded) as client:
            await client.send(
                b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n"
                b"early "
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += await client.receive()
            assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\n")
            await client.send(b"and bye")  # not HTTP: the handler reads it, not the parser
            reply = await read_to_eof(client)
    assert heard == [b"early and bye"]
    assert head.split(b"\r\n\r\n", 1)[1] + reply == b"heard:early and bye"


async def test_a_header_line_that_never_ends_is_431_not_memory() -> None:
    async with served(echo_path) as client:
        await client.send(b"GET /x HTTP/1.1\r\nhost: x\r\nx: ")
        sent = 0
        # The server refuses and closes while this is still sending: a send then fails.
        with anyio.fail_after(5), contextlib.suppress(anyio.BrokenResourceError, OSError):
            while sent < 4 * 1024 * 1024:  # never a line end
                await client.send(b"y" * 65536)
                sent += 65536
        reply = await read_to_eof(client)
        assert reply.startswith(b"HTTP/1.1 431 ")


async def test_pipelined_requests_wait_in_the_socket_past_the_queue_bound() -> None:
    release = anyio.Event()
    answered: list[str] = []

    async def slow_first(request: Request, responder: Responder) -> None:
        if not answered:
            await release.wait()
        answered.append(request.path)
        await responder.send(200, request.path.encode(), content_type="text/plain")

    count = 4000  # ~180 KB: more than a handler may see pipelined if it were all read
    async with served(slow_first) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.send, b"".join(post(f"/{i}") for i in range(count)))
            await anyio.wait_all_tasks_blocked()
            release.set()
            replies = await read_responses(client, count)
        assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in replies] == [
            f"/{i}".encode() for i in range(count)
        ]


async def test_trailers_of_a_chunked_body_are_not_request_headers() -> None:
    seen: list[Request] = []

    async def record(request: Request, responder: Responder) -> None:
        seen.append(request)
        await responder.send(200, b"{}")

    async with served(record) as client:
        await client.send(
            b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\nx-codexd-client: evil\r\nauthorization: Bearer evil\r\n\r\n"
        )
        await read_responses(client, 1)
    assert seen[0].body == b"hi"
    assert "x-codexd-client" not in seen[0].headers
    assert "authorization" not in seen[0].headers


async def test_100_continue_waits_for_the_responses_before_it() -> None:
    release = anyio.Event()

    async def slow(request: Request, responder: Responder) -> None:
        if request.path == "/a":
            await release.wait()
        await responder.send(200, request.path.encode(), content_type="text/plain")

    async with served(slow) as client:
        await client.send(
            post("/a")
            + b"POST /b HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n"
        )
        await anyio.wait_all_tasks_blocked()
        release.set()
        buf = b""
        with anyio.fail_after(5):
            while b"100 Continue" not in buf:
                buf += await client.receive()
        assert buf.startswith(b"HTTP/1.1 200 ") and buf.index(b"/a") < buf.index(b"100 Cont")
        await client.send(b"{}")
        with anyio.fail_after(5):
            while not buf.endswith(b"/b"):
                buf += await client.receive()


async def test_an_http10_keep_alive_client_is_told_and_kept() -> None:
    async with served(echo_path) as client:
        request = b"GET /%d HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"
        await client.send(request % 1)
        (first,) = await read_responses(client, 1)
        assert b"\r\nconnection: keep-alive\r\n" in first and first.endswith(b"/1")
        await client.send(request % 2)
        (second,) = await read_responses(client, 1)
        assert second.endswith(b"/2")


async def test_a_response_header_that_would_split_the_response_becomes_a_500() -> None:
    async def bad_header(request: Request, responder: Responder) -> None:
        await responder.send(200, b"{}", headers=[("x-note", "a\r\nx-injected: 1")])

    async with served(bad_header) as client:
        await client.send(post("/x"))
        (reply,) = await read_responses(client, 1)
        assert reply.startswith(b"HTTP/1.1 500 ") and b"x-injected" not in reply


# --------------------------------------------------------------------------- deadlines
# Short timeouts keep the tests quick, yet long enough that a loaded machine does not close a
# connection before the test has sent what it must (50 ms did, once). What is asserted is only
# that the connection closes (EOF), never when.
SHORT = 0.5


@pytest.mark.parametrize("sent", [b"", b"POST /v1/responses HTTP/1.1\r\nhost: x\r\n"])
async def test_a_head_that_does_not_arrive_closes_the_connection(sent: bytes) -> None:
    async with served(echo_path, head_timeout=SHORT) as client:
        if sent:
            await client.send(sent)
        assert await read_to_eof(client) == b""  # closed, and nothing said


async def test_a_head_dripped_after_an_idle_wait_still_has_only_head_timeout() -> None:
    async with served(echo_path, head_timeout=SHORT, idle_timeout=3600) as client:
        await client.send(post("/one"))
        (first,) = await read_responses(client, 1)
        assert first.endswith(b"/one")
        await client.send(b"POST /two HTTP/1.1\r\n")  # then never the rest
        assert await read_to_eof(client) == b""


async def test_an_idle_kept_alive_connection_is_closed_but_never_while_a_handler_runs() -> None:
    forever = Forever()

    async def route(request: Request, responder: Responder) -> None:
        if request.path == "/forever":
            await forever(request, responder)
        else:
            await echo_path(request, responder)

    timeouts = {"head_timeout": SHORT, "idle_timeout": SHORT}
    async with served(route, **timeouts) as busy, served(route, **timeouts) as idle:
        await busy.send(post("/forever"))
        await forever.started.wait()
        await idle.send(post("/echo"))
        (reply,) = await read_responses(idle, 1)
        assert reply.endswith(b"/echo")
        # The idle connection closes after its answer; `busy` opened before it, so had its
        # handler been timed it would have been cancelled by now.
        assert await read_to_eof(idle) == b""
        await anyio.wait_all_tasks_blocked()
        assert not forever.cancelled.is_set()


async def test_a_refused_head_is_answered_before_its_body_without_100_continue() -> None:
    seen: list[Request] = []

    def check_head(headers: Any) -> Refusal | None:
        return None if headers.get("authorization") == "Bearer t" else Refusal(401, b"{}")

    async def record(request: Request, responder: Responder) -> None:
        seen.append(request)
        await responder.send(200, b"{}")

    head = b"POST /v1/responses HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
    async with served(record, check_head=check_head) as client:
        await client.send(head + b"content-length: 1000000\r\n\r\n")  # and never the body
        reply = await read_to_eof(client)
        assert reply.startswith(b"HTTP/1.1 401 ") and b"connection: close" in reply
        assert b"100 Continue" not in reply
    async with served(record, check_head=check_head) as client:
        await client.send(head + b"authorization: Bearer t\r\ncontent-length: 2\r\n\r\n")
        with anyio.fail_after(5):
            assert await client.receive() == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send(b"{}")
        (reply,) = await read_responses(client, 1)
        assert reply.startswith(b"HTTP/1.1 200 ")
    assert [r.body for r in seen] == [b"{}"]
