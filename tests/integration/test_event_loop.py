"""The event loop a daemon runs on: uvloop by default, `[codexd] event_loop` and the
environment variable CODEXD_EVENT_LOOP (which wins) choose; the start-up log line says which."""

from __future__ import annotations

import pytest

from codexd.eventloop import ENV_VAR
from codexd.testing.daemon_process import DaemonProcess
from tests.conftest import LineConn, write_config
from tests.integration.test_daemon_lifecycle import run_daemon_once


@pytest.mark.parametrize(
    ("config", "env_value", "runs"),
    [
        (None, None, "uvloop"),
        ("asyncio", None, "asyncio"),
        ("uvloop", None, "uvloop"),
        (None, "asyncio", "asyncio"),
        ("asyncio", "uvloop", "uvloop"),
        ("uvloop", "asyncio", "asyncio"),
    ],
    ids=["default", "config-asyncio", "config-uvloop", "env-asyncio", "env-wins", "env-wins-off"],
)
def test_the_log_names_the_loop_the_daemon_runs_on(
    daemon_env: dict[str, str], config: str | None, env_value: str | None, runs: str
) -> None:
    daemon_env.pop(ENV_VAR, None)
    if env_value is not None:
        daemon_env[ENV_VAR] = env_value
    if config is not None:
        write_config(daemon_env, f'[codexd]\nevent_loop = "{config}"\n')
    with DaemonProcess(daemon_env) as daemon:
        assert LineConn(daemon.socket).call("daemon/ping")["result"] == {}
        assert daemon.proc is not None
        pid = daemon.proc.pid
        log = daemon.stderr()
    assert f"(pid {pid}, {runs} event loop)" in log
    other = {"asyncio": "uvloop", "uvloop": "asyncio"}[runs]
    assert f"{other} event loop" not in log


def test_an_unknown_loop_in_the_environment_stops_start_up(daemon_env: dict[str, str]) -> None:
    daemon_env[ENV_VAR] = "trio"
    done = run_daemon_once(daemon_env)
    assert done.returncode == 1
    assert "CODEXD_EVENT_LOOP='trio' names no event loop" in done.stderr
    assert '"asyncio" or "uvloop"' in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_loop_in_the_config_is_a_located_config_error(
    daemon_env: dict[str, str],
) -> None:
    daemon_env.pop(ENV_VAR, None)
    write_config(daemon_env, '[codexd]\nevent_loop = "trio"\n')
    done = run_daemon_once(daemon_env)
    assert done.returncode == 1
    assert "event_loop" in done.stderr
    assert "Traceback" not in done.stderr
