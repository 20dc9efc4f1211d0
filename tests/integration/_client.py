"""A daemon environment with the fake upstream, for the library-client tests."""

from __future__ import annotations

import os
from pathlib import Path

from codexd.testing.fake_openai import FakeOpenAI
from tests.conftest import write_config


def daemon_env_at(root: Path, fake: FakeOpenAI, extra_config: str = "") -> dict[str, str]:
    """As the `upstream_env` fixture, under `root`: the `openai` provider is the fake."""
    home = root / "codex-home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(
        CODEXD_SOCKET=str(root / "run" / "codexd.sock"),
        CODEXD_STATE_DIR=str(root / "state"),
        CODEX_HOME=str(home),
        OPENAI_API_KEY="sk-test-key-for-the-fake-0000",
    )
    write_config(env, f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n{extra_config}')
    return env
