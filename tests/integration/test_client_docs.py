"""docs/client.md's Python snippets run as written against a real daemon and the fake
upstream, each in its own interpreter, finding the daemon through $CODEXD_SOCKET."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from codexd.testing.daemon_process import DaemonProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
SNIPPET = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
SNIPPETS = SNIPPET.findall(DOC.read_text())
# The sections a tool author reads: each has at least one snippet.
SECTIONS = ("Connect", "Ask", "Embeddings", "Stream", "Re-attach", "Handle errors")


def test_every_section_has_a_snippet() -> None:
    text = DOC.read_text()
    for title, following in zip(SECTIONS, (*SECTIONS[1:], None), strict=True):
        start = text.index(f"\n## {title}\n")
        end = text.index(f"\n## {following}\n") if following else len(text)
        assert "```python\n" in text[start:end], f"the {title} section has no python snippet"


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs_as_written(index: int, upstream_daemon: DaemonProcess) -> None:
    code = SNIPPETS[index]
    run = subprocess.run(
        [sys.executable, "-c", code],
        env=upstream_daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"snippet {index} failed:\n{code}\n{run.stderr}"
    assert run.stdout.strip(), f"snippet {index} printed nothing"
    assert "Traceback" not in run.stderr
    if "NotFound" in code:
        assert "not_found:" in run.stdout
