"""The service files against real programs: systemd-analyze, plistlib, systemd-socket-activate."""

from __future__ import annotations

import configparser
import io
import os
import plistlib
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codexd.install import find_program, install_service, render_systemd
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


# --------------------------------------------------------------------------- what the units say


def test_service_unit_contract() -> None:
    service = unit(REPO / "systemd" / "codexd.service")["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"] == "@CODEXD@ run"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "-%h/.config/codexd/env"


# Options that need a mount or user namespace: in a user unit they imply PrivateUsers=, under
# which $CODEX_HOME, the state dir or the D-Bus session bus (keyring) can become unusable.
NAMESPACE_OPTIONS = {
    "PrivateUsers", "PrivateTmp", "PrivateDevices", "PrivateNetwork", "PrivateIPC",
    "PrivateMounts", "ProtectSystem", "ProtectHome", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
    "ProtectHostname", "ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths",
    "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
    "RootDirectory", "RootImage", "DynamicUser", "NetworkNamespacePath", "IPCNamespacePath",
}  # fmt: skip
# Kept on purpose (each explained in the unit): seccomp, prctl or umask, no namespace needed.
KEPT_HARDENING = {
    "UMask": "0077",
    "NoNewPrivileges": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
}


def test_service_hardening_needs_no_user_namespace() -> None:
    service = unit(REPO / "systemd" / "codexd.service")["Service"]
    assert not NAMESPACE_OPTIONS & set(service), "this option implies PrivateUsers= in a user unit"
    # Anything the daemon starts inherits these: changing them needs a reason and this test.
    assert {k: service[k] for k in KEPT_HARDENING if k in service} == KEPT_HARDENING
    # AF_UNIX for the sockets, sd_notify and the D-Bus keyring; inet for the upstream.
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(service["RestrictAddressFamilies"].split())


def test_socket_units_contract() -> None:
    control = unit(REPO / "systemd" / "codexd.socket")["Socket"]
    assert control["ListenStream"] == "%t/codexd/codexd.sock"
    assert (control["SocketMode"], control["DirectoryMode"]) == ("0600", "0700")
    assert control["FileDescriptorName"] == "control"
    gateway = unit(REPO / "systemd" / "codexd-gateway.socket")["Socket"]
    assert gateway["ListenStream"] == "%t/codexd/gateway.sock"
    assert (gateway["SocketMode"], gateway["DirectoryMode"]) == ("0600", "0700")
    assert gateway["FileDescriptorName"] == "gateway"
    assert gateway["Service"] == "codexd.service"


def test_systemd_analyze_verify_accepts_the_installed_units(tmp_path: Path) -> None:
    require(SYSTEMD_ANALYZE, "needs systemd-analyze (apt-get install systemd)")
    assert SYSTEMD_ANALYZE is not None
    program = find_program()
    assert os.access(program[0], os.X_OK)  # verify checks that ExecStart= is executable
    files = render_systemd(program, socket_activation=True, gateway=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--user", *(str(tmp_path / name) for name in files)],
        env={**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys too; a clean run prints nothing at all.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    # The check above can fail: a misspelled key is reported.
    require(SYSTEMD_ANALYZE, "needs systemd-analyze (apt-get install systemd)")
    assert SYSTEMD_ANALYZE is not None
    text = render_systemd(find_program(), socket_activation=False)["codexd.service"]
    (tmp_path / "codexd.service").write_text(text.replace("NotifyAccess", "NotifyAcess"))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--user", str(tmp_path / "codexd.service")],
        env={**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Unknown key 'NotifyAcess'" in result.stderr


def test_launchd_plist_parses_and_names_the_installed_program(tmp_path: Path) -> None:
    template = plistlib.loads((REPO / "launchd" / "com.codexd.codexd.plist").read_bytes())
    assert template["Label"] == "com.codexd.codexd"
    assert template["ProgramArguments"][-2:] == ["@CODEXD@", "run"]
    assert template["Sockets"]["control"]["SockPathMode"] == 384  # 0600
    assert template["KeepAlive"] == {"SuccessfulExit": False}

    env = {"HOME": str(tmp_path), "CODEXD_SOCKET": str(tmp_path / "run" / "codexd.sock")}
    out = io.StringIO()
    assert (
        install_service("launchd", socket_activation=True, env=env, platform="darwin", out=out) == 0
    )
    job = plistlib.loads((tmp_path / "Library/LaunchAgents/com.codexd.codexd.plist").read_bytes())
    program = find_program()
    assert job["ProgramArguments"][-1 - len(program) :] == [*program, "run"]
    # /bin/sh reads the env file and execs codexd, so launchd's socket check-in still works
    assert job["ProgramArguments"][:2] == ["/bin/sh", "-c"]
    assert 'exec "$@"' in job["ProgramArguments"][2]
    assert job["StandardErrorPath"] == str(tmp_path / "Library/Logs/codexd.log")
    assert job["Sockets"]["control"]["SockPathName"] == job["EnvironmentVariables"]["CODEXD_SOCKET"]


def test_launchd_shell_wrapper_loads_the_env_file_and_execs(tmp_path: Path) -> None:
    # The wrapper is plain POSIX sh: run it here with a stand-in for codexd.
    template = plistlib.loads((REPO / "launchd" / "com.codexd.codexd.plist").read_bytes())
    sh, dash_c, script = template["ProgramArguments"][:3]
    env_file = tmp_path / "env"
    env_file.write_text("HTTPS_PROXY=http://proxy:3128\nOPENAI_BASE_URL='http://a b'\n")
    stand_in = [sys.executable, "-c", "import os,sys; print(os.environ['HTTPS_PROXY'], "
                "os.environ['OPENAI_BASE_URL'], sys.argv[1:], os.getppid())"]  # fmt: skip
    out = subprocess.run(
        [sh, dash_c, script, str(env_file), *stand_in, "run"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # exec'd, not forked: the stand-in's parent is this test process, as launchd would see it
    assert out.stdout == f"http://proxy:3128 http://a b ['run'] {os.getpid()}\n"
    missing = subprocess.run(
        [sh, dash_c, script, str(tmp_path / "absent"), "/bin/echo", "run"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (missing.returncode, missing.stdout) == (0, "run\n")


def test_install_service_hands_the_shells_locations_to_the_service(tmp_path: Path) -> None:
    """`codexd install-service` from a shell with its own CODEX_HOME and CODEXD_STATE_DIR:
    the service, started with nothing but the environment file, resolves the same paths."""
    home = tmp_path / "home"
    home.mkdir()
    codex_home, state = tmp_path / "my codex", tmp_path / "state"
    shell = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        "CODEXD_STATE_DIR": str(state),
    }
    install = [sys.executable, "-m", "codexd", "install-service"]
    env_file = home / ".config" / "codexd" / "env"
    lines = f"CODEX_HOME='{codex_home}'\nCODEXD_STATE_DIR={state}\n"

    dry = subprocess.run(
        [*install, "--dry-run"], env=shell, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    assert f"# ---- {env_file} (mode 600), with this shell's locations" in dry.stdout
    assert lines in dry.stdout
    assert not env_file.exists()

    done = subprocess.run(install, env=shell, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "(so the service reads the same files as this shell)" in done.stdout
    assert env_file.read_text() == lines

    # Started as launchd starts it (systemd reads the same KEY=value lines): no CODEX_HOME or
    # CODEXD_STATE_DIR but what the file says.
    template = plistlib.loads((REPO / "launchd" / "com.codexd.codexd.plist").read_bytes())
    sh, dash_c, script = template["ProgramArguments"][:3]
    where = "from codexd import paths; p = paths.resolve(); print(p.codex_home, p.state_dir)"
    service = {"PATH": os.environ["PATH"], "HOME": str(home)}
    seen = subprocess.run(
        [sh, dash_c, script, str(env_file), sys.executable, "-c", where],
        env=service, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout == f"{codex_home} {state}\n"


# --------------------------------------------------------------------------- real socket activation

SERVER = textwrap.dedent(
    """
    import os, time
    started = time.monotonic()
    import anyio, anyio.abc
    from codexd.activation import activated_sockets
    from codexd.sdnotify import Notifier

    async def main() -> None:
        got = activated_sockets()
        assert got.control is not None
        listener = await anyio.abc.SocketListener.from_socket(got.control)
        names = " ".join(n for n in ("control", "gateway") if getattr(got, n) is not None)
        leaked = [k for k in os.environ if k.startswith("LISTEN_")]
        async with listener:
            Notifier().ready(f"manager={got.manager} sockets={names} leaked={leaked} "
                             f"ready_ms={(time.monotonic() - started) * 1000:.0f}")
            conn = await listener.accept()
            async with conn:
                line = await conn.receive()
                await conn.send(b"served " + line)

    anyio.run(main)
    """
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cxa-") as d:
        yield Path(d)


@pytest.mark.parametrize("with_gateway", [False, True], ids=["unnamed", "control+gateway"])
def test_socket_activation_serves_the_first_connection_and_notifies_ready(
    short_dir: Path, with_gateway: bool
) -> None:
    require(SOCKET_ACTIVATE, "needs systemd-socket-activate (apt-get install systemd)")
    assert SOCKET_ACTIVATE is not None
    program = short_dir / "server.py"
    program.write_text(SERVER)
    control, gateway, notify = short_dir / "c.sock", short_dir / "g.sock", short_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notifications:
        notifications.bind(str(notify))
        notifications.settimeout(30)  # hang guard only
        listen = ["-l", str(control)]
        if with_gateway:
            listen += ["-l", str(gateway), "--fdname=control:gateway"]
        proc = subprocess.Popen(
            [SOCKET_ACTIVATE, *listen, "-E", f"NOTIFY_SOCKET={notify}",
             sys.executable, str(program)],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            # systemd-socket-activate says so once it listens; the program starts on connect.
            for _ in range(len(listen) // 2):
                line = proc.stderr.readline()
                assert "Listening on" in line, line
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(30)
                client.connect(str(control))
                first_byte = time.perf_counter()
                client.sendall(b'{"method":"daemon/status"}\n')
                ready = notifications.recv(4096).decode().split("\n")
                answer = client.recv(4096)
                answered = time.perf_counter()
            assert answer == b'served {"method":"daemon/status"}\n'
            assert ready[0] == "READY=1"
            names = "control gateway" if with_gateway else "control"
            assert ready[1].startswith(f"STATUS=manager=systemd sockets={names} leaked=[] ")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
    print(f"\n[{'control+gateway' if with_gateway else 'control'}] {ready[1]}; first byte -> "
          f"answer {1000 * (answered - first_byte):.0f} ms (includes Python start-up)")  # fmt: skip
