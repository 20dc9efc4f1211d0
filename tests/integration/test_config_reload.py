"""Config hot reload through a real daemon: edits, SIGHUP, config/reload,
located errors, profiles, and a `config/read` without secrets."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codexctl import Client, RpcError
from codexctl.cli import main as codexctl_main
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.integration.test_jobs_upstream import run_job

# The hang guard for every wait on a notification; the promise is "within 2 s" of a save
# (bench/config.py measures it), the guard only keeps a broken watcher from hanging the suite.
HANG_GUARD_S = 5.0


def base_config(fake: FakeOpenAI, *, model: str = "gpt-5", extra: str = "") -> str:
    return (
        f'openai_base_url = "{fake.base_url}"\nmodel = "{model}"\n'
        "[model_providers.fake]\n"
        f'name = "fake"\nbase_url = "{fake.base_url}"\nenv_key = "FAKE_KEY"\n' + extra
    )


def config_path(env: dict[str, str]) -> Path:
    return Path(env["CODEX_HOME"]) / "config.toml"


def wait_note(
    client: Client,
    method: str,
    predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = HANG_GUARD_S,
) -> dict[str, Any]:
    """The first notification `method` whose params satisfy `predicate` (others are skipped)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        note = client.next_notification(timeout=left)
        if note is None:
            break
        seen.append(note.method)
        if note.method == method and predicate(note.params):
            params: dict[str, Any] = note.params
            return params
    pytest.fail(f"no {method} within {timeout}s; saw {seen}")


def save_atomically(path: Path, text: str) -> None:
    """Write a temp file and rename it over `path`, as vim and VS Code save."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def effective_model(client: Client) -> str | None:
    model: str | None = client.call("config/read")["effective"]["model"]
    return model


def wait_reloaded_with(client: Client, events: Client, model: str) -> dict[str, Any]:
    """Wait for a `config/reloaded` after which the effective model is `model`."""
    return wait_note(events, "config/reloaded", lambda _: effective_model(client) == model)


@pytest.fixture
def events_for(upstream_daemon: DaemonProcess) -> Iterator[Client]:
    """A connection subscribed to the `config` topic."""
    with Client(upstream_daemon.socket) as c:
        assert c.call("events/subscribe", {"topics": ["config"]}) == {}
        yield c


# --------------------------------------------------------------------------- located errors

MISTAKES: list[tuple[str, str, str, str | None]] = [  # id, text, where, problem
    ("toml-syntax", 'model = "gpt-5"\nmodel_provider = [\n', "config.toml:2: invalid TOML", None),
    (
        "wrong-type",
        '[model_providers.az]\nname = "Az"\nrequest_max_retries = "x"\n',
        "config.toml:3: model_providers.az.request_max_retries:",
        'expected an integer ≤ 100, got "x"',
    ),
    (
        "out-of-range",
        "[model_providers.az]\nstream_max_retries = 101\n",
        "config.toml:2: model_providers.az.stream_max_retries:",
        "expected an integer ≤ 100, got 101",
    ),
    (
        "unknown-wire-api",
        '[model_providers.az]\nwire_api = "grpc"\n',
        "config.toml:2: model_providers.az.wire_api:",
        '"grpc"',
    ),
    (
        "reserved-provider-id",
        '[model_providers.openai]\nname = "mine"\n',
        "config.toml:1: model_providers.openai:",
        "cannot be overridden",
    ),
    (
        "unknown-codexd-key",
        "[codexd]\nmax_conections = 10\n",
        "config.toml:2: codexd.max_conections:",
        "max_connections",
    ),
]


def test_each_kind_of_mistake_is_located_and_the_old_config_stays(
    upstream_env: dict[str, str],
    upstream_daemon: DaemonProcess,
    fake_openai: FakeOpenAI,
    events_for: Client,
) -> None:
    path = config_path(upstream_env)
    good = path.read_text()
    with Client(upstream_daemon.socket) as c:
        generation = c.call("daemon/status")["config"]["generation"]
        last_error: str | None = None
        for name, text, where, problem in MISTAKES:
            save_atomically(path, text)  # no half-written file in between
            previous = last_error

            def new_error(params: dict[str, Any], previous: str | None = previous) -> bool:
                return bool(params["error"] != previous)

            note = wait_note(events_for, "config/invalid", new_error)
            error = last_error = note["error"]
            assert error.startswith(where), (name, error)
            if problem is not None:
                assert problem in error, (name, error)
            assert note["path"] == str(path)
            status = c.call("daemon/status")["config"]
            assert status["error"] == error
            assert status["generation"] == generation, "an invalid file must not be swapped in"
            with pytest.raises(RpcError) as info:
                c.call("config/reload")
            assert info.value.code == -32050 and info.value.kind == "config_invalid"
            assert info.value.message == error
            # The old snapshot is in force: a job still goes to the fake with the old model.
            _, events = run_job(c, {"input": f"still working after {name}"})
            assert events[-1]["event"]["type"] == "job.completed"
            assert fake_openai.model_requests()[-1].body["model"] == "gpt-5"
        save_atomically(path, good)
        wait_note(events_for, "config/reloaded")
        assert c.call("daemon/status")["config"]["error"] is None
    assert "config invalid, keeping generation" in upstream_daemon.stderr()


# --------------------------------------------------------------------------- how files change


def test_an_edit_in_place_reloads(
    upstream_env: dict[str, str],
    upstream_daemon: DaemonProcess,
    fake_openai: FakeOpenAI,
    events_for: Client,
) -> None:
    path = config_path(upstream_env)
    with Client(upstream_daemon.socket) as c:
        before = c.call("daemon/status")["config"]["generation"]
        with open(path, "r+") as f:  # same inode, truncated and rewritten
            f.truncate(0)
            f.write(base_config(fake_openai, model="gpt-5-mini"))
        note = wait_reloaded_with(c, events_for, "gpt-5-mini")
        assert note["generation"] > before
        assert note["path"] == str(path)
        _, events = run_job(c, {"input": "which model?"})
    assert events[-1]["event"]["type"] == "job.completed"
    assert fake_openai.model_requests()[-1].body["model"] == "gpt-5-mini"


def test_a_save_by_rename_reloads(
    upstream_env: dict[str, str],
    upstream_daemon: DaemonProcess,
    fake_openai: FakeOpenAI,
    events_for: Client,
) -> None:
    path = config_path(upstream_env)
    with Client(upstream_daemon.socket) as c:
        for model in ("gpt-4.1", "gpt-5-codex"):  # the second save replaces a replaced inode
            save_atomically(path, base_config(fake_openai, model=model))
            wait_reloaded_with(c, events_for, model)


def test_deletion_then_recreation_reloads_both_times(
    upstream_env: dict[str, str],
    upstream_daemon: DaemonProcess,
    fake_openai: FakeOpenAI,
    events_for: Client,
) -> None:
    path = config_path(upstream_env)
    with Client(upstream_daemon.socket) as c:
        path.unlink()
        # A missing file means all defaults: no model is set any more.
        wait_reloaded_with(c, events_for, None)  # type: ignore[arg-type]
        path.write_text(base_config(fake_openai, model="gpt-4o-mini"))
        wait_reloaded_with(c, events_for, "gpt-4o-mini")
        _, events = run_job(c, {"input": "back"})
    assert events[-1]["event"]["type"] == "job.completed"
    assert fake_openai.model_requests()[-1].body["model"] == "gpt-4o-mini"


# --------------------------------------------------------------------------- forced reloads


@pytest.fixture
def linked_config(upstream_env: dict[str, str], tmp_path: Path) -> Path:
    """config.toml as a symlink into a dotfiles directory, as dotfile managers set it up.

    Editing the target changes nothing inside $CODEX_HOME, so the directory watcher stays
    silent: whatever reload follows was forced (SIGHUP or config/reload)."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "config.toml"
    link = config_path(upstream_env)
    target.write_text(link.read_text())
    link.unlink()
    link.symlink_to(target)
    return target


def test_sighup_reloads(
    linked_config: Path,
    upstream_daemon: DaemonProcess,
    fake_openai: FakeOpenAI,
    events_for: Client,
) -> None:
    with Client(upstream_daemon.socket) as c:
        before = c.call("daemon/status")["config"]["generation"]
        linked_config.write_text(base_config(fake_openai, model="gpt-5-codex"))
        upstream_daemon.signal(signal.SIGHUP)
        note = wait_note(events_for, "config/reloaded")
        assert note["generation"] == before + 1
        assert effective_model(c) == "gpt-5-codex"


def test_config_reload_returns_generation_and_changed(
    linked_config: Path,
    upstream_daemon: DaemonProcess,
    fake_openai: FakeOpenAI,
    events_for: Client,
) -> None:
    with Client(upstream_daemon.socket) as c:
        before = c.call("daemon/status")["config"]["generation"]
        assert c.call("config/reload") == {"generation": before, "changed": False}
        linked_config.write_text(base_config(fake_openai, model="gpt-4.1"))
        assert c.call("config/reload") == {"generation": before + 1, "changed": True}
        assert wait_note(events_for, "config/reloaded")["generation"] == before + 1
        assert effective_model(c) == "gpt-4.1"
        assert c.call("config/reload") == {"generation": before + 1, "changed": False}

        linked_config.write_text("[codexd]\nmax_connections = 0\n")
        with pytest.raises(RpcError) as info:
            c.call("config/reload")
        assert info.value.code == -32050
        assert info.value.message == (
            "config.toml:2: codexd.max_connections: expected an integer ≥ 1, got 0"
        )
        assert wait_note(events_for, "config/invalid")["error"] == info.value.message
        assert c.call("daemon/status")["config"]["generation"] == before + 1
        assert effective_model(c) == "gpt-4.1"


def test_an_invalid_config_at_start_up_exits_1_with_the_located_message(
    daemon_env: dict[str, str],
) -> None:
    config_path(daemon_env).write_text(
        'model = "gpt-5"\n\n[model_providers.azure]\nrequest_max_retries = "x"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "codexd", "run"],
        env=daemon_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert (
        "config.toml:4: model_providers.azure.request_max_retries: expected an integer ≤ 100, "
        'got "x"'
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(daemon_env["CODEXD_SOCKET"])


# --------------------------------------------------------------------------- profiles, secrets

PROFILES = """
[profiles.cheap]
model = "gpt-5-mini"
[profiles.elsewhere]
model = "gpt-4.1"
model_provider = "fake"
"""


def test_requests_name_codexd_as_user_agent_unless_the_provider_sets_one(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    config_path(upstream_env).write_text(
        base_config(fake_openai, extra='http_headers = { "user-agent" = "team-tool/2" }\n')
    )
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        run_job(c, {"input": "openai"})
        assert fake_openai.model_requests()[-1].headers["user-agent"] == "codexd/0.1.0"
        run_job(c, {"input": "fake"}, provider="fake")
        # Exactly the configured one: not joined with a second User-Agent.
        assert fake_openai.model_requests()[-1].headers["user-agent"] == "team-tool/2"


def test_profiles_pick_model_and_provider(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    config_path(upstream_env).write_text(
        'profile = "cheap"\n' + base_config(fake_openai) + PROFILES
    )
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        _, events = run_job(c, {"input": "default profile"})
        assert events[-1]["event"]["type"] == "job.completed"
        req = fake_openai.model_requests()[-1]
        assert req.body["model"] == "gpt-5-mini"
        assert req.headers["authorization"] == "Bearer " + upstream_env["OPENAI_API_KEY"]

        job_id, events = run_job(c, {"input": "named profile"}, profile="elsewhere")
        assert events[-1]["event"]["type"] == "job.completed"
        req = fake_openai.model_requests()[-1]
        assert req.body["model"] == "gpt-4.1"
        assert req.headers["authorization"] == "Bearer " + upstream_env["FAKE_KEY"]
        job = c.call("job/get", {"job_id": job_id})
        assert (job["provider"], job["model"]) == ("fake", "gpt-4.1")

        # The body's model wins over the profile's.
        run_job(c, {"input": "explicit", "model": "gpt-5-codex"}, profile="elsewhere")
        assert fake_openai.model_requests()[-1].body["model"] == "gpt-5-codex"


SECRETS = {
    "header": "Bearer sk-proj-HeaderSecret0123456789abcdef",
    "env_value": "sk-envsecret-9876543210fedcba9876",
    "query": "qk-QuerySecretValue0123456789abcdefghij",
    "redis_password": "redis-pass-s3cr3t",
}


def test_config_read_shows_no_secret(upstream_env: dict[str, str], fake_openai: FakeOpenAI) -> None:
    upstream_env["TEAM_TOKEN_VAR"] = SECRETS["env_value"]
    config_path(upstream_env).write_text(
        base_config(fake_openai)
        + f'http_headers = {{ Authorization = "{SECRETS["header"]}", "X-Team" = "blue" }}\n'
        + 'env_http_headers = { "X-Team-Token" = "TEAM_TOKEN_VAR" }\n'
        + f'query_params = {{ "api-key" = "{SECRETS["query"]}", "api-version" = "2025-04-01" }}\n'
        + "[codexd.rate_limits.fake]\n"
        + f'backend = "redis://:{SECRETS["redis_password"]}@127.0.0.1:6399/0"\n'
    )
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        result = c.call("config/read")
        # The job still sends what the file and the environment say.
        run_job(c, {"input": "with headers"}, provider="fake")
    text = json.dumps(result)
    for name, secret in [
        *SECRETS.items(),
        ("OPENAI_API_KEY", upstream_env["OPENAI_API_KEY"]),
        ("FAKE_KEY", upstream_env["FAKE_KEY"]),
    ]:
        assert secret not in text, f"config/read shows the {name}"
        assert secret.split()[-1][:12] not in text, f"config/read shows part of the {name}"
    fake = result["effective"]["providers"]["fake"]
    assert fake["http_headers"]["X-Team"] == "blue"  # harmless values stay readable
    assert fake["http_headers"]["Authorization"] == "<redacted>"
    assert fake["env_http_headers"] == {"X-Team-Token": "TEAM_TOKEN_VAR"}  # the name, not value
    assert fake["query_params"]["api-version"] == "2025-04-01"
    req = fake_openai.model_requests()[-1]
    assert req.headers["x-team-token"] == SECRETS["env_value"]
    assert req.query["api-key"] == SECRETS["query"]


def test_credentials_and_query_values_inside_urls_are_never_shown(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    """`config/read`, `codexctl config show`, and a config error that quotes a URL."""
    port = fake_openai.port
    config_path(upstream_env).write_text(
        f'openai_base_url = "http://me:pw-openai@127.0.0.1:{port}/v1?token=tok-openai"\n'
        'chatgpt_base_url = "https://me:pw-chatgpt@chatgpt.test/backend-api/?sig=sig-chatgpt"\n'
        "[model_providers.fake]\n"
        f'name = "fake"\nbase_url = "http://pw-only-fake@127.0.0.1:{port}/v1?key=key-fake"\n'
        'env_key = "FAKE_KEY"\n'
    )
    secrets = ["pw-openai", "tok-openai", "pw-chatgpt", "sig-chatgpt", "pw-only-fake", "key-fake"]
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        result = c.call("config/read")
        out = io.StringIO()
        assert codexctl_main(["config", "show", "--socket", d.socket], out=out) == 0
        # A short URL does not look like a key: the error quoting it must still hide its parts.
        config_path(upstream_env).write_text(
            '[codexd]\nauth_issuer = "ftp://me:pw-issuer@h/?t=tk-issuer"\n'
        )
        with pytest.raises(RpcError) as info:
            c.call("config/reload")
        assert info.value.kind == "config_invalid" and "auth_issuer" in info.value.message
        after = c.call("config/read")
        log = d.stderr()
    secrets += ["pw-issuer", "tk-issuer"]
    shown = [json.dumps(result), out.getvalue(), info.value.message, json.dumps(after), log]
    for secret in secrets:
        for text in shown:
            assert secret not in text, secret
    effective = result["effective"]
    assert effective["openai_base_url"] == (
        f"http://<redacted>@127.0.0.1:{port}/v1?token=<redacted>"
    )
    assert effective["providers"]["fake"]["base_url"].startswith("http://<redacted>@127.0.0.1")
    assert "chatgpt.test/backend-api/?sig=<redacted>" in out.getvalue()
    assert "ftp://[redacted]@h/?t=[redacted]" in info.value.message


def test_a_header_value_with_a_line_break_is_config_invalid_at_start_and_on_reload(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    """Accepted at load, such a value used to fail every job of the provider later."""
    broken = base_config(fake_openai, extra='http_headers = { "X-Team" = "blue\\r\\nX-Evil: 1" }\n')
    config_path(upstream_env).write_text(broken)
    proc = subprocess.run(
        [sys.executable, "-m", "codexd", "run"],
        env=upstream_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1, proc.stderr
    assert "config.toml:7: model_providers.fake.http_headers.X-Team: the value holds a line" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr

    config_path(upstream_env).write_text(
        base_config(fake_openai, extra='http_headers = { "X-Team" = "blue" }\n')
    )
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        config_path(upstream_env).write_text(broken)
        with pytest.raises(RpcError) as info:
            c.call("config/reload")
        assert info.value.kind == "config_invalid"
        assert info.value.data is not None
        assert info.value.data.key == "model_providers.fake.http_headers.X-Team"
        # The old config stays in force: the job runs with the header as it was.
        _, events = run_job(c, {"input": "still fine"}, provider="fake")
        assert events[-1]["event"]["type"] == "job.completed"
    assert fake_openai.model_requests()[-1].headers["x-team"] == "blue"
