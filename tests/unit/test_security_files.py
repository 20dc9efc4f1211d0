"""Files and directories open to others (codexd/security/files.py): one rule, one message,
and every place that meets such a file asks it."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from codexd.install import install_service
from codexd.paths import StartupError
from codexd.security.files import ensure_private_dir, open_problem, restore_private, too_open
from codexd.service.token import TokenFile
from codexd.usage.ledger import LEDGER_FILE, Ledger


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("bits", [0o700, 0o600, 0o400, 0o500])
def test_only_the_owner_is_not_too_open(bits: int) -> None:
    assert not too_open(stat.S_IFREG | bits)


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o710, 0o701, 0o777, 0o620])
def test_any_group_or_other_bit_is_too_open(bits: int) -> None:
    assert too_open(stat.S_IFREG | bits)


def test_the_message_says_how_to_fix_it() -> None:
    assert open_problem("/d", "state directory", stat.S_IFDIR | 0o755, 0o700) == (
        "the state directory /d has mode 0755; it must not be open to group or others: "
        "run chmod 700 /d"
    )
    assert open_problem("/f", "environment file", stat.S_IFREG | 0o644) == (
        "the environment file /f has mode 0644; it must not be open to group or others: "
        "run chmod 600 /f"
    )
    assert open_problem("/f", "environment file", stat.S_IFREG | 0o600) is None


def test_a_private_dir_is_created_0700_and_an_open_one_refused(tmp_path: Path) -> None:
    made = tmp_path / "a" / "run"
    ensure_private_dir(str(made), "runtime directory")
    assert mode(made) == 0o700
    made.chmod(0o750)
    with pytest.raises(StartupError) as info:
        ensure_private_dir(str(made), "runtime directory")
    assert str(info.value) == (
        f"the runtime directory {made} has mode 0750; it must not be open to group or others: "
        f"run chmod 700 {made}"
    )


def test_restore_private_makes_a_file_0600_again_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(0o644)
    fd = os.open(path, os.O_RDONLY)
    try:
        with caplog.at_level(logging.WARNING):
            restore_private(fd, str(path), "thing")
            assert mode(path) == 0o600
            assert f"the thing {path} had mode 0644, open to group or others" in caplog.text
            caplog.clear()
            restore_private(fd, str(path), "thing")
        assert caplog.text == ""  # already private: nothing to say
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the places


def test_a_wider_gateway_token_is_made_private_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = TokenFile(str(tmp_path)).current()
    path = tmp_path / "gateway.token"
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert TokenFile(str(tmp_path)).current() == token
    assert mode(path) == 0o600
    assert "the gateway token file" in caplog.text and "0644" in caplog.text


def test_a_wider_usage_ledger_is_made_private_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / LEDGER_FILE
    sqlite3.connect(path).close()
    path.chmod(0o664)
    with caplog.at_level(logging.WARNING):
        Ledger.in_state_dir(str(tmp_path)).close()
    assert mode(path) == 0o600
    assert "the usage ledger" in caplog.text and "0664" in caplog.text


def test_install_service_refuses_an_env_file_open_to_others(tmp_path: Path) -> None:
    """It holds API keys: nothing is written, and the message says what to run."""
    env_file = tmp_path / ".config" / "codexd" / "env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("OPENAI_API_KEY=sk-live-0123456789\n")
    env_file.chmod(0o644)
    out, err = io.StringIO(), io.StringIO()
    code = install_service(
        env={"HOME": str(tmp_path)}, program=["/bin/codexd"], platform="linux", out=out, err=err
    )
    assert code == 1
    assert err.getvalue() == (
        f"codexd: the environment file {env_file} has mode 0644; it must not be open to group "
        f"or others: run chmod 600 {env_file}\n"
    )
    assert not (tmp_path / ".config" / "systemd").exists()
    env_file.chmod(0o600)
    assert (
        install_service(
            env={"HOME": str(tmp_path)}, program=["/bin/codexd"], platform="linux", out=out, err=err
        )
        == 0
    )
