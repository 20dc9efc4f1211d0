"""Codex CLI (npm `@openai/codex`, the version pinned in tests/codex_cli.py) through the
gateway's TCP address against the fake, set up as docs/gateway.md recommends: Codex and
codexd share one `$CODEX_HOME`, Codex's provider runs `codexctl gateway token` for its bearer,
and a profile file picks that provider.

The CLI is installed with npm into a cache dir once (~300 MB); the
tests skip, saying why, where npm is missing or the install fails (no network).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codexctl import Client
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, Reply
from tests.codex_cli import codex_binary
from tests.conftest import require
from tests.integration.test_gateway import gateway, gateway_env, token_of  # noqa: F401

RUN_TIMEOUT_S = 120
DOC = Path(__file__).parents[2] / "docs" / "gateway.md"
# Keeps Codex off the network and out of the shell in tests; continues a [features] table.
OFFLINE = "plugins = false\napps = false\nshell_snapshot = false\n[analytics]\nenabled = false\n"


def documented(file_name: str) -> str:
    """The TOML block of docs/gateway.md's Codex section headed `# $CODEX_HOME/<file_name>`."""
    head = f"# $CODEX_HOME/{file_name}\n"
    return next(
        block.removeprefix(head)
        for block in re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
        if block.startswith(head)
    )


@pytest.fixture
def codex_gateway(gateway_env: dict[str, str]) -> Iterator[DaemonProcess]:  # noqa: F811
    """The daemon of test_gateway.py, whose config.toml also holds the documented Codex
    provider (with this gateway's address), and the documented `gateway` profile beside it."""
    home = Path(gateway_env["CODEX_HOME"])
    provider = documented("config.toml")
    assert "127.0.0.1:8765" in provider and provider.splitlines()[-2] == "[features]"
    with (home / "config.toml").open("a") as f:
        f.write(provider.replace("127.0.0.1:8765", gateway_env["GATEWAY_TCP"]) + OFFLINE)
    (home / "gateway.config.toml").write_text(documented("gateway.config.toml"))
    with DaemonProcess(gateway_env) as proc:
        yield proc


def codex_env(daemon: DaemonProcess) -> dict[str, str]:
    """The user's shell: the daemon's CODEX_HOME and socket, codexctl on PATH, and no OpenAI
    key or token of any kind."""
    codexctl = os.path.join(os.path.dirname(sys.executable), "codexctl")
    require(os.access(codexctl, os.X_OK), f"needs the codexctl script beside {sys.executable}")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CODEX", "OPENAI")) and not k.endswith(("_KEY", "_TOKEN"))
    }
    env.update(
        CODEX_HOME=daemon.env["CODEX_HOME"],
        CODEXD_SOCKET=daemon.socket,
        PATH=os.path.dirname(codexctl) + os.pathsep + os.environ.get("PATH", ""),
    )
    return env


def run_codex(daemon: DaemonProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [codex_binary(), "exec", "--skip-git-repo-check", *args],
        cwd=cwd,
        env=codex_env(daemon),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def jobs_of(daemon: DaemonProcess) -> list[tuple[str, str, str, str]]:
    with Client(daemon.socket) as c:
        jobs = c.call("job/list", {})["jobs"]
    return [(j["client"], j["provider"], j["model"], j["state"]) for j in jobs]


def last_user_text(body: Any) -> str:
    """The text of the last message in a Responses `input`."""
    item = body["input"][-1]
    return " ".join(part.get("text", "") for part in item.get("content", []))


def test_codex_exec_with_the_auth_command(
    codex_gateway: DaemonProcess, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """The recommended set-up: Codex runs `codexctl gateway token` for its bearer, with no
    key or token in its environment; the job is codexd's (its default provider, not the
    `codexd` one that points back at the gateway), under Codex's client name."""
    done = run_codex(codex_gateway, tmp_path, "--ephemeral", "--profile", "gateway", "Say hello")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == fake_openai.reply_text
    sent = fake_openai.model_requests("/v1/responses")
    assert len(sent) == 1
    # The daemon's key went upstream, never the gateway token Codex sent us.
    assert sent[0].headers["authorization"] == "Bearer sk-test-key-for-the-fake-0000"
    assert jobs_of(codex_gateway) == [("codex_exec", "openai", "gpt-5", "completed")]
    with Client(codex_gateway.socket) as c:
        rows = c.call("usage/read", {"group_by": ["client"]})["rows"]
    assert [(r["client"], r["requests"]) for r in rows] == [("codex_exec", 1)]


def test_codex_says_why_when_the_auth_command_fails(
    codex_gateway: DaemonProcess, tmp_path: Path
) -> None:
    """With no daemon on the socket, Codex shows codexctl's own one-line reason and stops."""
    codex_gateway.stop()
    done = run_codex(codex_gateway, tmp_path, "--ephemeral", "-p", "gateway", "Say hello")
    assert done.returncode != 0
    assert f"codexd is not running at {codex_gateway.socket}" in done.stderr


def test_codex_profile_file_selects_the_gateway_and_model(
    codex_gateway: DaemonProcess, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """`codex exec --profile fast` layers `$CODEX_HOME/fast.config.toml` over config.toml:
    its model and provider (the gateway) are what reaches codexd and upstream."""
    home = Path(codex_gateway.env["CODEX_HOME"])
    (home / "fast.config.toml").write_text('model_provider = "codexd"\nmodel = "gpt-5-mini"\n')
    done = run_codex(codex_gateway, tmp_path, "--ephemeral", "--profile", "fast", "Say hello")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == fake_openai.reply_text
    assert [r.body["model"] for r in fake_openai.model_requests("/v1/responses")] == ["gpt-5-mini"]
    assert jobs_of(codex_gateway) == [("codex_exec", "openai", "gpt-5-mini", "completed")]


def test_codex_compacts_a_long_thread_through_the_gateway(
    codex_gateway: DaemonProcess, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """Past `model_auto_compact_token_limit`, Codex on a provider it does not take for OpenAI
    compacts by itself: an ordinary Responses request asking for a summary, which the
    gateway serves as any other job; the resumed turn then carries that summary."""
    home = Path(codex_gateway.env["CODEX_HOME"])
    (home / "small.config.toml").write_text(
        'model_provider = "codexd"\nmodel_auto_compact_token_limit = 1000\n'
    )
    first = run_codex(codex_gateway, tmp_path, "-p", "small", "Say hello")
    assert first.returncode == 0, first.stderr[-2000:]
    fake_openai.script(Reply(text="SUMMARY-7f3a: the user said hello."))
    resumed = run_codex(codex_gateway, tmp_path, "-p", "small", "resume", "--last", "Say it again")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.strip() == fake_openai.reply_text
    sent = fake_openai.model_requests()
    assert [r.path for r in sent] == ["/v1/responses"] * 3
    prompts = [last_user_text(r.body) for r in sent]
    assert prompts[0] == "Say hello" and prompts[2] == "Say it again"
    assert prompts[1] not in ("Say hello", "Say it again")  # Codex's summarisation prompt
    assert "SUMMARY-7f3a" in str(sent[2].body["input"])
    assert jobs_of(codex_gateway) == [("codex_exec", "openai", "gpt-5", "completed")] * 3


def test_codex_exec_with_the_env_var_set_up(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    """The older set-up, in a CODEX_HOME of Codex's own: the token exported into the
    environment variable the provider's `env_key` names."""
    home = tmp_path / "codex-cli-home"
    home.mkdir()
    (home / "config.toml").write_text(
        'model_provider = "codexd"\nmodel = "gpt-5"\n'
        "[model_providers.codexd]\n"
        'name = "codexd"\n'
        f'base_url = "http://{gateway.env["GATEWAY_TCP"]}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "CODEXD_GATEWAY_TOKEN"\n'
        "[features]\nunbounded_connection_retries = false\n" + OFFLINE
    )
    env = {**codex_env(gateway), "CODEX_HOME": str(home), "CODEXD_GATEWAY_TOKEN": token_of(gateway)}
    done = subprocess.run(
        [codex_binary(), "exec", "--skip-git-repo-check", "--ephemeral", "Say hello"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == fake_openai.reply_text
    assert jobs_of(gateway) == [("codex_exec", "openai", "gpt-5", "completed")]


def test_codex_runs_the_auth_command_again_after_a_401(
    codex_gateway: DaemonProcess, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """A token rotated while Codex runs: the first bearer Codex got is refused with the
    gateway's 401, Codex runs the command again and the turn goes through with the new one."""
    home = Path(codex_gateway.env["CODEX_HOME"])
    stale = token_of(codex_gateway)
    token_of(codex_gateway, rotate=True)
    runs = tmp_path / "runs"
    command = tmp_path / "token-once-stale"
    command.write_text(
        "#!/bin/sh\n"
        f'echo run >> "{runs}"\n'
        f'if [ "$(wc -l < "{runs}")" -eq 1 ]; then echo "{stale}"; exit 0; fi\n'
        'exec codexctl "$@"\n'
    )
    command.chmod(0o700)
    config = (home / "config.toml").read_text()
    assert 'command = "codexctl"' in config
    config = config.replace('command = "codexctl"', f'command = "{command}"')
    (home / "config.toml").write_text(config)
    done = run_codex(codex_gateway, tmp_path, "--ephemeral", "-p", "gateway", "Say hello")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == fake_openai.reply_text
    assert runs.read_text().count("run") >= 2
    assert jobs_of(codex_gateway) == [("codex_exec", "openai", "gpt-5", "completed")]
