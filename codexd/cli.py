"""`codexd`: run the daemon, install it as a service, or run the offline demo."""

from __future__ import annotations

import argparse
import logging
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
    parser.error(f"unknown command {args.command}")
    return 2


def _configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        out = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _run(args: argparse.Namespace) -> int:
    import anyio

    from codexd import paths
    from codexd.daemon import Daemon

    _configure_logging(args.log_level or "info", args.log_format)
    resolved = paths.resolve(getattr(args, "socket", None))
    daemon = Daemon(resolved)
    try:
        anyio.run(daemon.run)
    except StartupError as exc:
        print(f"codexd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
