"""`codexd`: run the daemon, install it as a service, or run the offline demo."""

from __future__ import annotations

import argparse
import sys

from codexd import __version__
from codexd.paths import StartupError


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket", metavar="PATH", default=argparse.SUPPRESS, help="control socket path"
    )
    p = argparse.ArgumentParser(
        prog="codexd",
        description="One per-user daemon for everything that talks to OpenAI.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"codexd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument("--log-format", choices=("plain", "json"), default="plain")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None)
    sub.add_parser(
        "demo", parents=[common], help="the offline demo: a fake upstream, a daemon, one request"
    )
    inst = sub.add_parser(
        "install-service",
        parents=[common],
        help="install the systemd user unit or the launchd agent",
    )
    which = inst.add_mutually_exclusive_group()
    which.add_argument("--systemd", dest="manager", action="store_const", const="systemd")
    which.add_argument("--launchd", dest="manager", action="store_const", const="launchd")
    inst.add_argument("--socket-activation", action="store_true", help="start on first connect")
    inst.add_argument("--gateway", action="store_true", help="also a socket unit for gateway.sock")
    inst.add_argument("--dry-run", action="store_true", help="print the files instead")
    inst.add_argument("--force", action="store_true", help="overwrite files changed by hand")
    config = sub.add_parser("config", parents=[common], help="validate config.toml")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser("check", help="validate a config file (no daemon needed)")
    check.add_argument("file", nargs="?", metavar="FILE", help="default: $CODEX_HOME/config.toml")
    docs = sub.add_parser(
        "docs", help="regenerate the docs made from the code (in a source checkout)"
    )
    docs.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a generated doc is stale"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        from codexd.demo import run_demo

        return run_demo()
    if args.command == "install-service":
        from codexd.install import install_service

        return install_service(
            args.manager,
            socket_activation=args.socket_activation,
            gateway=args.gateway,
            dry_run=args.dry_run,
            force=args.force,
        )
    if args.command == "config":
        return _config_check(args.file)
    if args.command == "docs":
        return _docs(check=args.check)
    parser.error(f"unknown command {args.command}")
    return 2


def _config_check(file: str | None) -> int:
    from codexd import paths
    from codexd.config.load import ConfigError, load_file, unknown_key_warnings

    path = file or paths.resolve(None).config_file
    try:
        load_file(path)
        warnings = unknown_key_warnings(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: ok")
    return 0


def _docs(*, check: bool) -> int:
    from codexd import docsgen

    try:
        root = docsgen.repo_root()
    except LookupError as exc:
        print(f"codexd: {exc}", file=sys.stderr)
        return 1
    if check:
        stale = docsgen.stale(root)
        for rel in stale:
            print(f"{rel} is stale: run {docsgen.REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    for rel in docsgen.write(root):
        print(f"wrote {rel}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import logging
    import os

    import anyio

    from codexd import paths
    from codexd.activation import activated_sockets
    from codexd.allocator import pin_mmap_threshold
    from codexd.daemon import Daemon
    from codexd.eventloop import choose
    from codexd.hardening import disable_core_dumps
    from codexd.logs import configure_logging

    disable_core_dumps()  # before any secret is read: a core dump would hold them in clear
    pin_mmap_threshold()
    configure_logging(args.log_level or "info", args.log_format)
    try:
        passed = activated_sockets()
        resolved = paths.resolve(getattr(args, "socket", None))
        daemon = Daemon.prepare(resolved, passed=passed)
        if args.log_level is None:
            configure_logging(daemon.config.snapshot.codexd.log_level, args.log_format)
        loop = choose(daemon.config.snapshot.codexd.event_loop, os.environ)
        if loop.note is not None:
            logging.getLogger("codexd").warning("%s", loop.note)
        anyio.run(daemon.run, backend="asyncio", backend_options=loop.backend_options())
    except StartupError as exc:
        print(f"codexd: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # A part that fails to start inside the task group (the gateway's port in use)
        # arrives wrapped: it is still a start-up failure with one located line.
        startup, rest = group.split(StartupError)
        if startup is None or rest is not None:
            raise
        print(f"codexd: {_first(startup)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _first(group: BaseExceptionGroup[StartupError]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
