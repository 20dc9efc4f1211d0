"""Profile files through a real daemon and the fake OpenAI: a request (or codexctl) naming a
profile, the profile in force reloading when its file changes, an invalid profile file
reported, and config/read's layers."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from codexctl import Client, RpcError
from codexctl.cli import main as codexctl_main
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.integration.test_config_reload import (
    base_config,
    config_path,
    effective_model,
    save_atomically,
    wait_note,
)
from tests.integration.test_jobs_upstream import run_job

TEAM_KEY = "sk-test-key-for-the-team-0002"


def work_profile(fake: FakeOpenAI, model: str = "gpt-4.1") -> str:
    """A profile file that picks a model and a provider of its own."""
    return (
        f'model = "{model}"\nmodel_provider = "team"\n\n'
        "[model_providers.team]\n"
        f'base_url = "{fake.base_url}"\nenv_key = "TEAM_KEY"\n'
    )


def profile_path(env: dict[str, str], name: str) -> Path:
    return Path(env["CODEX_HOME"]) / f"{name}.config.toml"


@pytest.fixture
def team_env(upstream_env: dict[str, str], fake_openai: FakeOpenAI) -> dict[str, str]:
    upstream_env["TEAM_KEY"] = TEAM_KEY
    profile_path(upstream_env, "work").write_text(work_profile(fake_openai))
    return upstream_env


@pytest.fixture
def in_force(team_env: dict[str, str], fake_openai: FakeOpenAI) -> Iterator[DaemonProcess]:
    """A daemon whose config.toml selects the profile file `work`."""
    config_path(team_env).write_text('profile = "work"\n' + base_config(fake_openai))
    with DaemonProcess(team_env) as d:
        yield d


def test_job_submit_with_a_profile_file_selects_its_model_and_provider(
    team_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    with DaemonProcess(team_env) as d, Client(d.socket) as c:
        job_id, events = run_job(c, {"input": "through the profile"}, profile="work")
        assert events[-1]["event"]["type"] == "job.completed"
        req = fake_openai.model_requests()[-1]
        assert req.body["model"] == "gpt-4.1"
        assert req.headers["authorization"] == f"Bearer {TEAM_KEY}"
        job = c.call("job/get", {"job_id": job_id})
        assert (job["provider"], job["model"]) == ("team", "gpt-4.1")

        # Without the profile, config.toml alone.
        run_job(c, {"input": "without"})
        assert fake_openai.model_requests()[-1].body["model"] == "gpt-5"

        with pytest.raises(RpcError) as info:
            c.call("job/submit", {"body": {"input": "x"}, "profile": "nope"})
        assert info.value.kind == "invalid_params"
        assert str(profile_path(team_env, "nope")) in info.value.message
        assert "[profiles.nope]" in info.value.message
        assert info.value.message.endswith("- at `$.profile`")

        # A profile file that does not validate: located in it, and no job is made.
        profile_path(team_env, "bad").write_text("[codexd]\nmax_conections = 1\n")
        with pytest.raises(RpcError) as info:
            c.call("job/submit", {"body": {"input": "x"}, "profile": "bad"})
        assert info.value.kind == "config_invalid"
        assert info.value.message.startswith("bad.config.toml:2: codexd.max_conections: ")
        assert len(c.call("job/list")["jobs"]) == 2


def test_a_named_profile_follows_edits_of_its_file(
    team_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    with DaemonProcess(team_env) as d, Client(d.socket) as c, Client(d.socket) as events:
        events.call("events/subscribe", {"topics": ["config"]})
        run_job(c, {"input": "first"}, profile="work")
        # From now on a reload can only come from the watcher seeing the edit.
        d.wait_config_watched()
        save_atomically(profile_path(team_env, "work"), work_profile(fake_openai, "gpt-4o"))
        wait_note(events, "config/reloaded")
        run_job(c, {"input": "after the edit"}, profile="work")
        assert fake_openai.model_requests()[-1].body["model"] == "gpt-4o"


def test_codexctl_profile_before_ask_selects_the_profile(
    team_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    with DaemonProcess(team_env) as d:
        out, err = io.StringIO(), io.StringIO()
        status = codexctl_main(
            ["--profile", "work", "ask", "hello", "--socket", d.socket], out=out, err=err
        )
        assert status == 0, err.getvalue()
        assert out.getvalue().strip() != ""
        req = fake_openai.model_requests()[-1]
        assert req.body["model"] == "gpt-4.1"
        assert req.headers["authorization"] == f"Bearer {TEAM_KEY}"

        # After the command too, and an unknown one is refused naming the file.
        err = io.StringIO()
        status = codexctl_main(
            ["ask", "hello", "--profile", "nope", "--socket", d.socket], out=io.StringIO(), err=err
        )
        assert status == 1
        assert str(profile_path(team_env, "nope")) in err.getvalue()


def test_codexctl_profile_applies_only_to_commands_that_submit() -> None:
    err = io.StringIO()
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(err):
        codexctl_main(["--profile", "work", "status"], out=io.StringIO(), err=err)
    assert info.value.code == 2
    assert "--profile applies to ask, submit and embed, not status" in err.getvalue()


def test_editing_the_profile_file_in_force_reloads(
    team_env: dict[str, str], in_force: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    with Client(in_force.socket) as c, Client(in_force.socket) as events:
        events.call("events/subscribe", {"topics": ["config"]})
        assert effective_model(c) == "gpt-4.1"
        in_force.wait_config_watched()
        before = c.call("daemon/status")["config"]["generation"]
        save_atomically(profile_path(team_env, "work"), work_profile(fake_openai, "gpt-4o"))
        note = wait_note(events, "config/reloaded")
        assert note["generation"] == before + 1
        assert effective_model(c) == "gpt-4o"
        run_job(c, {"input": "which model?"})
        req = fake_openai.model_requests()[-1]
        assert req.body["model"] == "gpt-4o"
        assert req.headers["authorization"] == f"Bearer {TEAM_KEY}"


def test_an_invalid_profile_file_is_reported_and_the_old_config_stays(
    team_env: dict[str, str], in_force: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    path = profile_path(team_env, "work")
    with Client(in_force.socket) as c, Client(in_force.socket) as events:
        events.call("events/subscribe", {"topics": ["config"]})
        generation = c.call("daemon/status")["config"]["generation"]
        save_atomically(path, work_profile(fake_openai) + "request_max_retries = 1000\n")
        note = wait_note(events, "config/invalid")
        assert note["path"] == str(path)
        assert note["error"].startswith(
            "work.config.toml:7: model_providers.team.request_max_retries: "
        )
        status = c.call("daemon/status")["config"]
        assert (status["error"], status["generation"]) == (note["error"], generation)
        run_job(c, {"input": "still the old config"})
        assert fake_openai.model_requests()[-1].body["model"] == "gpt-4.1"

        # Deleting the file in force: config.toml's `profile` is now at fault.
        path.unlink()
        main = str(config_path(team_env))
        note = wait_note(events, "config/invalid", lambda p: bool(p["path"] == main))
        assert str(path) in note["error"]
    assert "work.config.toml:7: model_providers.team.request_max_retries" in in_force.stderr()


def test_a_named_profile_gone_invalid_does_not_fail_the_reload_of_config_toml(
    team_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    path = profile_path(team_env, "work")
    with DaemonProcess(team_env) as d, Client(d.socket) as c, Client(d.socket) as events:
        events.call("events/subscribe", {"topics": ["config"]})
        run_job(c, {"input": "caches the profile"}, profile="work")
        generation = c.call("daemon/status")["config"]["generation"]
        save_atomically(path, work_profile(fake_openai) + "request_max_retries = 1000\n")
        save_atomically(config_path(team_env), base_config(fake_openai, model="gpt-5-mini"))
        # Whether the watcher or this call sees the files first, the answer is no error.
        result = c.call("config/reload")
        assert set(result) == {"generation", "changed"}
        note = wait_note(events, "config/invalid")
        assert note["path"] == str(path)
        assert note["error"].startswith("work.config.toml:7: model_providers.team.")
        status = c.call("daemon/status")["config"]
        assert status["generation"] == generation + 1 == result["generation"]
        assert status["error"] == note["error"]
        assert effective_model(c) == "gpt-5-mini"  # the new config.toml is in force
        run_job(c, {"input": "plain"})
        assert fake_openai.model_requests()[-1].body["model"] == "gpt-5-mini"
        run_job(c, {"input": "profile"}, profile="work")  # its previous config
        assert fake_openai.model_requests()[-1].body["model"] == "gpt-4.1"

        save_atomically(path, work_profile(fake_openai, "gpt-4o"))
        assert c.call("config/reload")["generation"] >= generation + 2
        assert c.call("daemon/status")["config"]["error"] is None
        assert "profile work invalid, its requests keep its previous config" in d.stderr()


def test_config_read_and_show_list_the_layers(
    team_env: dict[str, str], in_force: DaemonProcess
) -> None:
    with Client(in_force.socket) as c:
        layers = c.call("config/read")["layers"]
    assert layers == [
        {"path": str(config_path(team_env)), "kind": "config", "profile": None},
        {"path": str(profile_path(team_env, "work")), "kind": "profile", "profile": "work"},
    ]
    out = io.StringIO()
    assert codexctl_main(["config", "show", "--socket", in_force.socket], out=out) == 0
    shown = out.getvalue()
    assert "profile file work" in shown and str(profile_path(team_env, "work")) in shown
    assert 'model = "gpt-4.1"' in shown
