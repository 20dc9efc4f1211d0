"""The library clients: the blocking Client and the asyncio AsyncClient."""

from __future__ import annotations

import asyncio

import pytest

from codexctl import AsyncClient, Client, DaemonUnreachable, ErrorKind, RpcError
from codexctl.protocol import ClientInfo
from codexd.testing.daemon_process import DaemonProcess


def test_sync_client_calls_and_errors(daemon: DaemonProcess) -> None:
    with Client(daemon.socket, client=ClientInfo(name="my-tool", version="2")) as c:
        assert c.call("daemon/ping") == {}
        with pytest.raises(RpcError) as info:
            c.call("initialize", {"client": {}})
        assert info.value.kind == ErrorKind.INVALID_PARAMS
        assert info.value.code == -32602
        assert "`name`" in info.value.message
        assert c.call("daemon/status")["connections"] == 1


def test_sync_client_unreachable(tmp_path: object) -> None:
    with pytest.raises(DaemonUnreachable) as info:
        Client("/nonexistent/codexd.sock").connect()
    assert "codexd is not running at /nonexistent/codexd.sock" in str(info.value)


def test_async_client_concurrent_calls(daemon: DaemonProcess) -> None:
    async def main() -> list[object]:
        async with AsyncClient(daemon.socket, client=ClientInfo(name="async-tool")) as c:
            calls = [c.call("daemon/ping") for _ in range(50)]
            calls.append(c.call("daemon/status"))
            results = await asyncio.gather(*calls)
            with pytest.raises(RpcError) as info:
                await c.call("no/such")
            assert info.value.kind == ErrorKind.METHOD_NOT_FOUND
            return results

    results = asyncio.run(main())
    assert results[:50] == [{}] * 50
    status = results[50]
    assert isinstance(status, dict) and status["connections"] == 1


def test_async_client_unreachable() -> None:
    async def main() -> None:
        await AsyncClient.open("/nonexistent/codexd.sock")

    with pytest.raises(DaemonUnreachable):
        asyncio.run(main())
