"""ChatGPT-mode requests through a real daemon: the backend URL and Codex's headers, refresh
(proactive, after a 401, single-flight for a hundred jobs), tokens another program writes
(under auth.lock or while the daemon runs), a revoked login, and no secret anywhere."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from codexctl import Client
from codexd.auth.authfile import (
    AuthDocument,
    auth_file_path,
    hold_auth_lock_blocking,
    lock_file_path,
    read_auth_file,
    write_auth_file,
)
from codexd.auth.tokens import Secret
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_issuer import CLIENT_ID, Tokens
from tests.codex_cli import codex_binary
from tests.integration._chatgpt import (
    Recorder,
    Setup,
    assert_no_secrets,
    chatgpt_config,
    chatgpt_setup,
    run_job,
    wait_notification,
    write_config,
    write_login,
)

CHATGPT_PATH = "/backend-api/codex/responses"
MANY = 100


@pytest.fixture
def setup(daemon_env: dict[str, str]) -> Iterator[Setup]:
    extra = f"[codexd.rate_limits.openai]\nmax_concurrency = {MANY * 2}\n"
    with chatgpt_setup(daemon_env, extra_config=extra) as s:
        yield s


def secrets_of(*logins: Tokens) -> list[str]:
    return [t for tokens in logins for t in (tokens.access_token, tokens.refresh_token)]


def refresh_reasons(setup: Setup) -> list[str]:
    return [
        str(r.params.get("refresh_reason"))
        for r in setup.issuer.requests
        if r.path == "/oauth/token" and r.params.get("grant_type") == "refresh_token"
    ]


def test_a_chatgpt_job_goes_to_the_backend_with_codex_headers(setup: Setup) -> None:
    tokens = setup.issuer.issue_tokens()
    write_login(setup.env, tokens)
    rec = Recorder()
    with setup.daemon() as d, Client(d.socket) as c:
        events = run_job(c, {"input": "hi", "prompt_cache_key": "conv-42"}, rec)
        assert events[-1]["type"] == "job.completed"
        assert events[-1]["output_text"] == "Hello from the fake upstream."
        log = d.stderr()
    assert setup.fake.model_requests("/v1/responses") == []
    req = setup.fake.model_requests(CHATGPT_PATH)[-1]
    h = req.headers
    assert h["authorization"] == f"Bearer {tokens.access_token}"
    assert h["chatgpt-account-id"] == "acct_fake0001"
    assert h["originator"] == "codex_cli_rs"
    assert h["user-agent"].startswith("codex_cli_rs/0.169.0 (")
    assert h["user-agent"].endswith(") codexd/0.1.0")
    assert h["version"] == "0.169.0"
    assert h["session-id"] == h["thread-id"] == "conv-42"
    assert h["accept"] == "text/event-stream"
    assert req.body["stream"] is True
    assert setup.issuer.stats().refresh_attempts == 0
    assert_no_secrets(secrets_of(tokens), log, rec.text())


def test_a_token_expiring_within_five_minutes_is_refreshed_first(setup: Setup) -> None:
    tokens = setup.issuer.issue_tokens(access_ttl_s=200)
    write_login(setup.env, tokens)
    with setup.daemon() as d, Client(d.socket) as c:
        assert run_job(c)[-1]["type"] == "job.completed"
        assert run_job(c)[-1]["type"] == "job.completed"
    assert refresh_reasons(setup) == ["proactive_expiry"]
    used = {r.headers["authorization"] for r in setup.fake.model_requests(CHATGPT_PATH)}
    assert f"Bearer {tokens.access_token}" not in used
    assert len(used) == 1
    assert setup.issuer.refresh_token_state(tokens.refresh_token) == "spent"
    saved = read_auth_file(auth_file_path(setup.env["CODEX_HOME"]))
    assert isinstance(saved, AuthDocument) and saved.tokens is not None
    assert f"Bearer {saved.tokens.access_token.reveal()}" in used


def test_a_401_refreshes_once_and_the_job_completes(setup: Setup) -> None:
    tokens = setup.issuer.issue_tokens()
    write_login(setup.env, tokens)
    setup.issuer.expire_access_tokens()  # the backend refuses it; its `exp` still looks fine
    with setup.daemon() as d, Client(d.socket) as c:
        events = run_job(c)
    types = [e["type"] for e in events]
    assert types.count("job.retrying") == 1
    assert types[-1] == "job.completed"
    assert refresh_reasons(setup) == ["unauthorized_recovery"]
    statuses = [r.status for r in setup.fake.model_requests(CHATGPT_PATH)]
    assert statuses == [401, 200]


def test_a_hundred_jobs_on_an_expired_token_share_one_refresh(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    warm = setup.issuer.issue_tokens()
    write_login(setup.env, warm)
    with setup.daemon() as d, Client(d.socket) as c, Client(d.socket) as watcher:
        # Warm the connection pool so the measurement is about the refresh, not TCP set-up.
        finished = _run_many(c, MANY)
        assert finished == ["completed"] * MANY

        expired = setup.issuer.issue_tokens(access_ttl_s=-60)
        watcher.call("events/subscribe", {"topics": ["account"]})
        write_login(setup.env, expired)
        wait_notification(watcher, "account/updated")  # the daemon adopted the file
        setup.fake.reset()
        before = setup.issuer.stats()

        # Every job meets the expired token while the one refresh is held at the issuer.
        setup.issuer.hold_refreshes()
        ids = _submit_many(c, MANY)
        setup.issuer.wait_for(lambda s: s.refreshes_in_flight == 1)
        for _ in range(3):
            c.call("daemon/ping")
        setup.issuer.release_refreshes()
        finished = _wait_finished(c, ids)
        log = d.stderr()
    assert finished == ["completed"] * MANY
    after = setup.issuer.stats()
    assert after.refresh_attempts - before.refresh_attempts == 1
    assert after.refreshes - before.refreshes == 1
    assert after.reuses == 0
    assert after.peak_concurrent_refreshes == 1
    requests = setup.fake.model_requests(CHATGPT_PATH)
    assert len(requests) == MANY and {r.status for r in requests} == {200}
    bearers = {r.headers["authorization"] for r in requests}
    assert len(bearers) == 1 and f"Bearer {expired.access_token}" not in bearers

    # How long the jobs waited beyond the refresh round trip: from the issuer's answer to
    # each job's request arriving upstream (the fake's clock is this process's monotonic).
    answered = [r.time for r in setup.issuer.requests if r.path == "/oauth/token"][-1]
    waits_ms = sorted((r.time - answered) * 1000 for r in requests)
    with capsys.disabled():
        print(
            f"\n[bench] {MANY} jobs on an expired token: 1 refresh; after the issuer answered, "
            f"requests reached upstream in min {waits_ms[0]:.2f} ms, median "
            f"{statistics.median(waits_ms):.2f} ms, max {waits_ms[-1]:.2f} ms"
        )
    saved = read_auth_file(auth_file_path(setup.env["CODEX_HOME"]))
    assert isinstance(saved, AuthDocument) and saved.tokens is not None
    assert_no_secrets(
        [*secrets_of(warm, expired), saved.tokens.access_token.reveal()],
        log,
    )


def _run_many(c: Client, n: int) -> list[str]:
    return _wait_finished(c, _submit_many(c, n))


def _submit_many(c: Client, n: int) -> set[str]:
    c.call("events/subscribe", {"topics": ["jobs"]})
    return {
        c.call("job/submit", {"body": {"input": "hi"}, "subscribe": False})["job_id"]
        for _ in range(n)
    }


def _wait_finished(c: Client, ids: set[str]) -> list[str]:
    states: dict[str, str] = {}
    while len(states) < len(ids):
        note = c.next_notification(timeout=60)
        assert note is not None, f"only {len(states)} of {len(ids)} jobs finished"
        if note.method == "job/finished" and note.params["job"]["id"] in ids:
            states[note.params["job"]["id"]] = note.params["job"]["state"]
    return [states[i] for i in sorted(ids)]


def _holds_open(pid: int, path: str) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) == path:
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to see open files")
def test_tokens_refreshed_by_another_process_under_the_lock_are_adopted(setup: Setup) -> None:
    """Codex's order: flock(auth.lock), re-read, write. The daemon waits for the lock, re-reads
    and adopts the newer tokens instead of spending the old refresh token again."""
    old = setup.issuer.issue_tokens(access_ttl_s=-60)
    write_login(setup.env, old)
    home = setup.env["CODEX_HOME"]
    with setup.daemon() as d, Client(d.socket) as c:
        assert d.proc is not None
        with hold_auth_lock_blocking(home):
            submitted = c.call("job/submit", {"body": {"input": "hi"}})
            # The job's refresh now waits for auth.lock (the daemon has it open to flock it).
            deadline = time.monotonic() + 10
            while not _holds_open(d.proc.pid, lock_file_path(home)):
                assert time.monotonic() < deadline, "the daemon never reached auth.lock"
                time.sleep(0.01)
            # Meanwhile this "other program" refreshes and writes, as Codex does.
            answer = httpx.post(
                setup.issuer.token_url,
                json={
                    "client_id": CLIENT_ID,
                    "grant_type": "refresh_token",
                    "refresh_token": old.refresh_token,
                },
                timeout=10,
            ).json()
            doc = read_auth_file(auth_file_path(home))
            assert isinstance(doc, AuthDocument)
            newer = doc.with_refreshed(
                id_token=Secret(answer["id_token"]),
                access_token=Secret(answer["access_token"]),
                refresh_token=Secret(answer["refresh_token"]),
                now=datetime.now(UTC),
            )
            write_auth_file(auth_file_path(home), newer)
        events = _events_of(c, submitted["job_id"])
        assert events[-1]["type"] == "job.completed"
        assert run_job(c)[-1]["type"] == "job.completed"
        log = d.stderr()
    stats = setup.issuer.stats()
    assert (stats.refresh_attempts, stats.refreshes, stats.reuses) == (1, 1, 0)
    bearers = {r.headers["authorization"] for r in setup.fake.model_requests(CHATGPT_PATH)}
    assert bearers == {f"Bearer {answer['access_token']}"}
    assert_no_secrets([*secrets_of(old), answer["access_token"], answer["refresh_token"]], log)


def test_a_login_written_while_the_daemon_runs_is_adopted(setup: Setup) -> None:
    first = setup.issuer.issue_tokens()
    write_login(setup.env, first)
    with setup.daemon() as d, Client(d.socket) as c:
        assert run_job(c)[-1]["type"] == "job.completed"
        c.call("events/subscribe", {"topics": ["account"]})
        second = setup.issuer.issue_tokens(email="other@example.com")
        with hold_auth_lock_blocking(setup.env["CODEX_HOME"]):
            write_login(setup.env, second)
        assert wait_notification(c, "account/updated") == {
            "mode": "chatgpt",
            "email": "other@example.com",
            "plan_type": "plus",
        }
        assert run_job(c)[-1]["type"] == "job.completed"
        # A stale copy written back later (an old snapshot) is not taken.
        write_login(setup.env, first, at=datetime(2020, 1, 1, tzinfo=UTC))
        assert run_job(c)[-1]["type"] == "job.completed"
        assert c.call("account/read")["email"] == "other@example.com"
    bearers = [r.headers["authorization"] for r in setup.fake.model_requests(CHATGPT_PATH)]
    assert bearers == [f"Bearer {t.access_token}" for t in (first, second, second)]
    assert setup.issuer.stats().refresh_attempts == 0


def test_a_revoked_refresh_token_fails_jobs_until_the_next_login(setup: Setup) -> None:
    tokens = setup.issuer.issue_tokens(access_ttl_s=-60)
    write_login(setup.env, tokens)
    setup.issuer.invalidate_refresh_token(tokens.refresh_token)
    rec = Recorder()
    with setup.daemon() as d, Client(d.socket) as c:
        failed = run_job(c, recorder=rec)[-1]
        assert failed["type"] == "job.failed"
        error = failed["error"]
        assert error["code"] == -32011
        assert error["data"]["kind"] == "auth_expired"
        assert "revoked" in error["message"] and "codexctl login" in error["message"]
        # Known dead: the next job fails at once, without asking the issuer again.
        assert run_job(c, recorder=rec)[-1]["error"]["data"]["kind"] == "auth_expired"
        assert setup.issuer.stats().refresh_attempts == 1

        started = c.call("account/login", {"method": "browser"})
        httpx.get(started["auth_url"], follow_redirects=True, timeout=30)
        assert wait_notification(c, "account/login_completed", rec)["success"] is True
        assert run_job(c, recorder=rec)[-1]["type"] == "job.completed"
        log = d.stderr()
    saved = read_auth_file(auth_file_path(setup.env["CODEX_HOME"]))
    assert isinstance(saved, AuthDocument) and saved.tokens is not None
    assert_no_secrets(
        [
            *secrets_of(tokens),
            saved.tokens.access_token.reveal(),
            saved.tokens.refresh_token.reveal(),
        ],
        log,
        rec.text(),
    )


def _events_of(c: Client, job_id: str) -> list[dict[str, object]]:
    events = []
    while True:
        note = c.next_notification(timeout=30)
        assert note is not None
        if note.method == "job/event" and note.params["job_id"] == job_id:
            events.append(note.params["event"])
            if note.params["event"]["type"] in ("job.completed", "job.failed", "job.cancelled"):
                return events


def test_codex_cli_and_the_daemon_share_one_login_without_reusing_a_token(
    setup: Setup, tmp_path: Path
) -> None:
    """Codex CLI 0.169 as the second program, in both orders: whoever refreshes first, the
    other adopts the tokens on disk instead of spending the old refresh token."""
    CODEX_BIN = codex_binary()  # installs it with npm, or skips saying why
    home = setup.env["CODEX_HOME"]
    cfg = os.path.join(home, "config.toml")
    with open(cfg) as f:
        text = f.read()
    # Codex reaches a local backend only through a custom provider using the Codex login.
    with open(cfg, "w") as f:
        f.write(
            'model_provider = "local"\n' + text + "[model_providers.local]\n"
            'name = "local"\n'
            f'base_url = "{setup.fake.origin}/backend-api/codex"\n'
            'wire_api = "responses"\nrequires_openai_auth = true\nstream_max_retries = 0\n'
            "[analytics]\nenabled = false\n"
            "[features]\nplugins = false\napps = false\nshell_snapshot = false\n"
        )
    env = dict(setup.env, CODEX_REFRESH_TOKEN_URL_OVERRIDE=setup.issuer.token_url)

    def codex_exec() -> None:
        done = subprocess.run(
            [CODEX_BIN, "exec", "--skip-git-repo-check", "--ephemeral", "hi"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]

    write_login(setup.env, setup.issuer.issue_tokens(access_ttl_s=-60))
    with DaemonProcess(env) as d, Client(d.socket) as c:
        # The daemon refreshes first; Codex finds fresh tokens on disk.
        assert run_job(c)[-1]["type"] == "job.completed"
        codex_exec()
        assert setup.issuer.stats().refreshes == 1

        # Codex refreshes first (the daemon still holds the expired tokens); the daemon
        # re-reads under auth.lock (or its watcher already did) and adopts Codex's.
        c.call("events/subscribe", {"topics": ["account"]})
        write_login(setup.env, setup.issuer.issue_tokens(access_ttl_s=-60))
        wait_notification(c, "account/updated")
        codex_exec()
        assert setup.issuer.stats().refreshes == 2
        assert run_job(c)[-1]["type"] == "job.completed"
    stats = setup.issuer.stats()
    assert (stats.refreshes, stats.reuses, stats.refresh_rejections) == (2, 0, 0)


@pytest.mark.anyio
async def test_the_shared_refresh_wait_in_the_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same hundred waiters in-process against the issuer on loopback, to time the wait
    itself: each caller's wait minus the one refresh round trip (printed, never asserted)."""
    import anyio

    from codexd.auth.oauth import OAuthClient
    from codexd.auth.session import AuthSession
    from codexd.auth.stores import FileStore
    from codexd.testing.fake_issuer import FakeIssuer

    issuer = FakeIssuer(refresh_delay_s=0.05)
    async with anyio.create_task_group() as tg, httpx.AsyncClient() as http:
        origin = await tg.start(issuer.serve)
        tokens = issuer.issue_tokens(access_ttl_s=-60)
        write_login({"CODEX_HOME": str(tmp_path)}, tokens)
        oauth = OAuthClient(http, origin)
        round_trips: list[float] = []

        async def timed_refresh(token: Secret, reason: object) -> object:
            started = time.perf_counter()
            try:
                return await oauth.refresh(token, reason)  # type: ignore[arg-type]
            finally:
                round_trips.append(time.perf_counter() - started)

        session = AuthSession(
            codex_home=str(tmp_path),
            store=FileStore(str(tmp_path)),
            refresher=timed_refresh,  # type: ignore[arg-type]
            env={},
        )
        await session.load()
        waits: list[float] = []

        async def job() -> None:
            started = time.perf_counter()
            creds = await session.credentials()
            waits.append(time.perf_counter() - started)
            assert creds.bearer != Secret(tokens.access_token)

        async with anyio.create_task_group() as jobs:
            for _ in range(MANY):
                jobs.start_soon(job)
        tg.cancel_scope.cancel()
    assert len(round_trips) == 1 and len(waits) == MANY
    assert issuer.stats().refreshes == 1 and issuer.stats().reuses == 0
    extra_ms = sorted((w - round_trips[0]) * 1000 for w in waits)
    with capsys.disabled():
        print(
            f"\n[bench] {MANY} waiters, one refresh round trip of {round_trips[0] * 1000:.1f} ms "
            f"(50 ms of it the issuer's delay); wait beyond it: median "
            f"{statistics.median(extra_ms):.2f} ms, max {extra_ms[-1]:.2f} ms"
        )


def test_models_list_takes_context_windows_and_levels_from_the_backend_never_prices(
    setup: Setup,
) -> None:
    """Under a ChatGPT login `models/list` reads the backend's model list as Codex does (once,
    then from memory): its context windows and reasoning levels replace the bundled ones for
    the models the catalog knows; its prices and its other models are not taken."""
    setup.fake.list_codex_models(
        [
            {
                "slug": "gpt-5.1-codex-max",
                "context_window": 372000,
                "default_reasoning_level": "high",
                "supported_reasoning_levels": [
                    {"effort": "low", "description": "fast"},
                    {"effort": "high", "description": "deep"},
                ],
                "visibility": "list",
            },
            {"slug": "gpt-5.1", "price": {"input": 99, "cached_input": 99, "output": 99}},
            {"slug": "not-in-the-catalog", "context_window": 1000},
        ]
    )
    tokens = setup.issuer.issue_tokens()
    write_login(setup.env, tokens)
    with setup.daemon() as d, Client(d.socket) as c:
        first = {m["slug"]: m for m in c.call("models/list")["models"]}
        again = {m["slug"]: m for m in c.call("models/list")["models"]}
    codex_max = first["gpt-5.1-codex-max"]
    assert (codex_max["context_window"], codex_max["default_reasoning_level"]) == (372000, "high")
    assert codex_max["supported_reasoning_levels"] == ["low", "high"]
    assert codex_max["price"] is None  # still unpriced: the list is no source of prices
    assert first["gpt-5.1"]["price"]["input"] == 1.25
    assert first["gpt-5.1"]["price"]["source"].startswith("https://developers.openai.com/")
    assert "not-in-the-catalog" not in first
    assert again == first
    (asked,) = [r for r in setup.fake.requests if r.path == "/backend-api/codex/models"]
    assert asked.query == {"client_version": "0.169.0"}
    assert asked.headers["authorization"] == f"Bearer {tokens.access_token}"
    assert asked.headers["chatgpt-account-id"] == "acct_fake0001"


def test_models_list_keeps_the_bundled_metadata_when_the_backend_list_is_bad(
    setup: Setup,
) -> None:
    write_login(setup.env, setup.issuer.issue_tokens())
    setup.fake.list_codex_models([{"slug": "gpt-5.1-codex-max", "context_window": "wide"}])
    with setup.daemon() as d, Client(d.socket) as c:
        models = {m["slug"]: m for m in c.call("models/list")["models"]}
        log = d.stderr()
    assert models["gpt-5.1-codex-max"]["context_window"] == 272000
    assert "the provider's model list is not a model catalog" in log


def test_models_list_asks_only_the_backend_and_only_through_a_provider_sent_there(
    setup: Setup,
) -> None:
    """The ChatGPT login's model list is read only for a provider whose requests go to the
    ChatGPT backend: not through ollama, and not through `openai` once `openai_base_url`
    sends it elsewhere (the ChatGPT token must not go there)."""
    setup.fake.list_codex_models([{"slug": "gpt-5.1-codex-max", "context_window": 372000}])
    tokens = setup.issuer.issue_tokens()
    write_login(setup.env, tokens)
    elsewhere = f'openai_base_url = "{setup.fake.base_url}"\n'
    write_config(setup.env, elsewhere + chatgpt_config(setup.fake))
    with setup.daemon() as d, Client(d.socket) as c:
        for params in ({}, {"provider": "openai"}, {"provider": "ollama"}):
            models = {m["slug"]: m for m in c.call("models/list", params)["models"]}
            assert models["gpt-5.1-codex-max"]["context_window"] == 272000  # the bundled one
    asked = [r for r in setup.fake.requests if r.path.endswith("/models")]
    assert asked == []
    assert_no_secrets(secrets_of(tokens), *(str(r.headers) for r in setup.fake.requests))
