"""`codexctl models | limits | usage | config show|check|reload | events`."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from codexctl.cli import (
    Context,
    UsageError,
    format_duration,
    next_notification,
    print_table,
)
from codexctl.fmt import (
    ESTIMATE_NOTE,
    clock_of,
    format_usd,
    local_clock,
    local_time,
    mode_words,
    plain_number,
)
from codexctl.protocol import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE

if TYPE_CHECKING:
    from codexctl.cli import Handler

TOPICS: Final = ("account", "config", "ratelimits", "jobs")
GROUP_KEYS: Final = ("model", "client", "provider", "day")
BAR_WIDTH: Final = 20
CHECK_TIMEOUT_S: Final = 60.0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> dict[str, Handler]:
    models = sub.add_parser("models", parents=[common], help="the model catalog and its prices")
    models.add_argument("--provider", help="a provider id of config.toml")

    limits = sub.add_parser(
        "limits", parents=[common], help="rate-limit budgets and upstream windows per provider"
    )
    limits.add_argument("--provider", help="only this provider")

    usage = sub.add_parser("usage", parents=[common], help="tokens and cost from the ledger")
    usage.add_argument("--since", metavar="DATE", help="YYYY-MM-DD (local) or an RFC 3339 time")
    usage.add_argument("--until", metavar="DATE", help="YYYY-MM-DD (inclusive) or RFC 3339")
    usage.add_argument("--by", choices=GROUP_KEYS, default="model", help="group rows by")
    usage.add_argument("--csv", action="store_true", help="comma-separated rows")

    config = sub.add_parser("config", parents=[common], help="show, check or reload config.toml")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_sub.add_parser("show", parents=[common], help="the effective config, redacted")
    check = config_sub.add_parser(
        "check", parents=[common], help="validate a config file (no daemon needed)"
    )
    check.add_argument("file", nargs="?", metavar="FILE", help="default: $CODEX_HOME/config.toml")
    config_sub.add_parser("reload", parents=[common], help="make the daemon read it again")

    events = sub.add_parser("events", parents=[common], help="follow daemon notifications")
    events.add_argument(
        "topics", nargs="*", metavar="TOPIC", help=f"any of {', '.join(TOPICS)} (default: all)"
    )
    return {
        "models": cmd_models,
        "limits": cmd_limits,
        "usage": cmd_usage,
        "config": cmd_config,
        "events": cmd_events,
    }


# --------------------------------------------------------------------------- formatting


def format_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def format_price(p: Any, estimated: bool = False) -> str:
    """A price per million tokens as a plain decimal (`1.25`, `10`, `0.00005`); `~` in front
    for an estimate."""
    if not isinstance(p, (int, float)) or isinstance(p, bool):
        return "-"
    return ("~" if estimated else "") + str(plain_number(float(p))).removesuffix(".0")


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def parse_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def format_minutes(minutes: int | None) -> str:
    if not minutes:
        return "window"
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d window"
    if minutes % 60 == 0:
        return f"{minutes // 60}h window"
    return f"{minutes}m window"


# --------------------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace, ctx: Context) -> int:
    params = {"provider": args.provider} if args.provider else {}
    result = ctx.call("models/list", params)
    if ctx.json:
        ctx.print_json(result)
        return EXIT_OK
    rows = []
    default = result.get("default_price") or {}
    for m in result["models"]:
        levels = [
            f"{lv}*" if lv == m.get("default_reasoning_level") else str(lv)
            for lv in m.get("supported_reasoning_levels") or []
        ]
        # A model without a price of its own is charged the default price: an estimate.
        estimated = not m.get("price")
        price = default if estimated else m["price"]
        rows.append(
            (
                str(m["slug"]),
                format_int(m.get("context_window")),
                ",".join(levels) or "-",
                format_price(price.get("input"), estimated),
                format_price(price.get("cached_input"), estimated),
                format_price(price.get("output"), estimated),
                str(price.get("as_of") or "-"),
                str(price.get("source") or "-"),
            )
        )
    print_table(
        ctx.out,
        (
            "MODEL",
            "CONTEXT",
            "REASONING (*default)",
            "IN $/1M",
            "CACHED $/1M",
            "OUT $/1M",
            "AS OF",
            "SOURCE",
        ),
        rows,
        right=frozenset({1, 3, 4, 5}),
    )
    if any(not m.get("price") for m in result["models"]):
        ctx.out.write(ESTIMATE_NOTE + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------- limits


def cmd_limits(args: argparse.Namespace, ctx: Context) -> int:
    params = {"provider": args.provider} if args.provider else {}
    result = ctx.call("ratelimits/read", params)
    if ctx.json:
        ctx.print_json(result)
        return EXIT_OK
    now = time.time()
    blocks = [(e["provider"], limit_sections(e, now)) for e in result["providers"]]
    # one column for every provider's values, so that the blocks line up
    width = max(
        (len(k) for _, sections in blocks for _, rows in sections for k, _ in rows), default=0
    )
    for i, (provider, sections) in enumerate(blocks):
        if i:
            ctx.out.write("\n")
        ctx.out.write(f"{provider}\n")
        for title, rows in sections:
            ctx.out.write(f"  {title}\n")
            for key, value in rows:
                ctx.out.write(f"    {key.ljust(width)}  {value}\n")
    return EXIT_OK


def limit_sections(entry: Mapping[str, Any], now: float) -> list[tuple[str, list[tuple[str, str]]]]:
    """One provider in `codexctl limits`: codexd's own budget (what is set, what is left, what
    waits), then the upstream's windows as bars of what is used, each with its reset time.
    A number appears once: a budget learned from the upstream's headers is the upstream's."""
    b = entry.get("budget") or {}
    budget = [
        ("requests", _left(b.get("available_requests"), b.get("requests_per_minute"), "/min")),
        ("tokens", _left(b.get("available_tokens"), b.get("tokens_per_minute"), "/min")),
        ("in flight", f"{b.get('in_flight', 0)} of {b.get('max_concurrency', '?')}"),
        ("queued", str(b.get("queued", 0))),
    ]
    paused = b.get("paused_until")
    if paused and (parse_time(paused) or 0) > now:
        left = format_duration((parse_time(paused) or now) - now)
        budget.append(("paused", f"until {local_clock(paused)} (in {left})"))
    else:
        budget.append(("paused", "no"))
    backend = entry.get("backend")
    if backend:
        state = "connected" if backend.get("connected") else "unreachable, using the local budget"
        detail = f" ({backend['error']})" if backend.get("error") else ""
        budget.append(("shared", f"{backend.get('kind')} {backend.get('url')}: {state}{detail}"))
    up = entry.get("upstream") or {}
    upstream: list[tuple[str, str]] = []
    for name in ("requests", "tokens"):
        w = up.get(name)
        if w and w.get("limit"):
            remaining, limit = w.get("remaining"), w["limit"]
            if remaining is None:  # the upstream sent its limit alone
                line = f"{bar(0)} ? of {format_int(limit)} left"
            else:
                used = 1 - remaining / limit
                line = f"{bar(used)} {format_int(remaining)} of {format_int(limit)} left"
            upstream.append((name, _with_reset(line, w.get("resets_at"), now)))
    for name in ("primary", "secondary"):
        w = up.get(name)
        if w:
            used = float(w.get("used_percent") or 0.0)
            line = f"{bar(used / 100)} {used:.0f}% used"
            upstream.append(
                (
                    format_minutes(w.get("window_minutes")),
                    _with_reset(line, w.get("resets_at"), now),
                )
            )
    credits = up.get("credits")
    if credits:
        if credits.get("unlimited"):
            upstream.append(("credits", "unlimited"))
        elif credits.get("has_credits") is False:
            upstream.append(("credits", "none"))
        elif credits.get("balance") is not None:
            upstream.append(("credits", f"balance {credits['balance']}"))
    sections = [("codexd budget", budget)]
    if upstream:
        sections.append(("upstream (as last seen)", upstream))
    return sections


def _with_reset(line: str, stamp: str | None, now: float) -> str:
    at = parse_time(stamp)
    if at is None or stamp is None:
        return line
    when = local_clock(stamp) if at - now < 86_400 else local_time(stamp)
    return f"{line}, resets in {format_duration(max(0.0, at - now))} ({when})"


def _left(available: Any, limit: Any, unit: str) -> str:
    if limit is None:
        return (
            "not set (the upstream's window below applies)" if available is not None else "not set"
        )
    return f"{format_int(available)} left of {format_int(limit)}{unit}"


# --------------------------------------------------------------------------- usage

USAGE_FIELDS: Final = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "estimated",
)


def cmd_usage(args: argparse.Namespace, ctx: Context) -> int:
    if ctx.json and args.csv:
        raise UsageError("choose one of --json and --csv")
    params: dict[str, Any] = {"group_by": [args.by]}
    if args.since:
        params["since"] = args.since
    if args.until:
        params["until"] = args.until
    result = ctx.call("usage/read", params)
    if ctx.json:
        ctx.print_json(result)
    elif args.csv:
        write_usage_csv(ctx.out, args.by, result["rows"])
    else:
        write_usage_table(ctx.out, args.by, result["rows"], result["total"])
        line = budget_line(ctx)
        if line:
            ctx.out.write(line + "\n")
    return EXIT_OK


def budget_line(ctx: Context, today: date | None = None) -> str | None:
    """`budget  today $0.12 of $5.00 · this month $3.40 of $100.00`, when caps are set."""
    caps = ((ctx.call("config/read").get("effective") or {}).get("codexd") or {}).get("budget")
    if not caps or (caps.get("daily_usd") is None and caps.get("monthly_usd") is None):
        return None
    today = today or date.today()
    parts = []
    for label, cap, since in (
        ("today", caps.get("daily_usd"), today),
        ("this month", caps.get("monthly_usd"), today.replace(day=1)),
    ):
        if cap is None:
            continue
        spent = ctx.call("usage/read", {"since": since.isoformat(), "until": today.isoformat()})
        spend = float(spent["total"].get("cost_usd", 0.0))
        parts.append(f"{label} {format_usd(spend)} of {format_usd(float(cap))}")
    return "budget  " + " · ".join(parts)


def write_usage_csv(out: TextIO, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((key, *USAGE_FIELDS))
    for row in rows:
        writer.writerow(
            (
                row.get(key, ""),
                *(
                    str(row.get(f, "")).lower()
                    if f == "estimated"
                    else plain_number(row.get(f, ""))
                    for f in USAGE_FIELDS
                ),
            )
        )


def write_usage_table(
    out: TextIO, key: str, rows: Sequence[Mapping[str, Any]], total: Mapping[str, Any]
) -> None:
    if not rows:
        out.write("no usage recorded in this period\n")
        return

    def cells(label: str, r: Mapping[str, Any]) -> list[str]:
        return [
            label,
            format_int(r.get("requests", 0)),
            format_int(r.get("input_tokens", 0)),
            format_int(r.get("cached_input_tokens", 0)),
            format_int(r.get("output_tokens", 0)),
            format_int(r.get("reasoning_tokens", 0)),
            format_usd(float(r.get("cost_usd", 0.0)), bool(r.get("estimated"))),
        ]

    headers = [key.upper(), "REQUESTS", "INPUT", "CACHED", "OUTPUT", "REASONING", "COST"]
    table = [cells(str(r.get(key, "")), r) for r in rows]
    if key == "day":
        measure = "cost_usd" if any(r.get("cost_usd") for r in rows) else "requests"
        top = max(float(r.get(measure) or 0) for r in rows) or 1.0
        for line, r in zip(table, rows, strict=True):
            line.append(bar(float(r.get(measure) or 0) / top))
        headers.append("")
    footer = cells("total", total)
    if key == "day":
        footer.append("")
    print_table(out, headers, [*table, footer], right=frozenset(range(1, 7)))
    if any(r.get("estimated") for r in rows):
        out.write(ESTIMATE_NOTE + "\n")


# --------------------------------------------------------------------------- config


def cmd_config(args: argparse.Namespace, ctx: Context) -> int:
    action = args.config_command
    if action == "show":
        return config_show(ctx)
    if action == "check":
        return config_check(args.file, ctx)
    if action == "reload":
        result = ctx.call("config/reload")
        if ctx.json:
            ctx.print_json(result)
        elif result["changed"]:
            ctx.out.write(f"config reloaded: generation {result['generation']}\n")
        else:
            ctx.out.write(f"config unchanged: generation {result['generation']}\n")
        return EXIT_OK
    raise UsageError("config needs an action: show, check [FILE] or reload")


def config_show(ctx: Context) -> int:
    result = ctx.call("config/read")
    if ctx.json:
        ctx.print_json(result)
        return EXIT_OK
    loaded = local_time(result["loaded_at"])
    ctx.out.write(f"# {result['path']} (generation {result['generation']}, loaded {loaded})\n")
    if result.get("error"):
        ctx.out.write(f"# last reload failed: {result['error']} (this config stays in force)\n")
    layers = result.get("layers") or []
    if layers:
        ctx.out.write("# made from, each laid over the ones before it:\n")
        for layer in layers:
            ctx.out.write(f"#   {layer_line(layer)}\n")
    shaped, builtins = as_config_file(result.get("effective") or {})
    ctx.out.write("\n".join(toml_lines(shaped)) + "\n")
    if builtins:
        ctx.out.write("\n# built-in providers (configured by Codex itself, not in config.toml):\n")
        lines = toml_lines({"model_providers": builtins})
        ctx.out.write("\n".join(f"# {line}" if line else "#" for line in lines[1:]) + "\n")
    return EXIT_OK


_LAYER_WORDS: Final = {
    "config": "config",
    "codexd": "codexd settings",
    "profile": "profile file",
    "legacy_profile": "legacy profile",
}


def layer_line(layer: Mapping[str, Any]) -> str:
    """One layer of `config/read` in words: `profile file   work  /home/me/.codex/work.config.toml`;
    a legacy profile names its table."""
    kind = str(layer.get("kind"))
    path = str(layer.get("path"))
    name = layer.get("profile")
    if kind == "legacy_profile":
        path = f"[profiles.{name}] in {path}"
    label = f"{_LAYER_WORDS.get(kind, kind)} {name}" if name else _LAYER_WORDS.get(kind, kind)
    return f"{label:<24} {path}"


def as_config_file(effective: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The effective config under the names config.toml uses, so that a person can copy a
    table from `config show` into the file: the daemon's `providers` are
    `[model_providers.ID]`, less the built-in ones (returned apart: the file may not define
    them); the file paths the daemon reports are in the header, not keys."""
    from codexctl.protocol import RESERVED_PROVIDER_IDS

    shaped: dict[str, Any] = {}
    builtins: dict[str, Any] = {}
    for key, value in effective.items():
        if key in ("path", "codexd_path"):
            continue
        if key == "providers":
            custom = {k: v for k, v in value.items() if k not in RESERVED_PROVIDER_IDS}
            builtins = {k: v for k, v in value.items() if k in RESERVED_PROVIDER_IDS}
            shaped["model_providers"] = custom
        else:
            shaped[key] = value
    return shaped, builtins


_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def toml_key(key: str) -> str:
    import msgspec

    return key if key and set(key) <= _BARE else msgspec.json.encode(key).decode()


def toml_lines(table: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """A TOML-looking rendering of a JSON object: scalars first, then sub-tables; nulls are
    left out (TOML has none), everything else is written as its JSON value."""
    import msgspec

    lines: list[str] = []
    scalars = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    if path and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(toml_key(p) for p in path) + "]")
    for key, value in scalars:
        lines.append(f"{toml_key(key)} = {msgspec.json.encode(value).decode()}")
    for key, value in tables:
        lines.extend(toml_lines(value, (*path, key)))
    return lines


def find_codexd() -> str | None:
    """The `codexd` program: beside this Python first (same install), then on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "codexd")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("codexd")


def default_config_path(env: Mapping[str, str]) -> str:
    home = env.get("CODEX_HOME") or os.path.join(os.path.expanduser("~"), ".codex")
    return os.path.join(os.path.abspath(home), "config.toml")


def config_check(file: str | None, ctx: Context) -> int:
    path = os.path.abspath(file) if file else default_config_path(os.environ)
    program = find_codexd()
    if program is None:
        ctx.err.write(
            "codexctl: codexd is not installed here (not beside this Python, not on PATH): "
            "install codexd to check a config without a daemon\n"
        )
        return EXIT_UNREACHABLE
    try:
        done = subprocess.run(
            [program, "config", "check", path],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        ctx.err.write(f"codexctl: could not run {program} config check: {exc}\n")
        return EXIT_UNREACHABLE
    ok = done.returncode == 0
    error = None if ok else last_line(done.stderr) or f"{program} exited {done.returncode}"
    warnings = [
        line.removeprefix("warning: ")
        for line in done.stderr.splitlines()
        if ok and line.startswith("warning: ")
    ]
    if ctx.json:
        ctx.print_json({"file": path, "ok": ok, "error": error, "warnings": warnings})
    elif ok:
        for warning in warnings:
            ctx.err.write(f"codexctl: warning: {warning}\n")
        ctx.out.write(f"{path}: ok\n")
    else:
        ctx.err.write(f"codexctl: {error}\n")
    return EXIT_OK if ok else EXIT_FAILED


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------- events


def cmd_events(args: argparse.Namespace, ctx: Context) -> int:
    topics = list(dict.fromkeys(args.topics)) or list(TOPICS)
    unknown = [t for t in topics if t not in TOPICS]
    if unknown:
        raise UsageError(f"unknown topic {unknown[0]!r}: choose from {', '.join(TOPICS)}")
    client = ctx.client()
    client.call("events/subscribe", {"topics": topics})
    ctx.err.write(f"codexctl: following {', '.join(topics)}; Ctrl-C stops\n")
    ctx.err.flush()
    shown: dict[tuple[str, str], str] = {}  # the last line per state (bounded: see state_of)
    while True:
        n = next_notification(client, ctx.out)
        if ctx.json:
            ctx.print_json_line({"method": n.method, "params": n.params})
        else:
            params = n.params if isinstance(n.params, dict) else {}
            label, subject, text = describe_notification(n.method, params)
            state = state_of(n.method, subject)
            line = f"{label:<{EVENT_LABEL_WIDTH}}  {text}"
            if state is None or shown.get(state) != line:  # an unchanged state: not again
                if state is not None:
                    shown[state] = line
                ctx.out.write(f"{clock_of(datetime.now().astimezone())}  {line}\n")
                ctx.out.flush()
        if n.method == "subscription/dropped" and isinstance(n.params, dict):
            topic = n.params.get("topic")
            if topic in topics:
                client.call("events/subscribe", {"topics": [topic]})


EVENT_LABEL_WIDTH: Final = 15


def state_of(method: str, subject: str) -> tuple[str, str] | None:
    """The state a notification reports, for `events` to skip a repeat of an unchanged one:
    the config (reloaded or invalid), the account, a provider's limits. Jobs, logins and
    missed events are happenings, each shown; so at most one line is kept per state, and the
    providers are the config's."""
    if method in ("config/reloaded", "config/invalid"):
        return ("config", "")
    if method == "account/updated":
        return ("account", "")
    if method == "ratelimits/updated":
        return ("limits", subject)
    return None


def describe_notification(method: str, p: Mapping[str, Any]) -> tuple[str, str, str]:
    """One notification for `codexctl events`: its label, what it is about (a provider, a
    job; "" for the daemon as a whole) and the line a person reads, in the words of status,
    whoami, jobs and limits (`--json` has the raw notification)."""
    if method == "config/reloaded":
        return "config reloaded", "", f"generation {p.get('generation')} from {p.get('path')}"
    if method == "config/invalid":
        return "config invalid", "", f"{p.get('error')} (the previous config stays in force)"
    if method == "account/updated":
        if not p.get("mode"):
            return "account", "", "logged out"
        plan = f" ({p['plan_type']})" if p.get("plan_type") else ""
        return "account", "", f"{mode_words(p['mode'])} {p.get('email') or ''}{plan}".strip()
    if method == "account/login_completed":
        if p.get("success"):
            return "login", str(p.get("login_id") or ""), "completed"
        return "login", str(p.get("login_id") or ""), f"failed: {p.get('error') or 'no reason'}"
    if method in ("job/created", "job/finished"):
        job = p.get("job") or {}
        words = [str(job.get("state") or "")]
        words += [str(job[k]) for k in ("client", "model") if job.get(k)]
        if method == "job/finished":
            if job.get("cost_usd") is not None:
                words.append(format_usd(float(job["cost_usd"])))
            if isinstance(job.get("error"), dict):
                words.append(f"({error_words(job['error'])})")
        label = "job created" if method == "job/created" else "job finished"
        return (
            label,
            str(job.get("id") or ""),
            f"{job.get('id')} " + " ".join(w for w in words if w),
        )
    if method == "ratelimits/updated":
        provider = str(p.get("provider") or "")
        b = p.get("budget") or {}
        text = f"{provider}: {b.get('in_flight', 0)} in flight, {b.get('queued', 0)} queued"
        paused = b.get("paused_until")
        if paused:
            text += f", paused until {local_clock(paused)}"
        return "limits", provider, text
    if method == "subscription/dropped":
        what = p.get("topic") or p.get("job_id")
        return "missed events", str(what or ""), f"{what}: this client fell behind; following again"
    members = ", ".join(f"{k} {v}" for k, v in p.items() if not isinstance(v, (dict, list)))
    return method.replace("/", " "), "", members or "-"


def error_words(error: Mapping[str, Any]) -> str:
    """A job error as a person reads it: its kind and message."""
    kind = (error.get("data") or {}).get("kind")
    message = error.get("message") or ""
    return f"{kind}: {message}" if kind and message else str(kind or message or "error")
