"""gateway/listeners.py with a gateway.sock passed in by a service manager, and the gateway's
HTTP wording of a refused submission (gateway/server.py `submit_error`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from codexd.gateway import GatewayListeners
from codexd.gateway.server import submit_error
from codexd.service import InvalidSubmit
from codexd.service.token import TokenFile

pytestmark = pytest.mark.anyio


def stub_services(tmp_path: Path, *, enabled: bool) -> Any:
    gateway = SimpleNamespace(enabled=enabled, tcp=None, head_timeout_s=10.0, idle_timeout_s=10.0)
    settings = SimpleNamespace(gateway=gateway, max_connections=8)
    return SimpleNamespace(
        paths=SimpleNamespace(
            gateway_socket=str(tmp_path / "gateway.sock"), state_dir=str(tmp_path)
        ),
        config=SimpleNamespace(
            snapshot=SimpleNamespace(codexd=settings), path=str(tmp_path / "config.toml")
        ),
        catalogs=SimpleNamespace(
            catalog=lambda: SimpleNamespace(list_models=lambda: [SimpleNamespace(slug="m")])
        ),
        tokens=None,
    )


def present(path: str) -> bool:
    return os.path.lexists(path)


async def get_models(path: str) -> tuple[int, dict[str, Any]]:
    async with await anyio.connect_unix(path) as stream:
        await stream.send(b"GET /v1/models HTTP/1.1\r\nhost: codexd\r\nconnection: close\r\n\r\n")
        data = b""
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:  # the reply ends when the gateway closes the connection
                data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_an_adopted_gateway_socket_answers_while_off_and_survives_reloads(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "passed.sock")
    adopted = socket.socket(socket.AF_UNIX)
    adopted.bind(path)
    adopted.listen()
    services = stub_services(tmp_path, enabled=False)
    listeners = GatewayListeners(services, adopted)
    async with anyio.create_task_group() as tg:
        await tg.start(listeners.run)
        assert listeners.status() is None
        status, body = await get_models(path)
        assert status == 503 and body["error"]["code"] == "gateway_off"
        assert "enabled = true" in body["error"]["message"]

        services.config.snapshot.codexd.gateway.enabled = True
        listeners.follow()
        await listeners.settled()
        status_now = listeners.status()
        assert status_now is not None and status_now.unix == path and status_now.tcp is None
        status, body = await get_models(path)
        assert status == 200 and body["data"][0]["id"] == "m"

        services.config.snapshot.codexd.gateway.enabled = False
        listeners.follow()
        await listeners.settled()
        assert listeners.status() is None
        assert present(path) and adopted.fileno() != -1  # neither removed nor closed
        status, _ = await get_models(path)
        assert status == 503
        assert not present(services.paths.gateway_socket)  # none of ours was made
        tg.cancel_scope.cancel()


async def test_our_gateway_socket_is_made_and_removed_by_reloads(tmp_path: Path) -> None:
    services = stub_services(tmp_path, enabled=False)
    ours = services.paths.gateway_socket
    listeners = GatewayListeners(services)
    async with anyio.create_task_group() as tg:
        await tg.start(listeners.run)
        assert not present(ours)
        services.config.snapshot.codexd.gateway.enabled = True
        listeners.follow()
        await listeners.settled()
        assert (await get_models(ours))[0] == 200
        services.config.snapshot.codexd.gateway.enabled = False
        listeners.follow()
        await listeners.settled()
        assert not present(ours) and listeners.status() is None
        tg.cancel_scope.cancel()


async def test_a_token_file_that_cannot_be_read_keeps_the_listeners_on_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Turning TCP on needs the token; when its file cannot be read the reload is refused in
    the log and the gateway goes on as it was, instead of the error ending the daemon."""
    services = stub_services(tmp_path, enabled=True)
    services.tokens = TokenFile(str(tmp_path))
    os.mkdir(services.tokens.path)  # a directory where the token file should be
    listeners = GatewayListeners(services)
    async with anyio.create_task_group() as tg:
        await tg.start(listeners.run)
        services.config.snapshot.codexd.gateway.tcp = "127.0.0.1:0"
        listeners.follow()
        await listeners.settled()
        status = listeners.status()
        assert status is not None and status.tcp is None
        assert (await get_models(services.paths.gateway_socket))[0] == 200
        assert f"cannot read or create the gateway token {services.tokens.path}" in caplog.text
        tg.cancel_scope.cancel()


def error_body(err: InvalidSubmit, headers: dict[str, str]) -> dict[str, Any]:
    reply = submit_error(err, headers)
    assert reply.status == 400
    body: dict[str, Any] = json.loads(reply.body)["error"]
    return body


def test_a_refused_submission_names_the_header_or_body_member() -> None:
    provider = InvalidSubmit("provider", "unknown provider 'nope'", "(known: a, b)")
    assert "job/submit" in provider.message and "$.provider" in provider.message  # the RPC's
    assert error_body(provider, {"x-codexd-provider": "nope"}) == {
        "message": "unknown provider 'nope' in X-Codexd-Provider (known: a, b)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    # Not from the header: the config's own choice was at fault.
    assert error_body(provider, {})["message"] == (
        "unknown provider 'nope' (from codexd's config) (known: a, b)"
    )
    model = InvalidSubmit("body.model", "Expected `str`", plain="'model' must be a string")
    assert error_body(model, {}) == {
        "message": "'model' must be a string",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
