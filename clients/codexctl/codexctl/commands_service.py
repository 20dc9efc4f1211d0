"""`codexctl start` and `codexctl shutdown`: the daemon on machines without a service manager
`start` launches `codexd run` in the background and waits until it answers
`daemon/status`; `shutdown` asks it to drain and waits until it is gone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from codexctl.errors import ConnectionLost, DaemonUnreachable, UntrustedSocket
from codexctl.protocol import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, resolve_socket_path

if TYPE_CHECKING:
    from codexctl.cli import Context, Handler

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 120.0  # the daemon's drain_timeout_s (30 s by default) plus its flush
POLL_S = 0.05


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    sub.add_parser(
        "start",
        parents=[common],
        help="start codexd in the background when no daemon answers, and wait until ready",
    )
    sub.add_parser("shutdown", parents=[common], help="drain and stop the daemon")
    return {"start": cmd_start, "shutdown": cmd_shutdown}


def _status(explicit_socket: str | None) -> dict[str, Any] | None:
    """The daemon's status, or None when nothing answers; a socket that is not provably the
    user's own daemon is refused (UntrustedSocket, exit 3), never taken for an absent one."""
    from codexctl.client import Client

    try:
        with Client(explicit_socket, timeout=5) as c:
            result = c.call("daemon/status")
    except UntrustedSocket:
        raise
    except (DaemonUnreachable, OSError):
        return None
    return result if isinstance(result, dict) else None


def state_dir(env: Any) -> str:
    """Where the background daemon's log goes: the daemon's own state dir when we can tell."""
    explicit = env.get("CODEXD_STATE_DIR")
    if explicit:
        return str(explicit)
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Application Support/codexd")
    base = env.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "codexd")


def cmd_start(args: argparse.Namespace, ctx: Context) -> int:
    from codexctl.commands_info import find_codexd

    socket_path = resolve_socket_path(ctx.socket)
    running = _status(ctx.socket)
    if running is not None:
        ctx.out.write(f"{socket_path}\n")
        ctx.err.write(f"codexctl: codexd is already running (pid {running['pid']})\n")
        return EXIT_OK
    program = find_codexd()
    if program is None:
        ctx.err.write(
            "codexctl: codexd is not installed here (not beside this Python, not on PATH): "
            "install it, or start it with your service manager\n"
        )
        return EXIT_UNREACHABLE
    logs = state_dir(os.environ)
    os.makedirs(logs, mode=0o700, exist_ok=True)
    log_path = os.path.join(logs, "codexd.log")
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    command = [program, "run"] + (["--socket", ctx.socket] if ctx.socket else [])
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            env=env,
            start_new_session=True,  # not ended by the terminal's Ctrl-C or hang-up
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        status = _status(ctx.socket)
        if status is not None:
            if ctx.json:
                ctx.print_json({"socket": socket_path, "pid": status["pid"], "log": log_path})
            else:
                ctx.out.write(f"{socket_path}\n")
                ctx.err.write(f"codexctl: codexd started (pid {status['pid']}, log {log_path})\n")
            return EXIT_OK
        code = proc.poll()
        if code is not None:
            ctx.err.write(f"codexctl: codexd exited {code}: {_last_line(log_path)}\n")
            return EXIT_FAILED
        time.sleep(POLL_S)
    ctx.err.write(
        f"codexctl: codexd (pid {proc.pid}) did not answer on {socket_path} within "
        f"{START_TIMEOUT_S:.0f}s: see {log_path}\n"
    )
    return EXIT_FAILED


def cmd_shutdown(args: argparse.Namespace, ctx: Context) -> int:
    socket_path = resolve_socket_path(ctx.socket)
    try:
        pid = ctx.call("daemon/status")["pid"]
    except (UntrustedSocket, ConnectionLost):
        raise  # not provably ours, or it went away mid-call: exit 3 with the usual message
    except DaemonUnreachable:
        ctx.err.write(f"codexctl: no codexd is running at {socket_path}: nothing to stop\n")
        return EXIT_OK
    ctx.call("daemon/shutdown")
    ctx.close()
    # Gone means: the process has exited, or it no longer answers and its socket is removed.
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid) or (not os.path.exists(socket_path) and _status(ctx.socket) is None):
            ctx.err.write("codexctl: codexd stopped\n")
            return EXIT_OK
        time.sleep(POLL_S)
    ctx.err.write(f"codexctl: codexd is still answering on {socket_path}: it is draining jobs\n")
    return EXIT_FAILED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(no log)"
