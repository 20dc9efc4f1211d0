"""The upstream HTTP/1.1 transport against scripted servers on real loopback sockets.

Each test's server is a few lines of raw bytes, so that what the server does wrong (closes an
idle connection, cuts a body, never answers) is exactly what the test says.
"""

from __future__ import annotations

import datetime
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from codexd.jobs import UpstreamEvent
from codexd.upstream.chat import ChatStream
from codexd.upstream.client import Attempt, run_attempt
from codexd.upstream.errors import classify_transport
from codexd.upstream.transport import Http11Transport
from codexd.upstream.wire import StreamResult

pytestmark = pytest.mark.anyio

Handler = Callable[[anyio.abc.SocketStream, int], Awaitable[None]]

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"


async def read_request(stream: anyio.abc.SocketStream) -> bytes:
    """One request (head and Content-Length body) off the stream."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive()
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    return head


@asynccontextmanager
async def server(
    handler: Handler, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[int]]]:
    """Serve `handler(stream, connection_number)`; yields the base URL and the list of
    connection numbers seen."""
    seen: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve_one(stream: anyio.abc.SocketStream) -> None:
        seen.append(len(seen) + 1)
        number = len(seen)
        async with stream:
            try:
                if tls is not None:
                    from anyio.streams.tls import TLSStream

                    wrapped = await TLSStream.wrap(stream, server_side=True, ssl_context=tls)
                    await handler(wrapped, number)  # type: ignore[arg-type]
                else:
                    await handler(stream, number)
            except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError, OSError):
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve_one)
        scheme = "https" if tls else "http"
        yield f"{scheme}://127.0.0.1:{port}", seen
        tg.cancel_scope.cancel()


async def get(
    transport: httpx.AsyncBaseTransport, url: str, **timeouts: float | None
) -> tuple[int, bytes]:
    request = httpx.Request("POST", url + "/v1/x", content=b"{}", extensions={"timeout": timeouts})
    response = await transport.handle_async_request(request)
    try:
        body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
    finally:
        await response.aclose()
    return response.status_code, body


async def keep_alive(stream: anyio.abc.SocketStream, number: int) -> None:
    while True:
        await read_request(stream)
        await stream.send(OK)


async def test_keep_alive_reuses_one_connection() -> None:
    async with server(keep_alive) as (url, seen):
        transport = Http11Transport()
        for _ in range(5):
            assert await get(transport, url) == (200, b"hello")
        assert seen == [1]
        assert transport.connections_opened == 1
        assert "idle 1" in repr(transport)
        await transport.aclose()


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error() -> None:
    async def one_then_close(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        await stream.send(OK)  # no `connection: close`: the client believes it may reuse it

    async with server(one_then_close) as (url, seen):
        transport = Http11Transport()
        assert await get(transport, url) == (200, b"hello")
        await anyio.wait_all_tasks_blocked()
        assert await get(transport, url) == (200, b"hello")
        assert seen == [1, 2]
        await transport.aclose()


async def test_a_reused_connection_closed_as_the_request_arrives_is_retried_once() -> None:
    """The keep-alive race: the server drops the idle connection just as the next request
    is sent, so the poll before reuse saw nothing; the request goes again, on a new one."""
    requests: list[int] = []

    async def close_second_request(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        requests.append(number)
        await stream.send(OK)
        if number == 1:
            await read_request(stream)  # read the second request, then hang up unanswered
            requests.append(number)
            return
        while True:
            await read_request(stream)
            requests.append(number)
            await stream.send(OK)

    async with server(close_second_request) as (url, seen):
        transport = Http11Transport()
        assert await get(transport, url) == (200, b"hello")
        assert await get(transport, url) == (200, b"hello")
        assert seen == [1, 2]
        assert requests == [1, 1, 2]
        await transport.aclose()


async def test_a_new_connection_closed_without_a_response_is_an_error() -> None:
    async def hang_up(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)

    async with server(hang_up) as (url, _):
        transport = Http11Transport()
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await get(transport, url)
        error = classify_transport(caught.value)
        assert error.message == (
            "127.0.0.1 closed the connection without a response: try again later"
        )
        await transport.aclose()


async def test_a_body_cut_short_is_a_protocol_error_and_the_connection_is_not_kept() -> None:
    async def truncated(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")

    async with server(truncated) as (url, _):
        transport = Http11Transport()
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await get(transport, url)
        assert "idle 0" in repr(transport) and "in use 0" in repr(transport)
        await transport.aclose()


async def test_no_response_head_within_the_read_timeout() -> None:
    async def silent(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        await anyio.sleep_forever()  # never answers: the test is about the read timeout

    async with server(silent) as (url, _):
        transport = Http11Transport()
        with pytest.raises(httpx.ReadTimeout):
            await get(transport, url, read=0.2)
        assert "in use 0" in repr(transport)
        await transport.aclose()


async def test_connection_refused_and_unsupported_scheme() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    transport = Http11Transport()
    with pytest.raises(httpx.ConnectError) as caught:
        await get(transport, f"http://127.0.0.1:{port}", connect=5)
    assert classify_transport(caught.value).message == (
        "connection to 127.0.0.1 refused: is the server running and base_url right?"
    )
    with pytest.raises(httpx.UnsupportedProtocol):
        await get(transport, "ftp://127.0.0.1:21")
    assert "in use 0" in repr(transport)
    await transport.aclose()


async def test_a_body_not_read_to_its_end_closes_its_connection() -> None:
    async def half_then_ok(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        if number == 1:
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe")
            await stream.receive()  # the rest is never sent; wait for the client to close
            return
        await stream.send(OK)

    async with server(half_then_ok) as (url, seen):
        transport = Http11Transport()
        response = await transport.handle_async_request(httpx.Request("POST", url, content=b""))
        await response.aclose()  # body never read, and not all of it arrived
        assert await get(transport, url) == (200, b"hello")
        assert seen == [1, 2]
        await transport.aclose()


async def test_a_response_that_arrived_whole_keeps_its_connection_even_unread() -> None:
    async with server(keep_alive) as (url, seen):
        transport = Http11Transport()
        response = await transport.handle_async_request(httpx.Request("POST", url, content=b""))
        await response.aclose()  # the body came with the head: nothing is left on the wire
        assert await get(transport, url) == (200, b"hello")
        assert seen == [1]
        await transport.aclose()


async def test_connections_past_max_connections_wait_for_a_free_one() -> None:
    async with server(keep_alive) as (url, seen):
        transport = Http11Transport(max_connections=1)
        first = await transport.handle_async_request(httpx.Request("POST", url, content=b""))
        with pytest.raises(httpx.PoolTimeout, match="all 1 upstream connections"):
            await get(transport, url, pool=0.1)
        results: list[tuple[int, bytes]] = []
        async with anyio.create_task_group() as tg:

            async def second() -> None:
                results.append(await get(transport, url))

            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert results == []  # waiting for the one connection
            assert b"".join([c async for c in first.stream]) == b"hello"  # type: ignore[union-attr]
            await first.aclose()
        assert results == [(200, b"hello")]
        assert seen == [1]
        await transport.aclose()


async def test_idle_connections_expire_and_are_bounded() -> None:
    now = [0.0]
    async with server(keep_alive) as (url, seen):
        transport = Http11Transport(keepalive_expiry=30.0, max_idle=1, clock=lambda: now[0])
        await get(transport, url)
        now[0] = 31.0
        await get(transport, url)  # the idle one expired: a new connection
        assert seen == [1, 2]
        a = await transport.handle_async_request(httpx.Request("POST", url, content=b""))
        b = await transport.handle_async_request(httpx.Request("POST", url, content=b""))
        for response in (a, b):
            assert b"".join([c async for c in response.stream]) == b"hello"  # type: ignore[union-attr]
            await response.aclose()
        assert "idle 1" in repr(transport)  # max_idle: the second was closed
        await transport.aclose()


def _certificates(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A CA and a certificate for 127.0.0.1 signed by it: (server context, client context)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("codexd test CA"))
        .issuer_name(name("codexd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client_ctx = ssl.create_default_context(
        cadata=ca.public_bytes(serialization.Encoding.PEM).decode()
    )
    return server_ctx, client_ctx


async def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    server_ctx, client_ctx = _certificates(tmp_path)
    async with server(keep_alive, tls=server_ctx) as (url, seen):
        trusting = Http11Transport(ssl_context=lambda: client_ctx)
        assert await get(trusting, url) == (200, b"hello")
        assert await get(trusting, url) == (200, b"hello")
        assert seen == [1]
        await trusting.aclose()

        untrusting = Http11Transport(ssl_context=ssl.create_default_context)
        with pytest.raises(httpx.ConnectError) as caught:
            await get(untrusting, url)
        assert classify_transport(caught.value).message.startswith(
            "TLS certificate of 127.0.0.1 could not be verified"
        )
        await untrusting.aclose()


async def test_an_origin_behind_a_proxy_goes_through_it() -> None:
    heads: list[bytes] = []

    async def proxy(stream: anyio.abc.SocketStream, number: int) -> None:
        heads.append(await read_request(stream))
        await stream.send(OK)

    async with server(proxy) as (proxy_url, _):
        transport = Http11Transport(
            proxy_for=lambda origin: proxy_url if origin[1] == "upstream.invalid" else None
        )
        assert await get(transport, "http://upstream.invalid") == (200, b"hello")
        assert heads[0].startswith(b"POST http://upstream.invalid/v1/x HTTP/1.1")
        await transport.aclose()


async def test_a_burst_in_one_read_lets_readers_see_the_first_text_before_the_rest() -> None:
    """A whole stream that arrives in one read is not processed in one go: after the first
    text the pump gives the loop a turn, so a job's reader writes the first bytes before the
    rest of the burst (here, the completion) is handled."""
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        *({"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("a", "b", "c")),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    sse += b"data: [DONE]\n\n"
    body = b"".join(
        b"%x\r\n" % len(part) + part + b"\r\n"
        for part in (event + b"\n\n" for event in sse.split(b"\n\n")[:-1])
    )

    async def burst(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        await stream.send(head + b"transfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
        await anyio.sleep_forever()  # a keep-alive server waiting for the next request

    delivered: list[str] = []
    first_text = anyio.Event()
    seen_by_reader: list[list[str]] = []

    def on_event(event: UpstreamEvent) -> None:
        delivered.append(event.type)
        if event.type == "response.output_text.delta":
            first_text.set()

    async def reader() -> None:
        await first_text.wait()
        seen_by_reader.append(list(delivered))

    async with server(burst) as (url, _):
        transport = Http11Transport()
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            result = await run_attempt(
                transport,
                Attempt(url=url + "/v1/chat/completions", headers={}, body=b"{}", idle_timeout_s=5),
                ChatStream(),
                on_event,
            )
        await transport.aclose()
    assert isinstance(result.outcome, StreamResult)
    assert delivered.count("response.output_text.delta") == 3
    assert seen_by_reader == [["response.output_text.delta"]]


async def test_interim_responses_are_skipped_and_a_body_may_end_with_the_close() -> None:
    async def interim_then_close(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
        await stream.send(b"content-type: text/plain\r\n\r\nuntil ")
        await stream.send(b"the close")

    async with server(interim_then_close) as (url, seen):
        transport = Http11Transport()
        assert await get(transport, url) == (200, b"until the close")
        assert await get(transport, url) == (200, b"until the close")
        assert seen == [1, 2]  # a body delimited by the close leaves no connection to reuse
        await transport.aclose()


async def test_bad_responses_are_protocol_errors_and_extra_bytes_spoil_the_connection() -> None:
    replies = {
        1: b"NOT HTTP AT ALL\r\n\r\n",
        2: b"HTTP/1.1 200 OK\r\nx: " + b"y" * 70_000 + b"\r\n\r\n",
        # A response nobody asked for after the real one: it must not overwrite it.
        3: OK + b"HTTP/1.1 500 Boom\r\nx-evil: 1\r\ncontent-length: 0\r\n\r\n",
    }

    async def scripted(stream: anyio.abc.SocketStream, number: int) -> None:
        while True:
            await read_request(stream)
            await stream.send(replies.get(number, OK))

    async with server(scripted) as (url, seen):
        transport = Http11Transport()
        with pytest.raises(httpx.RemoteProtocolError, match=r"not valid HTTP/1\.1"):
            await get(transport, url)
        with pytest.raises(httpx.RemoteProtocolError, match="head is over 65536 bytes"):
            await get(transport, url)
        assert await get(transport, url) == (200, b"hello")
        assert await get(transport, url) == (200, b"hello")
        assert seen == [1, 2, 3, 4]
        await transport.aclose()


async def test_a_header_that_would_split_the_request_is_refused_before_sending() -> None:
    async with server(keep_alive) as (url, seen):
        transport = Http11Transport()
        request = httpx.Request("POST", url, headers={"x-note": "a\r\nx-injected: 1"})
        with pytest.raises(httpx.LocalProtocolError, match="'x-note'"):
            await transport.handle_async_request(request)
        assert seen == []  # refused before a connection was opened for it
        assert await get(transport, url) == (200, b"hello")
        await transport.aclose()


async def test_a_response_header_line_that_never_ends_is_a_protocol_error() -> None:
    async def endless(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\nx: ")
        for _ in range(64):  # 4 MiB without a line end
            await stream.send(b"y" * 65536)

    async with server(endless) as (url, _):
        transport = Http11Transport()
        with pytest.raises(httpx.RemoteProtocolError, match="head is over 65536 bytes"):
            await get(transport, url)
        await transport.aclose()


async def test_trailers_are_not_response_headers_and_other_codings_end_with_the_close() -> None:
    async def replies(stream: anyio.abc.SocketStream, number: int) -> None:
        await read_request(stream)
        if number == 1:
            await stream.send(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nx-trailer: late\r\n\r\n"
            )
            await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw")

    async with server(replies) as (url, seen):
        transport = Http11Transport()
        request = httpx.Request("POST", url + "/v1/x", content=b"{}")
        response = await transport.handle_async_request(request)
        body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        await response.aclose()
        assert body == b"hello" and "x-trailer" not in response.headers
        assert await get(transport, url) == (200, b"raw")  # delimited by the close
        assert seen == [1]  # the chunked response (trailers and all) kept its connection
        await transport.aclose()
