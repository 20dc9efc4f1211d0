"""`make install` / `make uninstall` (the README's every-day install), into a temporary home.

The install runs the real Makefile and uv from this checkout; UV_TOOL_DIR, UV_TOOL_BIN_DIR
and HOME point into tmp_path, so nothing on the machine is touched. uv's package cache stays
the developer's (or CI's) own, so the test does not download what is already there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import codexctl
import codexd

ROOT = Path(__file__).resolve().parents[2]


def _uv_cache_dir() -> str | None:
    uv = ROOT / ".uv" / "bin" / "uv"
    if not uv.exists():
        return None  # make installs uv first; it then uses the default cache of this HOME
    out = subprocess.run([str(uv), "cache", "dir"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def install_env(tmp_path: Path) -> dict[str, str]:
    if shutil.which("make") is None:
        pytest.fail("make is not on PATH: the README's install needs it")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CODEX", "OPENAI", "UV_", "VIRTUAL_ENV"))
    }
    cache = _uv_cache_dir()
    if cache is not None:
        env["UV_CACHE_DIR"] = cache
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        UV_TOOL_DIR=str(tmp_path / "tools"),
        UV_TOOL_BIN_DIR=str(tmp_path / "bin"),
    )
    return env


def _make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), target],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_make_install_puts_both_commands_in_the_bin_dir_and_uninstall_removes_them(
    install_env: dict[str, str], tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    result = _make("install", install_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"installed codexd and codexctl in {bin_dir}" in result.stdout

    # The installed commands run from the tool's own venv, not from this checkout's .venv.
    for command, version in (("codexd", codexd.__version__), ("codexctl", codexctl.__version__)):
        path = bin_dir / command
        assert path.exists(), f"{command} not installed in {bin_dir}: {sorted(bin_dir.iterdir())}"
        assert str(tmp_path / "tools") in os.path.realpath(path)
        run = subprocess.run(
            [str(path), "--version"],
            env=install_env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"{command} {version}"

    # The tool's venv holds the locked versions (the same as this checkout's lock).
    lock = (ROOT / "uv.lock").read_text()
    site = next((tmp_path / "tools" / "codexd-daemon").glob("lib/python*/site-packages"))
    msgspec_dist = next(site.glob("msgspec-*.dist-info"))
    locked_version = msgspec_dist.name.removeprefix("msgspec-").removesuffix(".dist-info")
    assert f'name = "msgspec"\nversion = "{locked_version}"' in lock

    result = _make("uninstall", install_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (bin_dir / "codexd").exists()
    assert not (bin_dir / "codexctl").exists()
    assert not (tmp_path / "tools" / "codexd-daemon").exists()
