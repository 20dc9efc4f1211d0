"""`codexd install-service`: put the systemd units or the LaunchAgent plist in place (SPEC §8).

The sources are the top-level `systemd/` and `launchd/` folders; an installed package carries an
identical copy in `codexd/servicefiles/` (a test keeps them equal). Rendering is pure; the one
effectful function, `install_service`, writes only files that are missing or unchanged, unless
`force` says otherwise, and prints the command that enables the service.
"""

from __future__ import annotations

import difflib
import os
import plistlib
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from codexctl.protocol import default_socket_path

Manager = Literal["systemd", "launchd"]

SERVICE = "codexd.service"
SOCKET = "codexd.socket"
GATEWAY_SOCKET = "codexd-gateway.socket"
LAUNCHD_LABEL = "com.codexd.codexd"
PLIST = f"{LAUNCHD_LABEL}.plist"
# sun_path holds 104 bytes on macOS, the last one NUL.
MAX_SOCKET_PATH = 103

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

ENV_FILE_HELP = (
    "Put API keys or proxy settings there, one KEY=value per line "
    "(OPENAI_API_KEY=..., HTTPS_PROXY=http://proxy:3128, NO_PROXY=localhost): a service does "
    "not inherit your login shell's environment. Restart the service after a change."
)


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: Path
    content: bytes
    mode: int = 0o644


# --------------------------------------------------------------------------- sources


def _source_dir(kind: str) -> Path:
    packaged = Path(__file__).parent / "servicefiles" / kind
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / kind  # a checkout without the copy


def source_text(kind: Literal["systemd", "launchd"], name: str) -> str:
    return (_source_dir(kind) / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- pure rendering


def find_program(argv0: str | None = None, executable: str | None = None) -> list[str]:
    """The command that runs the installed codexd, as an argument list.

    The script the user ran (`codexd install-service`) comes first, then the one beside the
    interpreter, then PATH; `python -m codexd` is the fallback that always works. Symlinks are
    kept, so a pipx or package-manager upgrade does not strand the unit.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    candidates = [argv0] if os.path.basename(argv0) == "codexd" else []
    candidates.append(os.path.join(os.path.dirname(executable), "codexd"))
    found = shutil.which("codexd")
    if found:
        candidates.append(found)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [os.path.abspath(candidate)]
    return [os.path.abspath(executable), "-m", "codexd"]


def systemd_quote(arg: str) -> str:
    """One ExecStart= word: specifiers and variables escaped, quoted when it has blanks."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_systemd(
    program: Sequence[str], *, socket_activation: bool, gateway: bool = False
) -> dict[str, str]:
    """File name → text of the units to install."""
    command = " ".join(systemd_quote(arg) for arg in program)
    files = {SERVICE: source_text("systemd", SERVICE).replace("@CODEXD@", command)}
    if socket_activation:
        files[SOCKET] = source_text("systemd", SOCKET)
        if gateway:
            files[GATEWAY_SOCKET] = source_text("systemd", GATEWAY_SOCKET)
    return files


def _fill(value: Any, fields: Mapping[str, str], program: Sequence[str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, fields, program) for k, v in value.items()}
    if isinstance(value, list):
        filled: list[Any] = []
        for item in value:
            if item == "@CODEXD@":
                filled.extend(program)
            else:
                filled.append(_fill(item, fields, program))
        return filled
    if isinstance(value, str):
        for placeholder, text in fields.items():
            value = value.replace(placeholder, text)
    return value


def render_launchd(
    program: Sequence[str],
    *,
    socket_path: str,
    env_file: str,
    log_file: str,
    socket_activation: bool,
) -> bytes:
    template = plistlib.loads(source_text("launchd", PLIST).encode())
    fields = {"@SOCKET@": socket_path, "@ENV_FILE@": env_file, "@LOG@": log_file}
    job: dict[str, Any] = _fill(template, fields, program)
    if not socket_activation:
        del job["Sockets"]
        job["RunAtLoad"] = True
    return plistlib.dumps(job, sort_keys=False)


def enable_command(
    manager: Manager, *, socket_activation: bool, gateway: bool, plist_path: Path | None = None
) -> str:
    if manager == "launchd":
        target = f"gui/$(id -u)/{LAUNCHD_LABEL}"
        return (
            f"launchctl bootout {target} 2>/dev/null; launchctl bootstrap gui/$(id -u) {plist_path}"
        )
    units = [SOCKET, *([GATEWAY_SOCKET] if gateway else [])] if socket_activation else [SERVICE]
    return f"systemctl --user daemon-reload && systemctl --user enable --now {' '.join(units)}"


# --------------------------------------------------------------------------- effects


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def default_service_dir(manager: Manager, env: Mapping[str, str]) -> Path:
    if manager == "launchd":
        return _home(env) / "Library" / "LaunchAgents"
    config = env.get("XDG_CONFIG_HOME") or str(_home(env) / ".config")
    return Path(config) / "systemd" / "user"


def env_file_path(env: Mapping[str, str]) -> Path:
    # The unit names %h/.config/codexd/env: the same place whatever XDG_CONFIG_HOME says.
    return _home(env) / ".config" / "codexd" / "env"


def _write_atomically(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _diff(path: Path, old: bytes, new: bytes) -> str:
    lines = difflib.unified_diff(
        old.decode(errors="replace").splitlines(keepends=True),
        new.decode(errors="replace").splitlines(keepends=True),
        fromfile=f"{path} (now)",
        tofile=f"{path} (codexd)",
    )
    return "".join(lines)


def _ensure_env_file(path: Path, out: TextIO) -> None:
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            print(
                f"warning: {path} is readable by others (mode {mode:o}): chmod 600 {path}",
                file=out,
            )
        print(f"Environment file: {path} (kept). {ENV_FILE_HELP}", file=out)
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    print(f"Created the empty environment file {path} (mode 600). {ENV_FILE_HELP}", file=out)


def install_service(
    manager: Manager | None = None,
    *,
    socket_activation: bool = False,
    gateway: bool = False,
    dry_run: bool = False,
    force: bool = False,
    service_dir: str | os.PathLike[str] | None = None,
    program: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    platform: str = sys.platform,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Install the service files; returns the exit code (0 ok, 1 refused or failed, 2 usage)."""
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    native: Manager = "launchd" if platform == "darwin" else "systemd"
    manager = native if manager is None else manager
    if manager != native and not dry_run:
        where = "macOS" if manager == "launchd" else "Linux"
        print(
            f"codexd: {manager} runs on {where}, not here: use --{native}, "
            "or --dry-run to see the files",
            file=err,
        )
        return EXIT_USAGE
    if gateway and not socket_activation:
        print(
            "codexd: --gateway needs --socket-activation (it adds codexd-gateway.socket)", file=err
        )
        return EXIT_USAGE
    program = find_program() if program is None else list(program)
    target = Path(service_dir) if service_dir is not None else default_service_dir(manager, env)
    env_file = env_file_path(env)

    planned: list[PlannedFile] = []
    if manager == "systemd":
        for name, text in render_systemd(
            program, socket_activation=socket_activation, gateway=gateway
        ).items():
            planned.append(PlannedFile(target / name, text.encode()))
    else:
        socket_path = default_socket_path(env)
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            print(
                f"codexd: the socket path {socket_path} is longer than {MAX_SOCKET_PATH} bytes, "
                "too long for a Unix socket on macOS: set CODEXD_SOCKET to a shorter path and "
                "run install-service again",
                file=err,
            )
            return EXIT_FAILED
        log_file = _home(env) / "Library" / "Logs" / "codexd.log"
        content = render_launchd(
            program,
            socket_path=socket_path,
            env_file=str(env_file),
            log_file=str(log_file),
            socket_activation=socket_activation,
        )
        planned.append(PlannedFile(target / PLIST, content))
    command = enable_command(
        manager, socket_activation=socket_activation, gateway=gateway, plist_path=target / PLIST
    )

    if dry_run:
        for item in planned:
            print(f"# ---- {item.path}", file=out)
            out.write(item.content.decode())
        print(f"# ---- {env_file} (created empty, mode 600, if missing)", file=out)
        print(f"# {ENV_FILE_HELP}", file=out)
        print(f"# then run: {command}", file=out)
        return EXIT_OK

    changed = [
        (item, item.path.read_bytes())
        for item in planned
        if item.path.exists() and item.path.read_bytes() != item.content
    ]
    if changed and not force:
        for item, old in changed:
            err.write(_diff(item.path, old, item.content))
            print(
                f"codexd: {item.path} differs from what codexd would write: nothing was "
                "changed; rerun with --force to replace it (or --dry-run to see the new file)",
                file=err,
            )
        return EXIT_FAILED

    try:
        for item in planned:
            if item.path.exists() and item.path.read_bytes() == item.content:
                print(f"Unchanged: {item.path}", file=out)
                continue
            _write_atomically(item.path, item.content, item.mode)
            print(f"Wrote {item.path}", file=out)
        _ensure_env_file(env_file, out)
        if manager == "launchd":
            socket_dir = Path(default_socket_path(env)).parent
            socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            (_home(env) / "Library" / "Logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"codexd: cannot install the service files: {exc}", file=err)
        return EXIT_FAILED

    stale = target / SOCKET
    if manager == "systemd" and not socket_activation and stale.exists():
        print(
            f"note: {stale} from an earlier install still activates codexd: "
            f"systemctl --user disable --now {SOCKET} && rm {stale}",
            file=out,
        )
    print(f"To enable and start it now, run:\n  {command}", file=out)
    if manager == "systemd":
        print("To keep it running when you are logged out: loginctl enable-linger $USER", file=out)
    return EXIT_OK
