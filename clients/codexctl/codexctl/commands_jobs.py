"""`codexctl ask | submit | watch | cancel | jobs | embed`: model requests as jobs.

`ask` and `watch` render a job the same way (`show_job`): on a terminal the text streams and a
retry that restarts the output takes back what was shown, then a usage line follows; to a pipe
or file only the final reply is written (or, with `--stream`, the text as it arrives, a restart
announced on stderr); with `--json` every event is a JSON line. `watch --events` lists the
events one per line. Ctrl-C (or SIGTERM, or a closed stdout) during `ask` cancels its job;
`watch` leaves the job running. `embed` prints the vectors of an embeddings job, one line of
numbers per input (`--json`: the provider's reply).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from codexctl.cli import (
    PROFILE_HELP,
    Context,
    UsageError,
    interrupts_held,
    next_notification,
    print_table,
)
from codexctl.errors import DaemonUnreachable
from codexctl.events import TEXT_DELTA, Follower, Step
from codexctl.fmt import format_usd, local_time
from codexctl.protocol import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RpcError,
    exit_code_for,
)

if TYPE_CHECKING:
    from codexctl.cli import Handler

JOB_STATES = ("queued", "running", "retrying", "completed", "failed", "cancelled")
DEFAULT_COLUMNS = 80
DEFAULT_LINES = 24

EventHandler = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- parsers


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> dict[str, Handler]:
    request = argparse.ArgumentParser(add_help=False)
    request.add_argument("prompt", metavar="PROMPT", help="the prompt, or - to read it from stdin")
    request.add_argument("--model", help="the model (default: config.toml's)")
    request.add_argument("--provider", help="a provider id of config.toml (default: its own)")
    request.add_argument(
        "--profile", metavar="NAME", default=argparse.SUPPRESS, help=PROFILE_HELP
    )
    request.add_argument("--reasoning", metavar="EFFORT", help="reasoning effort, e.g. low|high")
    request.add_argument("--system", metavar="TEXT", help="system instructions")
    request.add_argument(
        "--api", choices=("responses", "chat"), help="wire API (default: the provider's)"
    )

    ask = sub.add_parser(
        "ask", parents=[common, request], help="submit a prompt and print the reply"
    )
    ask.add_argument(
        "--stream",
        action="store_true",
        help="write text as it arrives even when stdout is not a terminal",
    )
    sub.add_parser(
        "submit", parents=[common, request], help="submit a prompt, print the job id and return"
    )

    watch = sub.add_parser(
        "watch", parents=[common], help="show a job as ask does, until it ends (Ctrl-C detaches)"
    )
    watch.add_argument("job_id", metavar="JOB")
    watch.add_argument(
        "--after-seq", type=int, default=0, metavar="N", help="replay events after seq N"
    )
    watch.add_argument(
        "--stream",
        action="store_true",
        help="write text as it arrives even when stdout is not a terminal",
    )
    watch.add_argument("--events", action="store_true", help="list the job's events, one line each")

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job_id", metavar="JOB")

    jobs = sub.add_parser("jobs", parents=[common], help="list recent jobs")
    jobs.add_argument("--state", choices=JOB_STATES)
    jobs.add_argument("--limit", type=int, metavar="N")

    embed = sub.add_parser(
        "embed",
        parents=[common],
        help="print the embedding vector of each TEXT, one line of numbers each",
    )
    embed.add_argument("texts", metavar="TEXT", nargs="+", help="an input, or - to read stdin")
    embed.add_argument("--model", required=True, help="the embedding model")
    embed.add_argument("--dimensions", type=int, metavar="N", help="shorten the vectors to N")
    embed.add_argument("--provider", help="a provider id of config.toml (default: its own)")
    embed.add_argument("--profile", metavar="NAME", default=argparse.SUPPRESS, help=PROFILE_HELP)

    return {
        "ask": cmd_ask,
        "submit": cmd_submit,
        "watch": cmd_watch,
        "cancel": cmd_cancel,
        "jobs": cmd_jobs,
        "embed": cmd_embed,
    }


# --------------------------------------------------------------------------- submit params


def read_prompt(arg: str, stdin: TextIO) -> str:
    prompt = stdin.read() if arg == "-" else arg
    if not prompt.strip():
        raise UsageError("the prompt is empty: pass it as an argument or pipe it with -")
    return prompt


def submit_params(args: argparse.Namespace, prompt: str, *, subscribe: bool) -> dict[str, Any]:
    """`job/submit` params: a Responses body by default, a Chat body with `--api chat`."""
    from codexctl.calls import submit_params as params_for

    return params_for(
        prompt,
        subscribe=subscribe,
        api=args.api,
        model=args.model,
        system=args.system,
        reasoning=args.reasoning,
        provider=args.provider,
        profile=getattr(args, "profile", None),  # after the command, or before it
    )


# --------------------------------------------------------------------------- following a job


def follow(
    client: Any,
    job_id: str,
    after_seq: int,
    on_event: EventHandler,
    *,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Hand each `job/event` of `job_id` (seq > after_seq, in order, once) to `on_event` until
    the terminal one, which is returned. A dropped subscription is re-attached after the last
    event seen, so the caller never notices. `out`, when given, is watched for a reader that
    went away (BrokenPipeError) while the job is quiet."""
    follower = Follower(job_id, after_seq)
    while True:
        n = next_notification(client, out)
        step = follower.feed(n)
        if step is Step.EVENT:
            on_event(n.params)
            if follower.done:
                return dict(n.params.get("event") or {})
        elif step is Step.RESUBSCRIBE:
            client.call("job/subscribe", {"job_id": job_id, "after_seq": follower.last})


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def job_error_exit(ctx: Context, terminal: dict[str, Any], job_id: str) -> int:
    """The exit status and stderr line for a job that did not complete."""
    if terminal.get("type") == "job.cancelled":
        ctx.err.write(f"codexctl: job {job_id} was cancelled\n")
        return EXIT_FAILED
    error = terminal.get("error") or {}
    kind = (error.get("data") or {}).get("kind", "internal_error")
    ctx.err.write(f"codexctl: {one_line(error.get('message') or kind)}\n")
    return exit_code_for(kind)


# --------------------------------------------------------------------------- renderers


def cell_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def rows_used(text: str, columns: int) -> int:
    """How many terminal rows `text` covers when written from column 0 (with the row the
    cursor ends on); a row filled to the last column does not wrap until the next character."""
    if not text:
        return 0
    rows = 0
    for line in text.split("\n"):
        width = sum(cell_width(c) for c in line)
        rows += max(1, -(-width // columns))
    return rows


class Renderer:
    """How `ask` shows a job; `on_event` for every event, then `finish` with the terminal one."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def on_event(self, params: dict[str, Any]) -> None:
        event = params["event"]
        etype = event.get("type")
        if etype == TEXT_DELTA:
            self.text(str(event.get("delta", "")))
        elif etype == "job.retrying":
            self.retrying(event)

    def text(self, delta: str) -> None:
        pass

    def retrying(self, event: dict[str, Any]) -> None:
        pass

    def completed(self, event: dict[str, Any]) -> None:
        pass

    def interrupted(self) -> None:
        pass

    def failed(self) -> None:
        pass


class JsonLines(Renderer):
    def on_event(self, params: dict[str, Any]) -> None:
        self.ctx.print_json_line(params)


class FinalReply(Renderer):
    """A pipe or file: exactly the final reply, written when the job completes."""

    def completed(self, event: dict[str, Any]) -> None:
        self.ctx.out.write(str(event.get("output_text") or "") + "\n")
        self.ctx.out.flush()


class EventListing(Renderer):
    """`watch --events`: one line per event, its seq, type and the members worth reading."""

    def on_event(self, params: dict[str, Any]) -> None:
        self.ctx.out.write(f"{params['seq']:>6}  {describe_event(params['event'])}\n")
        self.ctx.out.flush()


class StreamedText(Renderer):
    """`--stream` to a pipe: text as it arrives; a restart is announced on stderr."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.written = False
        self.at_line_start = True

    def text(self, delta: str) -> None:
        if not delta:
            return
        self.ctx.out.write(delta)
        self.ctx.out.flush()
        self.written = True
        self.at_line_start = delta.endswith("\n")

    def retrying(self, event: dict[str, Any]) -> None:
        if not event.get("reset_output"):
            return
        if self.written and not self.at_line_start:
            self.ctx.out.write("\n")
            self.ctx.out.flush()
        self.written = False
        self.at_line_start = True
        self.ctx.err.write(
            f"codexctl: the stream restarted ({one_line(event.get('reason', ''))}); "
            "the reply follows again from the start\n"
        )
        self.ctx.err.flush()

    def end_line(self) -> None:
        if not self.at_line_start:
            self.ctx.out.write("\n")
            self.ctx.out.flush()
            self.at_line_start = True

    def completed(self, event: dict[str, Any]) -> None:
        self.end_line()

    def interrupted(self) -> None:
        self.end_line()

    def failed(self) -> None:
        self.end_line()


class LiveTerminal(StreamedText):
    """A terminal: text streams, and a restart erases what was shown before the new attempt."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.shown = ""

    def size(self) -> tuple[int, int]:
        import os

        try:
            size = os.get_terminal_size(self.ctx.out.fileno())
        except (OSError, ValueError, AttributeError):
            return DEFAULT_COLUMNS, DEFAULT_LINES
        return size.columns or DEFAULT_COLUMNS, size.lines or DEFAULT_LINES

    def text(self, delta: str) -> None:
        super().text(delta)
        self.shown += delta

    def retrying(self, event: dict[str, Any]) -> None:
        out = self.ctx.out
        lead = "retrying"
        if event.get("reset_output") and self.shown:
            columns, lines = self.size()
            rows = rows_used(self.shown, columns)
            if rows < lines:
                up = rows - 1
                out.write("\r" + (f"\x1b[{up}A" if up else "") + "\x1b[J")
                lead = "the reply starts over"
            else:  # scrolled off the screen: it cannot be taken back, so say so
                if not self.at_line_start:
                    out.write("\n")
                lead = "the reply above is void and starts over below"
            self.shown = ""
            self.at_line_start = True
        elif not self.at_line_start:
            out.write("\n")
            self.at_line_start = True
        note = (
            f"{lead}: attempt {event.get('attempt')} in {event.get('delay_s', 0)}s "
            f"({one_line(event.get('reason', ''))})"
        )
        out.flush()
        self.ctx.err.write(f"codexctl: {note}\n")
        self.ctx.err.flush()


def renderer_for(ctx: Context, stream: bool) -> Renderer:
    if ctx.json:
        return JsonLines(ctx)
    if is_terminal(ctx.out):
        return LiveTerminal(ctx)
    if stream:
        return StreamedText(ctx)
    return FinalReply(ctx)


def is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def usage_line(model: str | None, event: dict[str, Any]) -> str:
    """`gpt-5 · 12 in / 8 out tokens · $0.0001` for a completed job."""
    usage = event.get("usage") or {}
    tokens = f"{usage.get('input_tokens', 0)} in"
    if usage.get("cached_input_tokens"):
        tokens += f" ({usage['cached_input_tokens']} cached)"
    tokens += f" / {usage.get('output_tokens', 0)} out tokens"
    parts = [p for p in (model, tokens) if p]
    cost = event.get("cost_usd")
    if cost is not None:
        parts.append(format_usd(float(cost)))
    return " · ".join(parts)


# --------------------------------------------------------------------------- commands


def show_job(ctx: Context, client: Any, job_id: str, after_seq: int, render: Renderer) -> int:
    """Follow a job to its end and show it with `render` (what `ask` and `watch` print);
    returns the exit status. A terminal also gets the usage line on stderr."""
    try:
        terminal = follow(client, job_id, after_seq, render.on_event, out=ctx.out)
    except KeyboardInterrupt:
        render.interrupted()
        raise
    if terminal.get("type") != "job.completed":
        render.failed()
        return job_error_exit(ctx, terminal, job_id)
    render.completed(terminal)
    if isinstance(render, LiveTerminal):
        model = None
        with contextlib.suppress(RpcError):
            model = client.job(job_id).model
        ctx.err.write(usage_line(model, terminal) + "\n")
    return EXIT_OK


def cmd_ask(args: argparse.Namespace, ctx: Context) -> int:
    prompt = read_prompt(args.prompt, sys.stdin)
    params = submit_params(args, prompt, subscribe=True)
    warn_if_unknown_model(args, ctx)
    render = renderer_for(ctx, args.stream)
    client = ctx.client()
    job_id: str | None = None
    try:
        with interrupts_held():
            job_id = str(client.call("job/submit", params)["job_id"])
        return show_job(ctx, client, job_id, 0, render)
    except KeyboardInterrupt:
        if job_id is not None:
            ctx.err.write(f"codexctl: interrupted; {cancel_own_job(ctx, job_id)[1]}\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # nobody reads the reply any more: stop paying for it, quietly
        if job_id is not None:
            cancelled, how = cancel_own_job(ctx, job_id)
            if not cancelled:
                ctx.err.write(f"codexctl: {how}\n")
        raise


def cmd_embed(args: argparse.Namespace, ctx: Context) -> int:
    texts = [read_prompt(text, sys.stdin) for text in args.texts]
    body: dict[str, Any] = {"model": args.model, "input": texts}
    if args.dimensions is not None:
        body["dimensions"] = args.dimensions
    params: dict[str, Any] = {"api": "embeddings", "body": body, "cancel_on_disconnect": True}
    if args.provider:
        params["provider"] = args.provider
    profile = getattr(args, "profile", None)  # after the command, or before it
    if profile is not None:
        params["profile"] = profile
    from codexctl.results import EMBEDDINGS_RESULT

    reply: dict[str, Any] = {}

    def on_event(note: dict[str, Any]) -> None:
        event = note["event"]
        if event.get("type") == EMBEDDINGS_RESULT:
            reply.update((k, v) for k, v in event.items() if k != "type")

    client = ctx.client()
    try:
        with interrupts_held():
            job_id = str(client.call("job/submit", params)["job_id"])
        terminal = follow(client, job_id, 0, on_event, out=ctx.out)
    except KeyboardInterrupt:  # the job goes with the connection (cancel_on_disconnect)
        return EXIT_INTERRUPTED
    if terminal.get("type") != "job.completed":
        return job_error_exit(ctx, terminal, job_id)
    if ctx.json:
        ctx.print_json(reply)
        return EXIT_OK
    from codexctl.fmt import plain_number

    lines: list[str] = []
    for item in sorted(reply.get("data") or [], key=lambda d: d.get("index", 0)):
        vector = item.get("embedding")
        if not isinstance(vector, list) or not all(_is_number(x) for x in vector):
            ctx.err.write(
                f"codexctl: the provider sent an embedding (index {item.get('index')}) that is "
                "not an array of numbers: check the provider's base_url, or print the reply "
                "as it came with --json\n"
            )
            return EXIT_FAILED
        lines.append(" ".join(str(plain_number(float(x))) for x in vector) + "\n")
    ctx.out.write("".join(lines))
    return EXIT_OK


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def warn_if_unknown_model(args: argparse.Namespace, ctx: Context) -> None:
    """The daemon checks `--reasoning` against the model's catalog levels; for a model the
    catalog does not know it cannot, and says so here, in one line (the job still goes)."""
    if not (args.reasoning and args.model):
        return
    from codexctl.protocol import catalog_slug

    slugs = {m.slug for m in ctx.client().models().models}
    if args.model not in slugs and catalog_slug(args.model) not in slugs:
        ctx.err.write(
            f"codexctl: warning: the model catalog does not know {args.model}: "
            f"reasoning effort {args.reasoning} is sent unchecked\n"
        )
        ctx.err.flush()


def cancel_own_job(ctx: Context, job_id: str) -> tuple[bool, str]:
    """Cancel the job `ask` submitted, on a fresh connection (the one in use may be
    mid-message): whether the call went through, and how the job ended, in words."""
    from codexctl.client import Client

    try:
        with Client(ctx.socket, timeout=10.0) as c:
            state = c.cancel(job_id).state
    except (RpcError, DaemonUnreachable, OSError) as exc:
        return False, f"could not cancel job {job_id}: {exc}"
    if state != "cancelled":
        return True, f"job {job_id} had already ended: {state}"
    return True, f"job {job_id} cancelled"


def cmd_submit(args: argparse.Namespace, ctx: Context) -> int:
    prompt = read_prompt(args.prompt, sys.stdin)
    params = submit_params(args, prompt, subscribe=False)
    warn_if_unknown_model(args, ctx)
    result = ctx.call("job/submit", params)
    if ctx.json:
        ctx.print_json(result)
    else:
        ctx.out.write(f"{result['job_id']}\n")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, ctx: Context) -> int:
    if args.after_seq < 0:
        raise UsageError("--after-seq must be 0 or more")
    render = EventListing(ctx) if args.events and not ctx.json else renderer_for(ctx, args.stream)
    client = ctx.client()
    client.call("job/subscribe", {"job_id": args.job_id, "after_seq": args.after_seq})
    return show_job(ctx, client, args.job_id, args.after_seq, render)


def describe_event(event: dict[str, Any]) -> str:
    """One human line for an event: its type and the members worth reading."""
    import msgspec

    etype = str(event.get("type", "?"))
    if etype == TEXT_DELTA or etype == "response.reasoning_summary_text.delta":
        detail = msgspec.json.encode(event.get("delta", "")).decode()
    elif etype == "job.queued":
        detail = f"position {event.get('position')}"
    elif etype == "job.started":
        detail = f"attempt {event.get('attempt')}"
    elif etype == "job.retrying":
        detail = (
            f"attempt {event.get('attempt')} in {event.get('delay_s')}s "
            f"({event.get('error_kind')}{', output reset' if event.get('reset_output') else ''})"
            f": {one_line(event.get('reason', ''))}"
        )
    elif etype == "job.completed":
        detail = usage_line(None, event)
    elif etype == "job.failed":
        error = event.get("error") or {}
        kind = (error.get("data") or {}).get("kind", "?")
        detail = f"{kind}: {one_line(error.get('message', ''))}"
    else:
        detail = ""
    return f"{etype}  {detail}".rstrip()


def cmd_cancel(args: argparse.Namespace, ctx: Context) -> int:
    job = ctx.call("job/cancel", {"job_id": args.job_id})
    if ctx.json:
        ctx.print_json(job)
    elif job.get("state") == "cancelled":
        ctx.out.write(f"{job['id']} cancelled\n")
    else:
        ctx.out.write(f"{job['id']} had already ended: {job.get('state')}\n")
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace, ctx: Context) -> int:
    params: dict[str, Any] = {}
    if args.state:
        params["state"] = args.state
    if args.limit is not None:
        if args.limit < 1:
            raise UsageError("--limit must be 1 or more")
        params["limit"] = args.limit
    result = ctx.call("job/list", params)
    if ctx.json:
        ctx.print_json(result)
        return EXIT_OK
    rows = [
        (
            str(j["id"]),
            str(j["state"]),
            str(j.get("client") or ""),
            str(j.get("model") or ""),
            str(j.get("attempts", 0)),
            "-" if j.get("cost_usd") is None else format_usd(float(j["cost_usd"])),
            local_time(j.get("created_at")),
            error_kind(j.get("error")),
        )
        for j in result["jobs"]
    ]
    if not rows:
        ctx.out.write("no jobs\n")
        return EXIT_OK
    print_table(
        ctx.out,
        ("ID", "STATE", "CLIENT", "MODEL", "ATTEMPTS", "COST", "CREATED", "ERROR"),
        rows,
        right=frozenset({4, 5}),
    )
    return EXIT_OK


def error_kind(error: Any) -> str:
    """A failed job's error kind (`quota_exceeded`), "" for a job without an error."""
    if not isinstance(error, dict):
        return ""
    return str((error.get("data") or {}).get("kind") or "error")
