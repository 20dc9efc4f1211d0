"""`codexd install-service`: put the systemd units or the LaunchAgent plist in place.

The sources are the top-level `systemd/` and `launchd/` folders; an installed package carries an
identical copy in `codexd/servicefiles/` (a test keeps them equal). Rendering is pure; the one
effectful function, `install_service`, writes only files that are missing or unchanged, unless
`force` says otherwise, and prints the command that enables the service.

A service does not inherit the installing shell's environment: when that shell points
`CODEX_HOME` or `CODEXD_STATE_DIR` somewhere else than the service would look by itself, the
two go into the service's environment file, so that both read the same files.
"""

from __future__ import annotations

import difflib
import os
import plistlib
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from codexctl.protocol import default_socket_path
from codexd.security.files import open_problem

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


# What the installing shell may have moved; the service must look in the same places.
SHELL_LOCATIONS = ("CODEX_HOME", "CODEXD_STATE_DIR")
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


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


def service_defaults(manager: Manager, env: Mapping[str, str]) -> dict[str, Path]:
    """Where the service looks when neither variable is set (it has no XDG_STATE_HOME)."""
    home = _home(env)
    state = (
        home / "Library" / "Application Support" / "codexd"
        if manager == "launchd"
        else home / ".local" / "state" / "codexd"
    )
    return {"CODEX_HOME": home / ".codex", "CODEXD_STATE_DIR": state}


def shell_locations(manager: Manager, env: Mapping[str, str]) -> dict[str, str]:
    """The installing shell's CODEX_HOME and CODEXD_STATE_DIR that the service would not
    use by itself, as absolute paths."""
    defaults = service_defaults(manager, env)
    moved = {}
    for name in SHELL_LOCATIONS:
        value = env.get(name)
        if value and Path(os.path.abspath(value)) != defaults[name]:
            moved[name] = os.path.abspath(value)
    return moved


def env_line(name: str, value: str) -> str | None:
    """`NAME=value` as both systemd's EnvironmentFile= and /bin/sh read it (single quotes
    around anything but plain path characters); None for a value with a single quote or a
    line break, which the two do not read alike."""
    if _SAFE_VALUE.fullmatch(value):
        return f"{name}={value}"
    if "'" in value or "\n" in value or "\r" in value:
        return None
    return f"{name}='{value}'"


def _env_value(line: str, name: str) -> str | None:
    """The value a `NAME=value` line sets (unquoted), or None when it sets something else."""
    match = re.fullmatch(rf"\s*(?:export\s+)?{name}=(.*?)\s*", line)
    if match is None:
        return None
    value = match.group(1)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


@dataclass(frozen=True, slots=True)
class EnvFilePlan:
    """The environment file with the shell's locations in it."""

    content: bytes
    added: tuple[str, ...]  # NAME=value lines appended
    replaced: tuple[tuple[str, str], ...]  # (old line, new line)
    unwritable: tuple[str, ...] = ()  # names whose value cannot be written as a line


def plan_env_file(existing: bytes | None, wanted: Mapping[str, str]) -> EnvFilePlan:
    lines = (existing or b"").decode(errors="replace").splitlines()
    added: list[str] = []
    replaced: list[tuple[str, str]] = []
    unwritable: list[str] = []
    for name, value in wanted.items():
        new = env_line(name, value)
        if new is None:
            unwritable.append(name)
            continue
        found = [i for i, line in enumerate(lines) if _env_value(line, name) is not None]
        if not found:
            lines.append(new)
            added.append(new)
            continue
        last = found[-1]  # the one that counts
        if _env_value(lines[last], name) != value:
            replaced.append((lines[last], new))
            lines[last] = new
    content = ("\n".join(lines) + "\n").encode() if lines else b""
    return EnvFilePlan(content, tuple(added), tuple(replaced), tuple(unwritable))


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


def _ensure_env_file(path: Path, plan: EnvFilePlan, out: TextIO) -> None:
    same = " (so the service reads the same files as this shell)"
    if path.exists():
        changed = plan.content != path.read_bytes()
        if changed:
            _write_atomically(path, plan.content, 0o600)
        for line in plan.added:
            print(f"Added {line} to {path}{same}.", file=out)
        for old, line in plan.replaced:
            print(f"Replaced {old} with {line} in {path}{same}.", file=out)
        print(
            f"Environment file: {path} ({'updated' if changed else 'kept'}). {ENV_FILE_HELP}",
            file=out,
        )
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_atomically(path, plan.content, 0o600)
    if plan.added:
        print(
            f"Created the environment file {path} (mode 600) with {' and '.join(plan.added)}"
            f"{same}. {ENV_FILE_HELP}",
            file=out,
        )
    else:
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
    usage = _usage_problem(manager, native, socket_activation, gateway, dry_run)
    if usage is not None:
        print(usage, file=err)
        return EXIT_USAGE
    program = find_program() if program is None else list(program)
    target = Path(service_dir) if service_dir is not None else default_service_dir(manager, env)
    env_file = env_file_path(env)
    planned = _plan_service_files(manager, program, target, env, socket_activation, gateway, err)
    if planned is None:
        return EXIT_FAILED
    command = enable_command(
        manager, socket_activation=socket_activation, gateway=gateway, plist_path=target / PLIST
    )
    env_plan = _plan_env(manager, env, env_file, err)
    if env_plan is None:
        return EXIT_FAILED
    if dry_run:
        _show_plan(planned, env_file, env_plan, command, out)
        return EXIT_OK
    if _refused(planned, env_file, env_plan, force, err):
        return EXIT_FAILED
    if not _write_service_files(planned, env_file, env_plan, manager, env, out, err):
        return EXIT_FAILED
    _print_next_steps(manager, target, socket_activation, command, out)
    return EXIT_OK


def _usage_problem(
    manager: Manager, native: Manager, socket_activation: bool, gateway: bool, dry_run: bool
) -> str | None:
    """What is wrong with the options asked for (exit 2), or None."""
    if manager != native and not dry_run:
        where = "macOS" if manager == "launchd" else "Linux"
        return (
            f"codexd: {manager} runs on {where}, not here: use --{native}, "
            "or --dry-run to see the files"
        )
    if gateway and not socket_activation:
        return "codexd: --gateway needs --socket-activation (it adds codexd-gateway.socket)"
    return None


def _plan_service_files(
    manager: Manager,
    program: list[str],
    target: Path,
    env: Mapping[str, str],
    socket_activation: bool,
    gateway: bool,
    err: TextIO,
) -> list[PlannedFile] | None:
    """The unit files (systemd) or the plist (launchd) to write; None when they cannot be."""
    if manager == "systemd":
        return [
            PlannedFile(target / name, text.encode())
            for name, text in render_systemd(
                program, socket_activation=socket_activation, gateway=gateway
            ).items()
        ]
    socket_path = default_socket_path(env)
    if len(socket_path.encode()) > MAX_SOCKET_PATH:
        print(
            f"codexd: the socket path {socket_path} is longer than {MAX_SOCKET_PATH} bytes, "
            "too long for a Unix socket on macOS: set CODEXD_SOCKET to a shorter path and "
            "run install-service again",
            file=err,
        )
        return None
    log_file = _home(env) / "Library" / "Logs" / "codexd.log"
    content = render_launchd(
        program,
        socket_path=socket_path,
        env_file=str(env_file_path(env)),
        log_file=str(log_file),
        socket_activation=socket_activation,
    )
    return [PlannedFile(target / PLIST, content)]


def _plan_env(
    manager: Manager, env: Mapping[str, str], env_file: Path, err: TextIO
) -> EnvFilePlan | None:
    """What the environment file gains (this shell's locations); None when it is unreadable."""
    try:
        existing_env = env_file.read_bytes() if env_file.exists() else None
        env_mode = env_file.stat().st_mode if existing_env is not None else 0
    except OSError as exc:
        print(f"codexd: cannot read {env_file}: {exc.strerror or exc}", file=err)
        return None
    problem = open_problem(str(env_file), "environment file", env_mode)
    if problem is not None:  # it holds API keys: nothing is written while others can read it
        print(f"codexd: {problem}", file=err)
        return None
    env_plan = plan_env_file(existing_env, shell_locations(manager, env))
    for name in env_plan.unwritable:
        print(
            f"warning: {name} has a quote or a line break, which an environment file cannot "
            f"hold alike for systemd and sh: the service will not see it; move {name} to a "
            "plainer path",
            file=err,
        )
    return env_plan


def _show_plan(
    planned: list[PlannedFile], env_file: Path, env_plan: EnvFilePlan, command: str, out: TextIO
) -> None:
    """--dry-run: every file as it would be written, and the command to run next."""
    for item in planned:
        print(f"# ---- {item.path}", file=out)
        out.write(item.content.decode())
    if env_plan.added or env_plan.replaced:
        print(
            f"# ---- {env_file} (mode 600), with this shell's locations, so the service "
            "reads the same files:",
            file=out,
        )
        for line in env_plan.added:
            print(line, file=out)
        for was, line in env_plan.replaced:
            print(f"# instead of {was} (with --force):\n{line}", file=out)
    else:
        print(f"# ---- {env_file} (created empty, mode 600, if missing)", file=out)
    print(f"# {ENV_FILE_HELP}", file=out)
    print(f"# then run: {command}", file=out)


def _refused(
    planned: list[PlannedFile], env_file: Path, env_plan: EnvFilePlan, force: bool, err: TextIO
) -> bool:
    """Without --force, nothing a user has (an env line, a changed file) is overwritten: True
    (and why, on `err`) when something would be."""
    if force:
        return False
    if env_plan.replaced:
        for was, line in env_plan.replaced:
            print(
                f"codexd: {env_file} has {was} but this shell has {line}: nothing was changed; "
                "rerun with --force to write this shell's value, or change the line yourself",
                file=err,
            )
        return True
    changed = [
        (item, item.path.read_bytes())
        for item in planned
        if item.path.exists() and item.path.read_bytes() != item.content
    ]
    for item, old in changed:
        err.write(_diff(item.path, old, item.content))
        print(
            f"codexd: {item.path} differs from what codexd would write: nothing was "
            "changed; rerun with --force to replace it (or --dry-run to see the new file)",
            file=err,
        )
    return bool(changed)


def _write_service_files(
    planned: list[PlannedFile],
    env_file: Path,
    env_plan: EnvFilePlan,
    manager: Manager,
    env: Mapping[str, str],
    out: TextIO,
    err: TextIO,
) -> bool:
    """Write what changed, the environment file and launchd's directories; False on failure."""
    try:
        for item in planned:
            if item.path.exists() and item.path.read_bytes() == item.content:
                print(f"Unchanged: {item.path}", file=out)
                continue
            _write_atomically(item.path, item.content, item.mode)
            print(f"Wrote {item.path}", file=out)
        _ensure_env_file(env_file, env_plan, out)
        if manager == "launchd":
            socket_dir = Path(default_socket_path(env)).parent
            socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            (_home(env) / "Library" / "Logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"codexd: cannot install the service files: {exc}", file=err)
        return False
    return True


def _print_next_steps(
    manager: Manager, target: Path, socket_activation: bool, command: str, out: TextIO
) -> None:
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
