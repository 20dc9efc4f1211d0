"""The typed client: one typed call per method of the table, each decoding a real answer.

Parametrized over the daemon's method table, so a method added there without a typed call
on `codexctl.Client` fails here. Each typed call's declared result type must be the very
type the daemon's table sends (both import it from codexctl; a `{}` result is None), and
must decode what a real daemon answers.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codexctl import AsyncClient, Client, JobView
from codexctl.protocol import ClientInfo
from codexctl.results import Empty
from codexd.rpc.methods import TABLE
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_issuer import FakeIssuer
from codexd.testing.fake_openai import FakeOpenAI
from tests.integration._chatgpt import chatgpt_config, write_config, write_login
from tests.integration._client import daemon_env_at

# method -> (the Client method that makes it, how to call it with a daemon at hand).
Invoke = Callable[[Client, "Context"], Any]


class Context:
    """What the calls need: a finished job's id, and a way to run the async twin."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


TYPED: dict[str, tuple[str, Invoke]] = {
    "initialize": ("initialize", lambda c, x: c.initialize("typed-test", "1")),
    "daemon/ping": ("ping", lambda c, x: c.ping()),
    "daemon/status": ("status", lambda c, x: c.status()),
    "daemon/shutdown": ("shutdown", lambda c, x: c.shutdown()),
    "daemon/methods": ("methods", lambda c, x: c.methods()),
    "account/read": ("account", lambda c, x: c.account()),
    "account/refresh": ("refresh_account", lambda c, x: c.refresh_account()),
    "account/login": (
        "login",
        lambda c, x: c.login("api_key", api_key="sk-test-key-for-the-fake-0002"),
    ),
    "account/login/cancel": (
        "cancel_login",
        lambda c, x: c.cancel_login(
            c.login("api_key", api_key="sk-test-key-for-the-fake-0003").login_id
        ),
    ),
    "account/logout": ("logout", lambda c, x: c.logout()),
    "models/list": ("models", lambda c, x: c.models()),
    "config/read": ("config", lambda c, x: c.config()),
    "config/reload": ("reload_config", lambda c, x: c.reload_config()),
    "job/submit": ("submit", lambda c, x: c.submit("Say hi")),
    "job/get": ("job", lambda c, x: c.job(x.job_id)),
    "job/list": ("jobs", lambda c, x: c.jobs(limit=5)),
    "job/subscribe": ("subscribe", lambda c, x: c.subscribe(x.job_id)),
    "job/unsubscribe": ("unsubscribe", lambda c, x: c.unsubscribe(x.job_id)),
    "job/cancel": ("cancel", lambda c, x: c.cancel(x.job_id)),
    "ratelimits/read": ("limits", lambda c, x: c.limits()),
    "usage/read": ("usage", lambda c, x: c.usage(group_by=["model", "day"])),
    "gateway/token": ("gateway_token", lambda c, x: c.gateway_token()),
    "events/subscribe": ("subscribe_events", lambda c, x: c.subscribe_events("jobs", "config")),
}
# Methods deliberately left to `call()`, with the reason. None today.
RAW_ONLY: dict[str, str] = {}


def _declared(name: str) -> Any:
    """The result type `Client.<name>` declares (None for a call that returns nothing)."""
    hints = typing.get_type_hints(getattr(Client, name))
    return hints["return"]


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DaemonProcess, Context]]:
    """One daemon (with the fake upstream) for every call but `daemon/shutdown`, and the id
    of a job it completed."""
    with FakeOpenAI.running() as fake:
        env = daemon_env_at(tmp_path_factory.mktemp("typed"), fake)
        with DaemonProcess(env) as proc, Client(proc.socket) as c:
            reply = c.ask("Say hi")
            yield proc, Context(reply.job_id)


@pytest.mark.parametrize("method", sorted(TABLE.methods))
def test_every_method_has_a_typed_call_of_the_daemons_result_type(method: str) -> None:
    if method in RAW_ONLY:
        pytest.skip(f"{method} is raw only: {RAW_ONLY[method]}")
    assert method in TYPED, f"{method} has no typed call on codexctl.Client (or a RAW_ONLY reason)"
    name, _ = TYPED[method]
    declared = _declared(name)
    server = TABLE.methods[method].result_type
    assert declared == (type(None) if server is Empty else server)
    # The async twin declares the same result.
    assert typing.get_type_hints(getattr(AsyncClient, name))["return"] == declared


@pytest.fixture(scope="module")
def chatgpt_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon logged in with ChatGPT (against the fake issuer), for `account/refresh`."""
    root = tmp_path_factory.mktemp("typed-chatgpt")
    with FakeOpenAI.running(issuer=FakeIssuer()) as fake:
        env = daemon_env_at(root, fake)
        del env["OPENAI_API_KEY"]
        write_config(env, chatgpt_config(fake))
        write_login(env, fake.issuer.issue_tokens())
        with DaemonProcess(env) as proc:
            yield proc


# The calls that need a ChatGPT login to answer with their result.
NEEDS_CHATGPT = {"account/refresh"}


@pytest.mark.parametrize("method", sorted(set(TYPED) - {"daemon/shutdown"}))
def test_typed_call_decodes_a_real_answer(method: str, request: pytest.FixtureRequest) -> None:
    if method in NEEDS_CHATGPT:
        proc, ctx = request.getfixturevalue("chatgpt_live"), Context("")
    else:
        proc, ctx = request.getfixturevalue("live")
    name, invoke = TYPED[method]
    declared = _declared(name)
    with Client(proc.socket, client=ClientInfo(name="typed-test")) as c:
        result = invoke(c, ctx)
    if declared is type(None):
        assert result is None
        return
    origin = typing.get_origin(declared)
    if origin is list:
        (item,) = typing.get_args(declared)
        assert result and all(isinstance(r, item) for r in result)
    else:
        assert isinstance(result, declared)


def test_typed_calls_read_what_they_say(live: tuple[DaemonProcess, Context]) -> None:
    proc, ctx = live
    with Client(proc.socket) as c:
        job = c.job(ctx.job_id)
        assert isinstance(job, JobView) and job.state == "completed"
        assert job.usage is not None and job.usage.output_tokens > 0
        assert c.status().socket == proc.socket
        assert ctx.job_id in [j.id for j in c.jobs(state="completed").jobs]
        assert [m.slug for m in c.models().models]
        assert {m.name for m in c.methods()} == set(TABLE.methods)


def test_async_client_has_the_same_typed_calls(live: tuple[DaemonProcess, Context]) -> None:
    proc, ctx = live

    async def main() -> tuple[Any, ...]:
        async with AsyncClient(proc.socket) as c:
            return await asyncio.gather(c.status(), c.job(ctx.job_id), c.ping(), c.limits())

    status, job, pong, limits = asyncio.run(main())
    assert status.socket == proc.socket
    assert job.id == ctx.job_id and job.state == "completed"
    assert pong is None
    assert [p.provider for p in limits.providers]


def test_shutdown_is_typed(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    with DaemonProcess(daemon_env_at(tmp_path, fake_openai)) as proc:
        with Client(proc.socket) as c:
            assert c.shutdown() is None
        assert proc.proc is not None
        assert proc.proc.wait(30) == 0
