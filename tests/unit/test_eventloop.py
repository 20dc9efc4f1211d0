"""The choice of the daemon's event loop, without starting one."""

from __future__ import annotations

import pytest

from codexd.eventloop import ENV_VAR, LoopChoice, choose
from codexd.paths import StartupError


def test_the_setting_chooses_when_the_environment_is_silent() -> None:
    assert choose("uvloop", {}, installed=lambda: True) == LoopChoice("uvloop")
    assert choose("asyncio", {}, installed=lambda: True) == LoopChoice("asyncio")
    assert choose("asyncio", {ENV_VAR: ""}, installed=lambda: True) == LoopChoice("asyncio")


def test_the_environment_wins_over_the_setting() -> None:
    assert choose("asyncio", {ENV_VAR: "uvloop"}, installed=lambda: True).name == "uvloop"
    assert choose("uvloop", {ENV_VAR: " asyncio "}, installed=lambda: True).name == "asyncio"


def test_a_missing_uvloop_falls_back_to_asyncio_with_a_note() -> None:
    for env in ({}, {ENV_VAR: "uvloop"}):
        choice = choose("uvloop", env, installed=lambda: False)
        assert choice.name == "asyncio"
        assert choice.note is not None
        assert "uvloop is not installed" in choice.note
    assert choose("asyncio", {}, installed=lambda: False) == LoopChoice("asyncio")


def test_backend_options_turn_uvloop_on_only_for_uvloop() -> None:
    assert LoopChoice("uvloop").backend_options() == {"use_uvloop": True}
    assert LoopChoice("asyncio").backend_options() == {"use_uvloop": False}


def test_an_unknown_name_in_the_environment_is_refused_with_the_names() -> None:
    with pytest.raises(StartupError, match=r"CODEXD_EVENT_LOOP='Uvloop' names no event loop"):
        choose("uvloop", {ENV_VAR: "Uvloop"}, installed=lambda: True)
