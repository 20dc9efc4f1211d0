"""`codexctl`: the command line of codexd.

Exit codes: 0 ok · 1 the call failed · 2 usage error · 3 daemon unreachable · 4 authentication
needed · 5 rate/quota/usage limit · 130 interrupted · 141 stdout closed. Errors are one line on
stderr saying what happened and what to do next.

`main` is the one place that decides, for every command, what a signal or a closed stdout does:
SIGINT and SIGTERM raise KeyboardInterrupt (exit 130), and a reader of stdout that went away (a
pager or `head` that quit) ends the command quietly with 141, as git and gh end. A command that
must clean up on the way out (`ask` cancels its job) catches either, cleans up and re-raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys

from codexctl import __version__
from codexctl.contract import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_CLOSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    PROTOCOL_VERSION,
    RpcError,
    exit_code_for,
)
from codexctl.errors import DaemonUnreachable

# Neither typing nor msgspec is imported at run time on the way to `--version` or to `status`
# finding no daemon: each costs that start more than the rest of the command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, Final, TextIO

    Handler = Callable[[argparse.Namespace, "Context"], int]


class UsageError(Exception):
    """A mistake in the command line that argparse cannot see (exit 2)."""


def _common() -> argparse.ArgumentParser:
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the daemon's control socket (default: $CODEXD_SOCKET, then the runtime dir)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return common


# Where each command's parser and handler live. Only the module of the command being run is
# imported, so that `codexctl status` or `codexctl ask` starts fast; help imports them all.
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(
        ("ask", "submit", "watch", "cancel", "jobs", "embed"), "codexctl.commands_jobs"
    ),
    **dict.fromkeys(("models", "limits", "usage", "config", "events"), "codexctl.commands_info"),
    **dict.fromkeys(("login", "logout", "whoami"), "codexctl.commands_account"),
    **dict.fromkeys(("start", "shutdown"), "codexctl.commands_service"),
}
_OPTIONS_WITH_VALUE = ("--socket", "--profile")
# The commands that submit a job, so that a profile given before the command applies.
PROFILE_COMMANDS = ("ask", "submit", "embed")
_PROFILE_COMMANDS_TEXT = ", ".join(PROFILE_COMMANDS[:-1]) + " and " + PROFILE_COMMANDS[-1]
PROFILE_HELP = (
    "a profile: $CODEX_HOME/NAME.config.toml laid over config.toml, else its legacy "
    "[profiles.NAME] table (default: config.toml's `profile`)"
)


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (options before it skipped), if any."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _OPTIONS_WITH_VALUE:
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
    return None


def _modules_for(command: str | None, argv: Sequence[str] = ()) -> list[str]:
    if command in ("status", "rpc", "gateway"):
        return []
    if command is None and "--version" in argv and not {"-h", "--help"} & set(argv):
        return []  # argparse prints the version and exits: no command's parser is needed
    if command in COMMAND_MODULES:
        return [COMMAND_MODULES[command]]
    return sorted(set(COMMAND_MODULES.values()))


def build_parser(command: str | None = None, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    import argparse

    common = _common()
    p = argparse.ArgumentParser(
        prog="codexctl", description="Talk to the codexd daemon.", parents=[common]
    )
    p.add_argument("--version", action="version", version=f"codexctl {__version__}")
    p.add_argument(
        "--profile",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help=PROFILE_HELP + f"; for {_PROFILE_COMMANDS_TEXT}",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("status", parents=[common], help="show what the daemon is doing")

    rpc = sub.add_parser("rpc", parents=[common], help="call a method by name (raw JSON-RPC)")
    rpc.add_argument("method", nargs="?", help="e.g. daemon/status")
    rpc.add_argument("params", nargs="?", help="params as a JSON object")
    rpc.add_argument("--list", action="store_true", help="list the methods and their params")

    gateway = sub.add_parser("gateway", parents=[common], help="the OpenAI-compatible gateway")
    gateway_sub = gateway.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)
    token = gateway_sub.add_parser(
        "token", parents=[common], help="print the bearer token for the gateway's TCP address"
    )
    token.add_argument("--rotate", action="store_true", help="replace the token first")

    import importlib

    for module in _modules_for(command, argv):
        COMMANDS.update(importlib.import_module(module).add_parsers(sub, common))
    return p


class Context:
    """What a command needs: where the daemon is, how to print, a lazily opened client."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.socket: str | None = getattr(args, "socket", None)
        self.json: bool = bool(getattr(args, "json", False))
        self.out = out
        self.err = err
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from codexctl.contract import resolve_socket_path
            from codexctl.trust import open_checked

            # Connect first: when no daemon answers, the command ends here, before the
            # client's msgspec and typed results are loaded.
            opened = open_checked(
                resolve_socket_path(self.socket), explicit=bool(self.socket), timeout=None
            )
            with contextlib.ExitStack() as unless_connected:
                unless_connected.callback(opened.close)
                from codexctl.client import Client
                from codexctl.protocol import ClientInfo

                self._client = Client(
                    self.socket, client=ClientInfo(name="codexctl", version=__version__)
                )
                unless_connected.pop_all()  # the client owns the connection from here
            self._client.connect(opened)
        return self._client

    def call(self, method: str, params: Any = None) -> Any:
        return self.client().call(method, params)

    def print_json(self, value: Any) -> None:
        import msgspec

        from codexctl.fmt import json_ready

        encoded = msgspec.json.encode(json_ready(value))
        self.out.write(msgspec.json.format(encoded, indent=2).decode() + "\n")

    def print_json_line(self, value: Any) -> None:
        """One compact JSON value per line, flushed (for `--json` streams read by scripts)."""
        import msgspec

        from codexctl.fmt import json_ready

        self.out.write(msgspec.json.encode(json_ready(value)).decode() + "\n")
        self.out.flush()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# --------------------------------------------------------------------------- signals, closed stdout

# The signals that stop a command as Ctrl-C does.
INTERRUPTS: Final = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt while a command runs, even when they came in
    ignored (a background job of a shell script starts with SIGINT ignored)."""
    try:
        previous = {signum: signal.signal(signum, _interrupt) for signum in INTERRUPTS}
    except ValueError:  # not the main thread (main() called as a library): leave them be
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done (a submit on the wire), so that an
    interrupt always knows its job."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _pipe_fd(out: TextIO | None) -> int | None:
    """The descriptor of `out` when it is a pipe or a socket (whose reader can go away)."""
    if out is None:
        return None
    try:
        fd = out.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, ValueError, OSError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def next_notification(client: Any, out: TextIO | None = None) -> Any:
    """The daemon's next notification, for the commands that follow (ask, watch, events).

    When `out` is a pipe, its reader going away raises BrokenPipeError as soon as the system
    tells (Linux reports it on the pipe even while nothing is written), so a follower whose
    daemon is quiet ends then, not at its next line; elsewhere the next write finds out.
    """
    reader = _pipe_fd(out)
    if reader is None:
        while (note := client.next_notification(timeout=None)) is None:  # pragma: no cover
            pass
        return note
    import select

    poller = select.poll()
    poller.register(client.fileno(), select.POLLIN)
    poller.register(reader, 0)  # errors and hang-ups are always reported
    while True:
        note = client.next_notification(timeout=0)  # what is buffered, without blocking
        if note is not None:
            return note
        for fd, events in poller.poll():
            if fd == reader and events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                raise BrokenPipeError("the reader of stdout went away")


def _discard_if_closed(stream: TextIO) -> None:
    """Point a stream whose reader went away at /dev/null: what it still buffers would fail
    again when Python flushes it at exit, with a message on stderr."""
    try:
        stream.flush()
        return
    except BrokenPipeError:
        pass
    except (OSError, ValueError):
        return
    with contextlib.suppress(AttributeError, ValueError, OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


# --------------------------------------------------------------------------- commands


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    st = ctx.call("daemon/status")
    from codexctl.fmt import local_time, mode_words

    if ctx.json:
        ctx.print_json(st)
        return EXIT_OK
    rows: list[tuple[str, str]] = [
        ("daemon", f"codexd {st['version']} (protocol {st['protocol_version']}), pid {st['pid']}"),
        ("uptime", f"{format_duration(st['uptime_s'])} (since {local_time(st['started_at'])})"),
        ("socket", st["socket"]),
        ("started by", st["started_by"]),
        ("codex home", st["codex_home"]),
        ("state dir", st["state_dir"]),
    ]
    cfg = st.get("config")
    if cfg:
        loaded = local_time(cfg["loaded_at"])
        line = f"{cfg['path']} (generation {cfg['generation']}, loaded {loaded})"
        rows.append(("config", line))
        if cfg.get("error"):
            rows.append(("config error", f"{cfg['error']} (the previous config stays in force)"))
    acct = st.get("account")
    if acct:
        if acct.get("mode"):
            who = acct.get("email") or ""
            plan = f" ({acct['plan_type']})" if acct.get("plan_type") else ""
            rows.append(("account", f"{mode_words(acct['mode'])} {who}{plan}".strip()))
        else:
            rows.append(("account", "not logged in (codexctl login)"))
    jobs = st.get("jobs")
    if jobs:
        rows.append(
            (
                "jobs",
                f"{jobs['queued']} queued, {jobs['running']} running, {jobs['retained']} retained",
            )
        )
    rows.append(("connections", str(st["connections"])))
    rows.append(("gateway", gateway_line(st.get("gateway"))))
    print_rows(ctx.out, rows)
    for warning in status_warnings(st, os.environ):
        ctx.err.write(f"warning: {warning}\n")
    return EXIT_OK


def gateway_line(gateway: dict[str, Any] | None) -> str:
    """`codexctl status`'s gateway row: off, or where it listens."""
    if not gateway:
        return "off ([codexd.gateway] enabled = true turns it on)"
    if gateway.get("tcp"):
        return f"{gateway['unix']} and http://{gateway['tcp']}"
    return str(gateway["unix"])


def status_warnings(st: dict[str, Any], env: Any) -> list[str]:
    out = []
    mine = env.get("CODEX_HOME")
    if mine and os.path.abspath(mine) != st.get("codex_home"):
        out.append(
            f"your CODEX_HOME ({mine}) differs from the daemon's ({st.get('codex_home')}): "
            "the daemon reads its own config.toml and auth.json"
        )
    if st.get("protocol_version") != PROTOCOL_VERSION:
        out.append(
            f"the daemon speaks protocol {st.get('protocol_version')}, this codexctl "
            f"{PROTOCOL_VERSION}: upgrade the older of the two"
        )
    return out


def cmd_rpc(args: argparse.Namespace, ctx: Context) -> int:
    if args.list:
        methods = ctx.call("daemon/methods")
        if ctx.json:
            ctx.print_json(methods)
            return EXIT_OK
        rows = []
        for m in methods:
            rows.append((m["name"], f"{_params_summary(m['params_schema'])}  {m['summary']}"))
        print_rows(ctx.out, rows)
        return EXIT_OK
    if not args.method:
        raise UsageError("rpc needs a METHOD (or --list to see them)")
    params = None
    if args.params is not None:
        import msgspec

        try:
            params = msgspec.json.decode(args.params)
        except msgspec.DecodeError as exc:
            raise UsageError(f"params are not valid JSON ({exc}): pass an object like '{{}}'")
    ctx.print_json(ctx.call(args.method, params))
    return EXIT_OK


def _params_summary(schema: dict[str, Any]) -> str:
    """`{client, version?}` from a JSON Schema, for the method list."""
    ref = schema.get("$ref", "")
    defs = schema.get("$defs", {})
    body = defs.get(ref.rsplit("/", 1)[-1], schema) if ref else schema
    props = body.get("properties") or {}
    if not props:
        return "{}"
    required = set(body.get("required", []))
    names = [n if n in required else f"{n}?" for n in props]
    return "{" + ", ".join(names) + "}"


# --------------------------------------------------------------------------- output helpers


def print_rows(out: TextIO, rows: Sequence[tuple[str, str]]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        out.write(f"{key.ljust(width)}  {value}\n")


def print_table(
    out: TextIO,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: frozenset[int] = frozenset(),
) -> None:
    """An aligned table; the columns whose index is in `right` are right-aligned (numbers)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    out.write(line(headers) + "\n")
    for row in rows:
        out.write(line(row) + "\n")


def format_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def cmd_gateway(args: argparse.Namespace, ctx: Context) -> int:
    """Print (or rotate) the token whatever the gateway's state, so that it can be set up
    before the gateway is turned on; stderr says when nothing takes the token yet."""
    gateway = ctx.call("daemon/status").get("gateway")
    result = ctx.call("gateway/token", {"rotate": bool(args.rotate)})
    if ctx.json:
        ctx.print_json(result)
    else:
        ctx.out.write(result["token"] + "\n")
    if not gateway:
        ctx.err.write(
            "note: the gateway is off: the token is asked for on its TCP address once "
            '[codexd.gateway] enabled = true and tcp = "127.0.0.1:PORT" are set\n'
        )
    elif not gateway.get("tcp"):
        ctx.err.write(
            "note: the gateway has no TCP address, only gateway.sock (which needs no token): "
            'set [codexd.gateway] tcp = "127.0.0.1:PORT" to use the token\n'
        )
    return EXIT_OK


COMMANDS: dict[str, Handler] = {
    "status": cmd_status,
    "rpc": cmd_rpc,
    "gateway": cmd_gateway,
}


def _without_parser(words: Sequence[str]) -> argparse.Namespace | None:
    """What argparse would make of the two command lines whose start is timed, without
    importing and building it (about as long as the rest of their run): exactly `--version`
    (command None), and `status` with or without `--json`. None for any other command line,
    these with one more word included, which then goes through the parser."""
    from types import SimpleNamespace

    if list(words) == ["--version"]:
        return SimpleNamespace(command=None)  # type: ignore[return-value]
    if sorted(words) in (["status"], ["--json", "status"]):
        return SimpleNamespace(command="status", json="--json" in words)  # type: ignore[return-value]
    return None


def main(
    argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    ctx: Context | None = None
    try:
        with interrupts_raise():
            words = sys.argv[1:] if argv is None else argv
            args = _without_parser(words)
            if args is None:
                parser = build_parser(_command_of(words), words)
                args = parser.parse_args(argv)  # argparse itself is quiet on a closed stdout
                if args.command is None:
                    parser.print_help(err)
                    return EXIT_USAGE
                profile = getattr(args, "profile", None)
                if profile is not None and args.command not in PROFILE_COMMANDS:
                    parser.error(
                        f"--profile applies to {_PROFILE_COMMANDS_TEXT}, not {args.command}"
                    )
            elif args.command is None:
                out.write(f"codexctl {__version__}\n")
                return EXIT_OK
            ctx = Context(args, out, err)
            status = _run(args, ctx)
            out.flush()
            return status
    except KeyboardInterrupt:  # between the command's end and the last flush
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout (or stderr) has no reader any more: end quietly
        _discard_if_closed(out)
        _discard_if_closed(err)
        return EXIT_OUTPUT_CLOSED
    finally:
        if ctx is not None:
            ctx.close()


def _run(args: argparse.Namespace, ctx: Context) -> int:
    err = ctx.err
    try:
        return COMMANDS[args.command](args, ctx)
    except UsageError as exc:
        err.write(f"codexctl: {exc}\n")
        return EXIT_USAGE
    except RpcError as exc:
        err.write(f"codexctl: {exc.message}\n")
        return exit_code_for(exc.kind)
    except KeyboardInterrupt:
        err.write("codexctl: interrupted\n")
        return EXIT_INTERRUPTED
    except DaemonUnreachable as exc:
        err.write(f"codexctl: {exc}\n")
        return EXIT_UNREACHABLE
