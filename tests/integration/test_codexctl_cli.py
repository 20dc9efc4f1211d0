"""codexctl against a real daemon: output, --json, exit codes, one-line errors, start-up cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from codexd.testing.daemon_process import DaemonProcess


def codexctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_status_human_and_json(daemon: DaemonProcess) -> None:
    human = codexctl(daemon.env, "status")
    assert human.returncode == 0, human.stderr
    assert f"socket       {daemon.socket}" in human.stdout
    assert "started by   manual" in human.stdout
    as_json = codexctl(daemon.env, "status", "--json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["socket"] == daemon.socket
    # --json and --socket are accepted before the subcommand too.
    env = {k: v for k, v in daemon.env.items() if k != "CODEXD_SOCKET"}
    before = codexctl(env, "--socket", daemon.socket, "--json", "status")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["pid"] == json.loads(as_json.stdout)["pid"]


def test_status_warns_when_codex_home_differs(daemon: DaemonProcess, tmp_path: object) -> None:
    env = dict(daemon.env, CODEX_HOME="/somewhere/else")
    result = codexctl(env, "status")
    assert result.returncode == 0
    assert "warning: your CODEX_HOME (/somewhere/else) differs" in result.stderr


def test_unreachable_daemon_exit_3(daemon_env: dict[str, str]) -> None:
    result = codexctl(daemon_env, "status")
    assert result.returncode == 3
    sock = daemon_env["CODEXD_SOCKET"]
    assert result.stderr == (
        f"codexctl: codexd is not running at {sock}: start it with codexd run "
        "or systemctl --user start codexd\n"
    )


def test_rpc_raw_call_list_and_errors(daemon: DaemonProcess) -> None:
    ping = codexctl(daemon.env, "rpc", "daemon/ping", "{}")
    assert ping.returncode == 0 and json.loads(ping.stdout) == {}
    listing = codexctl(daemon.env, "rpc", "--list")
    assert listing.returncode == 0
    assert any(
        line.startswith("initialize") and "{client}" in line for line in listing.stdout.splitlines()
    )
    listing_json = json.loads(codexctl(daemon.env, "rpc", "--list", "--json").stdout)
    assert {m["name"] for m in listing_json} >= {"daemon/ping", "daemon/status"}
    missing = codexctl(daemon.env, "rpc", "no/such")
    assert missing.returncode == 1
    assert missing.stderr.startswith("codexctl: method not found: 'no/such'")
    assert missing.stderr.count("\n") == 1
    bad_json = codexctl(daemon.env, "rpc", "daemon/ping", "{nope")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr
    bad_params = codexctl(daemon.env, "rpc", "initialize", '{"client":{"name":1}}')
    assert bad_params.returncode == 1
    assert "$.client.name" in bad_params.stderr


def test_usage_error_exit_2(daemon_env: dict[str, str]) -> None:
    assert codexctl(daemon_env, "no-such-command").returncode == 2
    assert codexctl(daemon_env).returncode == 2


def test_version_imports_nothing_heavy() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['codexctl', '--version']\n"
        "try:\n"
        "    runpy.run_module('codexctl', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('httpx', 'anyio', 'keyring', 'httpcore', 'watchfiles') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("codexctl ")
    assert "HEAVY []" in out.stdout


def test_version_and_status_without_a_daemon_load_neither_msgspec_typing_nor_argparse(
    daemon_env: dict[str, str],
) -> None:
    """The two commands whose start-up is measured load neither msgspec, typing nor argparse:
    each would cost them a good part of a bare interpreter's start."""
    os.mkdir(os.path.dirname(daemon_env["CODEXD_SOCKET"]), 0o700)  # a directory, no daemon
    code = (
        "import sys\n"
        "from codexctl.cli import main\n"
        "print('VERSION EXIT', main(['--version']))\n"
        "rc = main(['status'])\n"
        "loaded = [m for m in ('msgspec', 'typing', 'argparse', 'codexctl.client', "
        "'codexctl.commands_jobs') if m in sys.modules]\n"
        "print('LOADED', loaded, rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=daemon_env
    )
    assert out.stdout.startswith("codexctl ")
    assert "VERSION EXIT 0" in out.stdout
    assert "LOADED [] 3" in out.stdout, out.stderr
    assert f"codexctl: codexd is not running at {daemon_env['CODEXD_SOCKET']}" in out.stderr


def test_the_parserless_starts_answer_as_the_parser_does(daemon_env: dict[str, str]) -> None:
    """`--version` and `status [--json]` skip argparse; with one more word (`--socket` naming
    the same path, `--json` before `--version`) argparse handles them: the answers match."""
    path = daemon_env["CODEXD_SOCKET"]
    fast, parsed = codexctl(daemon_env, "--version"), codexctl(daemon_env, "--json", "--version")
    assert (fast.returncode, fast.stdout) == (parsed.returncode, parsed.stdout) == (0, fast.stdout)
    assert fast.stdout.startswith("codexctl ")
    for extra in ((), ("--json",)):
        fast = codexctl(daemon_env, "status", *extra)
        parsed = codexctl(daemon_env, "status", "--socket", path, *extra)
        assert fast.returncode == parsed.returncode == 3
        assert fast.stderr == parsed.stderr == (
            f"codexctl: codexd is not running at {path}: start it with codexd run "
            "or systemctl --user start codexd\n"
        )


def test_status_json_without_the_parser_is_json(daemon: DaemonProcess) -> None:
    fast = codexctl(daemon.env, "--json", "status")
    assert fast.returncode == 0, fast.stderr
    assert json.loads(fast.stdout)["socket"] == daemon.socket


def test_status_imports_nothing_heavy(daemon: DaemonProcess) -> None:
    code = (
        "import sys\n"
        "from codexctl.cli import main\n"
        "rc = main(['status'])\n"
        "heavy = [m for m in ('httpx', 'anyio', 'keyring', 'httpcore', 'watchfiles') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy, rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=daemon.env, check=True
    )
    assert "HEAVY [] 0" in out.stdout
