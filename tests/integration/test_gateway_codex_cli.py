"""Codex CLI (npm `@openai/codex`) through the gateway's TCP address against the fake.

The CLI is installed with npm into a cache dir once (~300 MB); the
test skips, saying why, where npm is missing or the install fails (no network).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from codexctl import Client
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.codex_cli import codex_binary
from tests.integration.test_gateway import gateway, gateway_env, token_of  # noqa: F401

RUN_TIMEOUT_S = 120


def test_codex_exec_through_the_gateway(
    gateway: DaemonProcess,  # noqa: F811
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    codex = codex_binary()
    home = tmp_path / "codex-cli-home"
    home.mkdir()
    (home / "config.toml").write_text(
        'model_provider = "codexd"\nmodel = "gpt-5"\n'
        "[model_providers.codexd]\n"
        'name = "codexd"\n'
        f'base_url = "http://{gateway.env["GATEWAY_TCP"]}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "CODEXD_GATEWAY_TOKEN"\n'
        "stream_max_retries = 0\n"
        "[analytics]\nenabled = false\n"
        "[features]\nplugins = false\napps = false\nshell_snapshot = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    env.update(CODEX_HOME=str(home), CODEXD_GATEWAY_TOKEN=token_of(gateway))
    done = subprocess.run(
        [codex, "exec", "--skip-git-repo-check", "--ephemeral", "Say hello"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert fake_openai.reply_text in done.stdout
    sent = fake_openai.model_requests("/v1/responses")
    assert len(sent) == 1
    # The daemon's key went upstream, never the gateway token Codex sent us.
    assert sent[0].headers["authorization"] == "Bearer sk-test-key-for-the-fake-0000"
    with Client(gateway.socket) as c:
        jobs = c.call("job/list", {})["jobs"]
    assert [(j["client"], j["state"]) for j in jobs] == [("codex_exec", "completed")]
