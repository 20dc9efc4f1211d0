"""tests/conftest.py's `require`: a machine that lacks what a test needs skips it locally and
fails it under CI=true, naming what is missing."""

from __future__ import annotations

import pytest

from tests.conftest import missing, require, require_module

# Catch both outcomes, so that a skip where a failure is due fails this test (a skip escaping
# `pytest.raises(Failed)` would only skip it).
OUTCOMES = (pytest.fail.Exception, pytest.skip.Exception)


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_under_ci_a_missing_program_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(OUTCOMES) as info:
        require(None, "needs redis-server on PATH")
    assert info.type is pytest.fail.Exception
    assert "redis-server" in str(info.value)
    with pytest.raises(OUTCOMES) as info:
        missing("needs root to fork a child of another uid")
    assert info.type is pytest.fail.Exception
    assert "needs root" in str(info.value)


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_locally_a_missing_program_skips_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(OUTCOMES) as info:
        require("", "needs systemd-analyze (apt-get install systemd)")
    assert info.type is pytest.skip.Exception
    assert str(info.value) == "needs systemd-analyze (apt-get install systemd)"


def test_what_is_there_neither_skips_nor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require("/usr/bin/redis-server", "needs redis-server")
    assert require_module("msgspec").__name__ == "msgspec"


def test_a_missing_module_fails_under_ci_and_skips_locally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(OUTCOMES) as failed:
        require_module("codexd_no_such_module")
    assert failed.type is pytest.fail.Exception
    assert "codexd_no_such_module" in str(failed.value)
    monkeypatch.delenv("CI")
    with pytest.raises(OUTCOMES) as skipped:
        require_module("codexd_no_such_module")
    assert skipped.type is pytest.skip.Exception
