"""The README's config example is a config the daemon loads, and means what the README says."""

from __future__ import annotations

import re
from pathlib import Path

from codexd.config.load import load_config

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("### Pointing codexd at another OpenAI-compatible server", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's example has no ```toml block"
    return match.group(1)


def test_the_readme_example_loads_and_routes_as_described(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(readme_example())
    snap = load_config(str(tmp_path), {"LOCAL_API_KEY": "k"})
    assert snap.route("openai", chatgpt_auth=False).base_url == "http://127.0.0.1:8000/v1"
    local = snap.providers["local"]
    assert (local.base_url, local.env_key, local.wire_api) == (
        "http://127.0.0.1:11434/v1",
        "LOCAL_API_KEY",
        "chat",
    )
    assert snap.route("local", chatgpt_auth=False).base_url == "http://127.0.0.1:11434/v1"
