"""Codex CLI (npm `@openai/codex`) for the tests that run it as a real second program.

It is installed with npm into a cache dir once (~300 MB); a test that
needs it skips, saying why, where npm is missing or the install fails (no network).
`CODEXD_TEST_CODEX_BIN` points at an existing binary instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import missing

INSTALL_TIMEOUT_S = 600


def codex_binary() -> str:
    explicit = os.environ.get("CODEXD_TEST_CODEX_BIN")
    if explicit:
        return explicit
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    prefix = cache / "codexd-tests" / "codex-cli"
    binary = prefix / "node_modules" / ".bin" / "codex"
    if binary.exists():
        return str(binary)
    npm = shutil.which("npm")
    if npm is None:
        missing("needs npm to install Codex CLI (@openai/codex)")
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), "@openai/codex"],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        missing(f"needs Codex CLI: npm install @openai/codex took over {INSTALL_TIMEOUT_S}s")
    if done.returncode != 0 or not binary.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        missing(f"needs Codex CLI: npm install @openai/codex failed: {last}")
    return str(binary)
