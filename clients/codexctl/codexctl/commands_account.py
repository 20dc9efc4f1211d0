"""`codexctl login`, `logout` and `whoami`.

`login` starts a login in the daemon and waits for its `account/login_completed`: the browser
login prints the sign-in URL (and opens it when this machine has a browser to open, or says to
use `--device` when it has none), the device login prints the code and where to enter it, and
`--api-key` reads the key from stdin (never from the command line, where other users could read
it in the process list); the daemon checks it with the provider before storing it, unless
`--no-verify`. Ctrl-C cancels the login in the daemon.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from codexctl.fmt import SOURCES, STORES, local_time, mode_words
from codexctl.protocol import EXIT_AUTH, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from codexctl.cli import Context

MAX_KEY_BYTES = 4096

Handler = Callable[[argparse.Namespace, "Context"], int]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add login, logout and whoami to `sub`; returns their handlers by command name."""
    login = sub.add_parser(
        "login",
        parents=[common],
        help="log in (browser by default)",
        description="Log in with ChatGPT in a browser (the default), with a device code, or "
        "store an API key read from stdin.",
    )
    how = login.add_mutually_exclusive_group()
    how.add_argument(
        "--api-key",
        action="store_true",
        help="read an API key from stdin (e.g. printenv OPENAI_API_KEY | codexctl login --api-key)",
    )
    how.add_argument(
        "--device", action="store_true", help="sign in on another device with a one-time code"
    )
    login.add_argument(
        "--no-verify",
        action="store_true",
        help="with --api-key: store the key without checking it with the provider first",
    )
    sub.add_parser("logout", parents=[common], help="revoke and delete the stored login")
    sub.add_parser("whoami", parents=[common], help="show who is logged in and which credential")
    return {"login": cmd_login, "logout": cmd_logout, "whoami": cmd_whoami}


# --------------------------------------------------------------------------- login


def cmd_login(args: argparse.Namespace, ctx: Context) -> int:
    if args.no_verify and not args.api_key:
        from codexctl.cli import UsageError

        raise UsageError("--no-verify goes with --api-key (only a key is checked before storing)")
    if args.api_key:
        params: dict[str, Any] = {
            "method": "api_key",
            "api_key": read_api_key(sys.stdin, ctx.err),
            "verify": not args.no_verify,
        }
    else:
        params = {"method": "device" if args.device else "browser"}
    started = ctx.call("account/login", params)
    login_id = started["login_id"]
    try:
        # Inside the try: a Ctrl-C right after the instructions still cancels the login.
        announce(ctx, started)
        completed = wait_for_completion(ctx, login_id)
    except KeyboardInterrupt:
        try:
            ctx.call("account/login/cancel", {"login_id": login_id})
        except Exception:  # best effort: the daemon may be gone too
            pass
        ctx.err.write("codexctl: login cancelled\n")
        return EXIT_INTERRUPTED
    if not completed.get("success"):
        ctx.err.write(f"codexctl: login failed: {completed.get('error') or 'unknown error'}\n")
        return EXIT_FAILED
    account = ctx.call("account/read")
    if ctx.json:
        ctx.print_json({"login_id": login_id, "success": True, "account": account})
    else:
        ctx.out.write(describe_login(account) + "\n")
    return EXIT_OK


def announce(ctx: Context, started: Mapping[str, Any]) -> None:
    """Tell the person what to do: the URL to open, or the code to enter and where."""
    if ctx.json:
        if "auth_url" in started or "user_code" in started:
            ctx.print_json(started)
            ctx.out.flush()
        return
    if started.get("auth_url"):
        url = started["auth_url"]
        ctx.err.write(f"Sign in with your browser:\n\n  {url}\n\n")
        ctx.err.flush()
        missing = no_browser(os.environ)
        if missing:
            ctx.err.write(
                f"No browser to open here ({missing}): use codexctl login --device to sign in "
                "from another device, or open the URL above in a browser on this machine.\n"
            )
        elif _open(url):
            ctx.err.write("(opened in your browser)\n")
        ctx.err.write("Waiting for the sign-in to complete... (Ctrl-C cancels)\n")
    elif started.get("user_code"):
        ctx.err.write(
            f"On any device, open\n\n  {started['verification_url']}\n\n"
            f"and enter the code\n\n  {started['user_code']}\n\n"
            "Waiting for the sign-in to complete... (Ctrl-C cancels)\n"
        )
    ctx.err.flush()


def read_api_key(stdin: TextIO, err: TextIO) -> str:
    """The key from stdin: a hidden prompt on a terminal, else the first line of the input."""
    from codexctl.cli import UsageError

    if stdin.isatty():
        import getpass

        key = getpass.getpass("OpenAI API key: ", stream=err)
    else:
        key = stdin.readline(MAX_KEY_BYTES + 1)
    key = key.strip()
    if not key:
        raise UsageError(
            "no API key on stdin: pipe it in, e.g. printenv OPENAI_API_KEY | codexctl login "
            "--api-key"
        )
    return key


def wait_for_completion(ctx: Context, login_id: str) -> dict[str, Any]:
    client = ctx.client()
    while True:
        note = client.next_notification(timeout=None)
        if note is None:
            continue
        if note.method == "account/login_completed" and note.params.get("login_id") == login_id:
            result: dict[str, Any] = note.params
            return result


def no_browser(env: Mapping[str, str], platform: str = sys.platform) -> str | None:
    """Why no browser can be shown to the person here, or None when one can: over SSH the
    browser would be on another machine (whose 127.0.0.1 is not the daemon's callback); on
    Linux and the BSDs a graphical session is needed unless $BROWSER names a program."""
    if env.get("SSH_CONNECTION") or env.get("SSH_TTY"):
        return "an SSH session"
    if env.get("BROWSER") or platform in ("darwin", "win32"):
        return None
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return "no DISPLAY or WAYLAND_DISPLAY"
    return None


def _open(url: str) -> bool:
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def describe_login(account: Mapping[str, Any]) -> str:
    if account.get("mode") == "chatgpt":
        who = account.get("email") or "your ChatGPT account"
        plan = f" ({account['plan_type']} plan)" if account.get("plan_type") else ""
        return f"Logged in using ChatGPT as {who}{plan}"
    if account.get("mode") == "api_key":
        return f"Logged in using an API key {SOURCES.get(account.get('source') or '', '')}".strip()
    return "Not logged in"


# --------------------------------------------------------------------------- logout, whoami


def cmd_logout(args: argparse.Namespace, ctx: Context) -> int:
    before = ctx.call("account/read")
    result = ctx.call("account/logout")
    if ctx.json:
        ctx.print_json(result)
        return EXIT_OK
    if result.get("revoked"):
        ctx.out.write("Logged out (the login was revoked upstream and deleted)\n")
    else:
        ctx.out.write("Logged out (the stored login was deleted)\n")
    after = ctx.call("account/read")
    if after.get("source") == "env":
        ctx.err.write(
            "warning: the daemon still has an API key from its environment (OPENAI_API_KEY); "
            "remove it there to stop using it\n"
        )
    elif before.get("mode") is None:
        ctx.err.write("note: there was no stored login\n")
    return EXIT_OK


def credential_in_use(account: Mapping[str, Any]) -> str:
    mode = account.get("mode")
    source = SOURCES.get(account.get("source") or "", "")
    if mode == "chatgpt":
        return f"ChatGPT access token {source}".strip()
    if mode == "api_key":
        return f"API key {source}".strip()
    return "none"


def cmd_whoami(args: argparse.Namespace, ctx: Context) -> int:
    from codexctl.cli import print_rows

    account = ctx.call("account/read")
    if ctx.json:
        ctx.print_json(account)
        return EXIT_OK if account.get("mode") else EXIT_AUTH
    if not account.get("mode"):
        ctx.err.write("codexctl: not logged in: run codexctl login\n")
        return EXIT_AUTH
    rows = [("mode", mode_words(account["mode"]))]
    if account.get("key_hint"):
        rows.append(("key", account["key_hint"]))
    if account["mode"] == "chatgpt":
        rows += [("email", account.get("email") or "-"), ("plan", account.get("plan_type") or "-")]
    if account.get("account_id"):
        rows.append(("account id", account["account_id"]))
    store = account.get("store") or ""
    rows += [
        ("credential", credential_in_use(account)),
        ("store", STORES.get(store, store or "-")),
    ]
    if account.get("expires_at"):
        rows.append(("token expires", local_time(account["expires_at"])))
    if account.get("last_refresh"):
        rows.append(("last refresh", local_time(account["last_refresh"])))
    print_rows(ctx.out, rows)
    return EXIT_OK
