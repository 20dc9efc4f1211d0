"""Codex CLI (npm `@openai/codex`) for the tests that run it as a real second program.

The tests pin one version, `CODEX_VERSION`; raising it is a one-line change. It is installed
with npm into a cache dir once (~300 MB) and replaced there when the cached install is of
another version; a test that needs it skips, saying why, where npm is missing or the install
fails (no network). `CODEXD_TEST_CODEX_BIN` points at an existing binary instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import missing

CODEX_VERSION = "0.171.0"
INSTALL_TIMEOUT_S = 600


def installed_version(prefix: Path) -> str | None:
    """The version of `@openai/codex` installed under the npm `prefix`, or None."""
    manifest = prefix / "node_modules" / "@openai" / "codex" / "package.json"
    try:
        version = json.loads(manifest.read_text()).get("version")
    except (OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def codex_binary() -> str:
    explicit = os.environ.get("CODEXD_TEST_CODEX_BIN")
    if explicit:
        return explicit
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    prefix = cache / "codexd-tests" / "codex-cli"
    binary = prefix / "node_modules" / ".bin" / "codex"
    if binary.exists() and installed_version(prefix) == CODEX_VERSION:
        return str(binary)
    npm = shutil.which("npm")
    if npm is None:
        missing(f"needs npm to install Codex CLI (@openai/codex@{CODEX_VERSION})")
    prefix.mkdir(parents=True, exist_ok=True)
    package = f"@openai/codex@{CODEX_VERSION}"
    install = [npm, "install", "--no-audit", "--no-fund", "--save-exact", "--prefix", str(prefix)]
    try:
        done = subprocess.run(
            [*install, package],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        missing(f"needs Codex CLI: npm install {package} took over {INSTALL_TIMEOUT_S}s")
    if done.returncode != 0 or installed_version(prefix) != CODEX_VERSION or not binary.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        missing(f"needs Codex CLI: npm install {package} failed: {last}")
    return str(binary)
