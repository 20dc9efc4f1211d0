"""A daemon environment with the fake upstream, for the library-client tests."""

from __future__ import annotations

from pathlib import Path

from codexd.testing.fake_openai import FakeOpenAI
from tests.conftest import daemon_env_under, write_config


def daemon_env_at(root: Path, fake: FakeOpenAI, extra_config: str = "") -> dict[str, str]:
    """As the `upstream_env` fixture, under `root`: the `openai` provider is the fake."""
    env = daemon_env_under(root)
    env["OPENAI_API_KEY"] = "sk-test-key-for-the-fake-0000"
    write_config(env, f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n{extra_config}')
    return env
