"""`codexd install-service` with a temporary HOME: files, modes, --force, --dry-run."""

from __future__ import annotations

import filecmp
import io
import os
import plistlib
import stat
from pathlib import Path

import pytest

from codexd.install import (
    find_program,
    install_service,
    render_launchd,
    render_systemd,
    systemd_quote,
)

REPO = Path(__file__).resolve().parents[2]
PROGRAM = ["/opt/codexd/bin/codexd"]


class Run:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.out = io.StringIO()
        self.err = io.StringIO()

    def __call__(self, *args: object, **kwargs: object) -> int:
        kwargs.setdefault("env", {"HOME": str(self.home)})
        kwargs.setdefault("program", PROGRAM)
        kwargs.setdefault("platform", "linux")
        self.out, self.err = io.StringIO(), io.StringIO()
        return install_service(*args, out=self.out, err=self.err, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


def units(home: Path) -> Path:
    return home / ".config" / "systemd" / "user"


def test_packaged_copies_match_the_top_level_sources() -> None:
    for kind in ("systemd", "launchd"):
        packaged = REPO / "codexd" / "servicefiles" / kind
        names = sorted(p.name for p in (REPO / kind).iterdir())
        assert names == sorted(p.name for p in packaged.iterdir()), kind
        _match, mismatch, errors = filecmp.cmpfiles(REPO / kind, packaged, names, shallow=False)
        assert (mismatch, errors) == ([], []), f"copy {kind}/ to codexd/servicefiles/{kind}/"


def test_systemd_without_socket_activation(run: Run) -> None:
    assert run() == 0
    service = (units(run.home) / "codexd.service").read_text()
    assert "ExecStart=/opt/codexd/bin/codexd run\n" in service
    assert "@CODEXD@" not in service
    assert not (units(run.home) / "codexd.socket").exists()
    assert "systemctl --user daemon-reload && systemctl --user enable --now codexd.service" in (
        run.out.getvalue()
    )
    env_file = run.home / ".config" / "codexd" / "env"
    assert env_file.read_bytes() == b""
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700
    assert f"Created the empty environment file {env_file}" in run.out.getvalue()
    assert "OPENAI_API_KEY=" in run.out.getvalue()


def test_systemd_with_socket_activation_and_gateway(run: Run) -> None:
    assert run(socket_activation=True, gateway=True) == 0
    names = sorted(p.name for p in units(run.home).iterdir())
    assert names == ["codexd-gateway.socket", "codexd.service", "codexd.socket"]
    assert (units(run.home) / "codexd.socket").read_text() == (
        REPO / "systemd/codexd.socket"
    ).read_text()
    assert "enable --now codexd.socket codexd-gateway.socket" in run.out.getvalue()


def test_gateway_without_socket_activation_is_a_usage_error(run: Run) -> None:
    assert run(gateway=True) == 2
    assert "--gateway needs --socket-activation" in run.err.getvalue()


def test_rerun_is_idempotent_and_keeps_the_env_file(run: Run) -> None:
    assert run() == 0
    env_file = run.home / ".config" / "codexd" / "env"
    env_file.write_text("HTTPS_PROXY=http://proxy:3128\n")
    assert run() == 0
    assert "Unchanged:" in run.out.getvalue()
    assert env_file.read_text() == "HTTPS_PROXY=http://proxy:3128\n"


def test_a_changed_file_is_not_overwritten_without_force(run: Run) -> None:
    assert run() == 0
    service = units(run.home) / "codexd.service"
    edited = service.read_text().replace("RestartSec=2", "RestartSec=9")
    service.write_text(edited)
    assert run(program=["/usr/local/bin/codexd"]) == 1
    assert service.read_text() == edited
    err = run.err.getvalue()
    assert "differs from what codexd would write" in err
    assert "--force" in err
    assert "-RestartSec=9" in err  # the diff shows what would be lost
    assert run(program=["/usr/local/bin/codexd"], force=True) == 0
    assert "ExecStart=/usr/local/bin/codexd run" in service.read_text()
    assert "RestartSec=2" in service.read_text()


def test_refusal_writes_nothing_at_all(run: Run) -> None:
    assert run() == 0
    (units(run.home) / "codexd.service").write_text("[Service]\n")
    assert run(socket_activation=True) == 1
    assert not (units(run.home) / "codexd.socket").exists()


def test_stale_socket_unit_is_pointed_out(run: Run) -> None:
    assert run(socket_activation=True) == 0
    assert run() == 0
    assert "codexd.socket from an earlier install still activates codexd" in run.out.getvalue()


def test_service_dir_override(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    assert run(service_dir=target) == 0
    assert (target / "codexd.service").exists()
    assert not units(run.home).exists()


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_dry_run_prints_and_writes_nothing_on_any_os(run: Run, platform: str) -> None:
    for chosen in ("systemd", "launchd"):
        assert run(chosen, socket_activation=True, dry_run=True, platform=platform) == 0
        printed = run.out.getvalue()
        assert "/opt/codexd/bin/codexd" in printed
        assert ("ListenStream=%t/codexd/codexd.sock" in printed) == (chosen == "systemd")
        assert ("<key>SockPathName</key>" in printed) == (chosen == "launchd")
    assert list(run.home.iterdir()) == []


def test_foreign_manager_without_dry_run_is_a_usage_error(run: Run) -> None:
    assert run("launchd", platform="linux") == 2
    assert "use --systemd, or --dry-run" in run.err.getvalue()
    assert list(run.home.iterdir()) == []


def test_launchd_install(run: Run) -> None:
    sock = str(run.home / "T" / "codexd.sock")
    env = {"HOME": str(run.home), "CODEXD_SOCKET": sock}
    assert run("launchd", socket_activation=True, platform="darwin", env=env) == 0
    plist = run.home / "Library" / "LaunchAgents" / "com.codexd.codexd.plist"
    job = plistlib.loads(plist.read_bytes())
    assert job["ProgramArguments"][-2:] == ["/opt/codexd/bin/codexd", "run"]
    assert job["ProgramArguments"][3] == str(run.home / ".config" / "codexd" / "env")
    assert job["Sockets"]["control"]["SockPathName"] == sock
    assert job["EnvironmentVariables"]["CODEXD_SOCKET"] == sock
    assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
    assert f"launchctl bootstrap gui/$(id -u) {plist}" in run.out.getvalue()


def test_launchd_socket_path_too_long(run: Run) -> None:
    env = {"HOME": str(run.home), "CODEXD_SOCKET": "/" + "x" * 120}
    assert run("launchd", platform="darwin", env=env) == 1
    assert "set CODEXD_SOCKET to a shorter path" in run.err.getvalue()


# --------------------------------------------------------------------------- pure parts


def test_launchd_without_socket_activation_runs_at_load() -> None:
    kwargs = {"socket_path": "/s", "env_file": "/e", "log_file": "/l"}
    job = plistlib.loads(render_launchd(PROGRAM, socket_activation=False, **kwargs))
    assert "Sockets" not in job
    assert job["RunAtLoad"] is True
    job = plistlib.loads(render_launchd(PROGRAM, socket_activation=True, **kwargs))
    assert job["RunAtLoad"] is False
    assert job["Sockets"]["control"]["SockPathMode"] == 0o600


def test_python_m_fallback_expands_into_program_arguments() -> None:
    program = ["/usr/bin/python3", "-m", "codexd"]
    job = plistlib.loads(
        render_launchd(
            program, socket_path="/s", env_file="/e", log_file="/l", socket_activation=True
        )
    )
    assert job["ProgramArguments"][-4:] == [*program, "run"]
    service = render_systemd(program, socket_activation=False)["codexd.service"]
    assert "ExecStart=/usr/bin/python3 -m codexd run\n" in service


@pytest.mark.parametrize(
    ("arg", "word"),
    [
        ("/usr/bin/codexd", "/usr/bin/codexd"),
        ("/home/a b/codexd", '"/home/a b/codexd"'),
        ("/opt/100%/codexd", "/opt/100%%/codexd"),
        ("/opt/$HOME/codexd", "/opt/$$HOME/codexd"),
        ('/opt/"q"/codexd', '"/opt/\\"q\\"/codexd"'),
    ],
)
def test_systemd_quote(arg: str, word: str) -> None:
    assert systemd_quote(arg) == word


def test_find_program_prefers_the_script_that_ran(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "codexd"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert find_program(str(script), "/nonexistent/python3") == [str(script)]
    # run as `python -m codexd` from an interpreter whose bin has the script
    assert find_program("-m", str(tmp_path / "bin" / "python3")) == [str(script)]


def test_find_program_falls_back_to_python_m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_program("-c", "/nonexistent/python3") == ["/nonexistent/python3", "-m", "codexd"]


# --------------------------------------------------------------------------- the shell's locations


def test_the_shells_locations_go_into_the_env_file(run: Run, tmp_path: Path) -> None:
    home = tmp_path / "my codex"  # a blank: quoted
    env = {"HOME": str(run.home), "CODEX_HOME": str(home), "CODEXD_STATE_DIR": "/srv/state"}
    assert run(env=env) == 0
    env_file = run.home / ".config" / "codexd" / "env"
    assert env_file.read_text() == f"CODEX_HOME='{home}'\nCODEXD_STATE_DIR=/srv/state\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert (
        f"Created the environment file {env_file} (mode 600) with CODEX_HOME='{home}' and "
        "CODEXD_STATE_DIR=/srv/state (so the service reads the same files as this shell)."
    ) in run.out.getvalue()

    env_file.write_text("HTTPS_PROXY=http://proxy:3128\nCODEX_HOME=/old\n")
    assert run(env=env) == 1  # a value set by hand is not overwritten without --force
    assert env_file.read_text() == "HTTPS_PROXY=http://proxy:3128\nCODEX_HOME=/old\n"
    assert f"{env_file} has CODEX_HOME=/old but this shell has CODEX_HOME='{home}'" in (
        run.err.getvalue()
    )
    assert run(env=env, force=True) == 0
    assert env_file.read_text() == (
        f"HTTPS_PROXY=http://proxy:3128\nCODEX_HOME='{home}'\nCODEXD_STATE_DIR=/srv/state\n"
    )
    assert f"Replaced CODEX_HOME=/old with CODEX_HOME='{home}' in {env_file}" in run.out.getvalue()
    assert run(env=env) == 0
    assert f"Environment file: {env_file} (kept)." in run.out.getvalue()


@pytest.mark.parametrize("manager", ["systemd", "launchd"])
def test_default_locations_are_not_written(run: Run, manager: str) -> None:
    state = (
        run.home / "Library" / "Application Support" / "codexd"
        if manager == "launchd"
        else run.home / ".local" / "state" / "codexd"
    )
    env = {
        "HOME": str(run.home),
        "CODEX_HOME": str(run.home / ".codex"),
        "CODEXD_STATE_DIR": str(state),
    }
    platform = "darwin" if manager == "launchd" else "linux"
    assert run(manager, env=env, platform=platform, dry_run=True) == 0
    assert "(created empty, mode 600, if missing)" in run.out.getvalue()
    assert "CODEX_HOME=" not in run.out.getvalue()


def test_a_value_sh_and_systemd_read_differently_is_not_written(run: Run) -> None:
    env = {"HOME": str(run.home), "CODEX_HOME": "/tmp/it's here"}
    assert run(env=env) == 0
    assert (run.home / ".config" / "codexd" / "env").read_text() == ""
    assert "warning: CODEX_HOME has a quote or a line break" in run.err.getvalue()
