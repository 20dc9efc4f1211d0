"""`codexd demo` (what `make demo` runs): offline, end to end, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys

from codexd.demo import DEMO_REPLY


def test_demo_streams_a_reply_and_shows_usage_and_cost() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    result = subprocess.run(
        [sys.executable, "-m", "codexd", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert DEMO_REPLY in result.stdout
    assert "completed after 1 attempt(s)" in result.stdout
    assert "usage: " in result.stdout
    # the default model has no published price: its cost is the default price's estimate
    assert "cost:  ~$" in result.stdout
    assert "gpt-5.1-codex-max has no published price" in result.stdout
    assert "upstream saw 1 request(s)" in result.stdout
