"""Shared rate limits through a real daemon against the fake upstream.

The fake enforces its own rolling 60 s window (`FakeOpenAI(rpm_limit=N)`) and answers 429 past
it, as a strict server does; the daemon holds the same budget. Two tests cross one window
(about 62 s each): that is where a token bucket, or a window without a margin, gets its 429.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from codexctl import Client
from codexctl.protocol import ClientInfo
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, RecordedRequest, Reply, rate_limited
from tests.integration.test_redis_budget import StartRedis, free_port, start_redis  # noqa: F401

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}
WINDOW_S = 60.0
N = 10  # the fake's and the daemon's requests per minute
HANG_GUARD_S = 5.0
# Long enough for the second half of 2N jobs: one window, the daemon's 1 s margin, slack.
WINDOW_GUARD_S = WINDOW_S + 30.0

BUDGET_KEYS = {
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrency",
    "available_requests",
    "available_tokens",
    "in_flight",
    "queued",
    "paused_until",
}
UPSTREAM_KEYS = {"requests", "tokens", "primary", "secondary", "credits"}


def write_limits(env: dict[str, str], fake: FakeOpenAI, limits: str) -> None:
    """The built-in `openai` provider points at `fake`, with `[codexd.rate_limits.openai]`."""
    with open(f"{env['CODEX_HOME']}/config.toml", "w") as f:
        f.write(
            f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n'
            f"[codexd.rate_limits.openai]\n{limits}\n"
        )
    env["OPENAI_API_KEY"] = "sk-test-key-for-the-fake-0000"


@contextmanager
def limited_daemon(env: dict[str, str], fake: FakeOpenAI, limits: str) -> Iterator[DaemonProcess]:
    write_limits(env, fake, limits)
    with DaemonProcess(env) as proc:
        yield proc


@pytest.fixture
def strict_fake() -> Iterator[FakeOpenAI]:
    """A fake that enforces N requests per rolling minute."""
    with FakeOpenAI.running(rpm_limit=N) as fake:
        yield fake


@pytest.fixture
def slow_fake() -> Iterator[FakeOpenAI]:
    """A fake whose replies take a moment, so requests overlap."""
    with FakeOpenAI.running(reply=Reply(first_byte_delay_s=0.05)) as fake:
        yield fake


def tool(socket: str, name: str) -> Client:
    return Client(socket, client=ClientInfo(name=name), timeout=30)


def submit(client: Client, prompt: str) -> str:
    job_id: str = client.call("job/submit", {"body": {"input": prompt}})["job_id"]
    return job_id


def collect(client: Client, job_ids: list[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
    """Every event of `job_ids` (submitted with subscribe on `client`) up to their ends."""
    events: dict[str, list[dict[str, Any]]] = {j: [] for j in job_ids}
    pending = set(job_ids)
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        note = client.next_notification(timeout=max(left, 0.001))
        if note is None:
            pytest.fail(f"{len(pending)} job(s) did not finish within {timeout}s")
        if note.method != "job/event" or note.params["job_id"] not in events:
            continue
        event = note.params["event"]
        events[note.params["job_id"]].append(event)
        if event["type"] in TERMINAL:
            pending.discard(note.params["job_id"])
    return events


def assert_no_rate_limit_reached_clients(events: dict[str, list[dict[str, Any]]]) -> None:
    for job_id, evs in events.items():
        assert evs[-1]["type"] == "job.completed", (job_id, evs[-1])
        retries = [e for e in evs if e["type"] == "job.retrying"]
        assert retries == [], (job_id, retries)


def starts(fake: FakeOpenAI) -> list[RecordedRequest]:
    return sorted(fake.model_requests(), key=lambda r: r.time)


# --------------------------------------------------------------------------- the budget


@pytest.mark.slow
def test_a_full_budget_from_three_clients_gets_no_429_and_uses_the_rate(
    daemon_env: dict[str, str], strict_fake: FakeOpenAI
) -> None:
    with limited_daemon(daemon_env, strict_fake, f"requests_per_minute = {N}") as d:
        clients = [tool(d.socket, name) for name in ("editor", "linter", "batch")]
        try:
            submitted: list[list[str]] = [[] for _ in clients]
            for i in range(2 * N):  # interleaved, as three busy tools would
                k = i % len(clients)
                submitted[k].append(submit(clients[k], f"job {i} from {k}"))
            events: dict[str, list[dict[str, Any]]] = {}
            for client, ids in zip(clients, submitted, strict=True):
                events |= collect(client, ids, WINDOW_GUARD_S)
        finally:
            for client in clients:
                client.close()
    assert_no_rate_limit_reached_clients(events)
    assert strict_fake.stats().rate_limited == 0, "the fake answered 429"
    log = starts(strict_fake)
    assert [r.status for r in log] == [200] * (2 * N)
    times = [r.time for r in log]
    # The first window is used at once, not trickled out.
    assert times[N - 1] - times[0] < 0.05 * WINDOW_S
    # Each slot of the rolling window is used again within 5% of the window's length:
    # the rate achieved is at least 95% of the allowed one.
    gaps = [times[i] - times[i - N] for i in range(N, 2 * N)]
    assert min(gaps) >= WINDOW_S  # what the fake enforced
    assert WINDOW_S / max(gaps) >= 0.95, gaps


def test_max_concurrency_caps_what_the_fake_sees_at_once(
    daemon_env: dict[str, str], slow_fake: FakeOpenAI
) -> None:
    with (
        limited_daemon(daemon_env, slow_fake, "max_concurrency = 2") as d,
        tool(d.socket, "burst") as c,
    ):
        ids = [submit(c, f"job {i}") for i in range(8)]
        events = collect(c, ids, WINDOW_GUARD_S)
    assert_no_rate_limit_reached_clients(events)
    assert slow_fake.stats().model_requests == 8
    assert slow_fake.stats().peak_in_flight == 2


def test_a_429_with_retry_after_pauses_every_client_of_the_provider(
    daemon_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(rate_limited(retry_after=1, try_again_in=None))
    with (
        limited_daemon(daemon_env, fake_openai, "max_concurrency = 16") as d,
        tool(d.socket, "first") as a,
        tool(d.socket, "others") as b,
    ):
        first = submit(a, "meets the 429")
        # Wait until the daemon has seen the 429 (the job says it will retry) ...
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            note = a.next_notification(timeout=max(deadline - time.monotonic(), 0.001))
            assert note is not None, "no job.retrying after the 429"
            if note.method == "job/event" and note.params["event"]["type"] == "job.retrying":
                retrying = note.params["event"]
                break
        assert retrying["error_kind"] == "rate_limited"
        assert retrying["delay_s"] == 1.0
        limits = a.call("ratelimits/read", {"provider": "openai"})["providers"][0]
        assert limits["budget"]["paused_until"] is not None
        # ... then other clients submit while the provider is paused.
        others = [submit(b, f"other {i}") for i in range(3)]
        events = collect(b, others, HANG_GUARD_S + 5)
        events |= collect(a, [first], HANG_GUARD_S)
    assert all(evs[-1]["type"] == "job.completed" for evs in events.values())
    log = starts(fake_openai)
    assert log[0].status == 429
    t429 = log[0].time
    after = [r.time - t429 for r in log[1:]]
    assert len(after) == 4
    assert min(after) >= 1.0, f"a request reached the fake {min(after):.3f}s after the 429"


def test_a_client_with_one_job_is_not_starved_by_one_with_thirty(
    daemon_env: dict[str, str], slow_fake: FakeOpenAI
) -> None:
    with (
        limited_daemon(daemon_env, slow_fake, "max_concurrency = 1") as d,
        tool(d.socket, "bulk") as a,
        tool(d.socket, "interactive") as b,
    ):
        bulk = [submit(a, f"bulk {i}") for i in range(30)]
        one = submit(b, "the interactive one")
        collect(b, [one], WINDOW_GUARD_S)
        collect(a, bulk, WINDOW_GUARD_S)
    order = [r.body["input"] for r in starts(slow_fake)]
    assert len(order) == 31
    position = order.index("the interactive one")
    # First come first served would send it 31st; served round-robin it goes second or
    # third. Loose: it must go before at least 25 of the 30 bulk jobs.
    assert position <= 5, order


# --------------------------------------------------------------------------- reporting


def test_ratelimits_read_and_updated_have_the_members_of_the_spec(
    daemon_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    limits = "requests_per_minute = 500\ntokens_per_minute = 200000\nmax_concurrency = 16"
    with limited_daemon(daemon_env, fake_openai, limits) as d, tool(d.socket, "watcher") as w:
        assert w.call("events/subscribe", {"topics": ["ratelimits"]}) == {}
        with tool(d.socket, "worker") as c:
            collect(c, [submit(c, "count me")], HANG_GUARD_S * 2)
        deadline = time.monotonic() + HANG_GUARD_S
        updates: list[dict[str, Any]] = []
        while not any(u["upstream"]["requests"] for u in updates):
            note = w.next_notification(timeout=max(deadline - time.monotonic(), 0.001))
            assert note is not None, f"no ratelimits/updated with upstream facts: {updates}"
            assert note.method == "ratelimits/updated"
            updates.append(note.params)
        result = w.call("ratelimits/read")
        one = w.call("ratelimits/read", {"provider": "openai"})
    assert set(result) == {"providers"}
    assert {p["provider"] for p in result["providers"]} >= {"openai", "ollama", "lmstudio"}
    for entry in [*result["providers"], *updates]:
        assert set(entry) == {"provider", "budget", "upstream"}, entry
        assert set(entry["budget"]) == BUDGET_KEYS
        assert set(entry["upstream"]) == UPSTREAM_KEYS
    (openai,) = one["providers"]
    assert openai["provider"] == "openai"
    budget = openai["budget"]
    assert (budget["requests_per_minute"], budget["tokens_per_minute"]) == (500, 200000)
    assert budget["max_concurrency"] == 16
    assert (budget["in_flight"], budget["queued"], budget["paused_until"]) == (0, 0, None)
    assert budget["available_requests"] == 499
    assert 0 < budget["available_tokens"] < 200000
    # The fake's x-ratelimit-* headers, mirrored.
    assert openai["upstream"]["requests"]["limit"] == 10_000
    assert openai["upstream"]["requests"]["remaining"] == 10_000 - 1
    assert updates[-1]["provider"] == "openai"
    unset = next(p for p in result["providers"] if p["provider"] == "ollama")["budget"]
    assert (unset["requests_per_minute"], unset["tokens_per_minute"]) == (None, None)
    assert unset["max_concurrency"] == 64


# --------------------------------------------------------------------------- Redis


@pytest.mark.slow
def test_two_daemons_sharing_one_redis_budget_never_exceed_it_together(
    tmp_path: Any,
    strict_fake: FakeOpenAI,
    start_redis: StartRedis,  # noqa: F811
) -> None:
    url = start_redis(free_port())
    daemons: list[DaemonProcess] = []
    clients: list[Client] = []
    try:
        for name in ("laptop", "ci-runner"):
            env = _private_env(tmp_path / name)
            write_limits(env, strict_fake, f'requests_per_minute = {N}\nbackend = "{url}"')
            daemons.append(DaemonProcess(env).start())
        clients = [tool(d.socket, f"tool-{i}") for i, d in enumerate(daemons)]
        submitted: list[list[str]] = [[], []]
        for i in range(2 * N):
            submitted[i % 2].append(submit(clients[i % 2], f"job {i}"))
        events: dict[str, list[dict[str, Any]]] = {}
        for client, ids in zip(clients, submitted, strict=True):
            events |= collect(client, ids, WINDOW_GUARD_S)
        backends = [
            c.call("ratelimits/read", {"provider": "openai"})["providers"][0]["backend"]
            for c in clients
        ]
    finally:
        for client in clients:
            client.close()
        for d in daemons:
            d.stop()
            d.close()
    assert_no_rate_limit_reached_clients(events)
    assert strict_fake.stats().rate_limited == 0, "together the daemons passed the budget"
    times = [r.time for r in starts(strict_fake)]
    assert len(times) == 2 * N
    assert min(times[i] - times[i - N] for i in range(N, 2 * N)) >= WINDOW_S
    for backend in backends:
        assert backend["kind"] == "redis" and backend["connected"] is True
        assert backend["url"] == url


def _private_env(root: Any) -> dict[str, str]:
    import os

    root.mkdir()
    home = root / "codex-home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(
        CODEXD_SOCKET=str(root / "run" / "codexd.sock"),
        CODEXD_STATE_DIR=str(root / "state"),
        CODEX_HOME=str(home),
    )
    return env
