"""The promises of docs/SECURITY.md, one test (or a named test elsewhere) for each.

Peer uid: test_daemon_lifecycle.py::test_peer_of_another_uid_is_closed_without_an_answer.
Runtime dir open to others / a symlink / another user's: the same file's test_runtime_dir_*.
config/read redaction of header values: test_config_reload.py::test_config_read_shows_no_secret.
"""

from __future__ import annotations

import io
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from secrets import token_hex
from typing import Any

import httpx
import msgspec
import pytest

from codexctl import Client, RpcError
from codexctl.cli import main as codexctl_main
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_issuer import TokenReply
from codexd.testing.fake_openai import FakeOpenAI, RawReply, error_body
from codexd.testing.http import HttpServer, Request, Responder, serve_in_thread
from tests.conftest import LineConn, write_config
from tests.integration._chatgpt import (
    Recorder,
    assert_no_secrets,
    chatgpt_setup,
    run_job,
    write_login,
)

API_KEY = "sk-proj-SECRETSECRETSECRET-0123456789abcdefghijklmnop"
HEADER_SECRET = "hdr-SECRET-value-9876543210-zyxwvutsrq"
STATIC_SECRET = "static-SECRET-header-value-0000000000"
STORED_KEY = "sk-stored-SECRET-abcdefghijklmnopqrstuvwxyz-0123"

READ_METHODS = [
    ("daemon/status", None),
    ("account/read", None),
    ("config/read", None),
    ("models/list", None),
    ("job/list", None),
    ("ratelimits/read", None),
    ("usage/read", {"group_by": ["model", "client", "provider", "day"]}),
    ("daemon/methods", None),
]


def read_everything(client: Client, recorder: Recorder) -> None:
    for method, params in READ_METHODS:
        try:
            recorder.add(client.call(method, params))
        except RpcError as exc:
            recorder.add({"code": exc.code, "message": exc.message, "data": exc.data})


@pytest.fixture
def secret_env(daemon_env: dict[str, str], fake_openai: FakeOpenAI) -> dict[str, str]:
    write_config(
        daemon_env,
        f'openai_base_url = "{fake_openai.base_url}"\nmodel = "gpt-5"\n'
        'cli_auth_credentials_store = "file"\n'
        "[model_providers.fake]\n"
        f'name = "fake"\nbase_url = "{fake_openai.base_url}"\nenv_key = "FAKE_KEY"\n'
        "request_max_retries = 0\n"
        'env_http_headers = { "X-Team-Secret" = "TEAM_SECRET" }\n'
        'http_headers = { "X-Static" = "static-SECRET-header-value-0000000000" }\n',
    )
    daemon_env["OPENAI_API_KEY"] = API_KEY
    daemon_env["FAKE_KEY"] = API_KEY
    daemon_env["TEAM_SECRET"] = HEADER_SECRET
    return daemon_env


def job(client: Client, recorder: Recorder, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("body", {"input": "hi"})
    result = recorder.add(client.call("job/submit", params))
    events = []
    while True:
        n = client.next_notification(timeout=30)
        assert n is not None
        recorder.add(n.params)
        if n.method == "job/event" and n.params["job_id"] == result["job_id"]:
            events.append(n.params["event"])
            if n.params["event"]["type"] in {"job.completed", "job.failed", "job.cancelled"}:
                recorder.add(client.call("job/get", {"job_id": result["job_id"]}))
                return events


# ----------------------------------------------------------------------------- secrets


def test_no_api_key_or_header_secret_in_logs_results_events_or_errors(
    secret_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    """API-key mode at debug log level: a success, a 401, and a hostile upstream that quotes
    our key and headers back in its error message."""
    rec = Recorder()
    with DaemonProcess(secret_env, args=["--log-level", "debug"]) as d, Client(d.socket) as c:
        assert job(c, rec)[-1]["type"] == "job.completed"
        assert job(c, rec, provider="fake")[-1]["type"] == "job.completed"
        fake_openai.script(
            RawReply(
                401, error_body(f"Incorrect API key provided: {API_KEY}.", "x", "invalid_api_key")
            )
        )
        failed = job(c, rec, provider="fake")[-1]
        assert failed["type"] == "job.failed"
        echoed = f"bad header {HEADER_SECRET}, key {API_KEY}, static {STATIC_SECRET}"
        fake_openai.script(RawReply(400, error_body(echoed, "invalid_request_error", "x")))
        assert job(c, rec, provider="fake")[-1]["type"] == "job.failed"
        # A key handed over a login call is a secret too.
        rec.add(c.call("account/login", {"method": "api_key", "api_key": STORED_KEY}))
        read_everything(c, rec)
        log = d.stderr()
    # The fake really got them: the check below is about what came back.
    sent = fake_openai.model_requests()[1].headers
    assert sent["authorization"] == f"Bearer {API_KEY}"
    assert sent["x-team-secret"] == HEADER_SECRET
    secrets = [API_KEY, HEADER_SECRET, STORED_KEY, "static-SECRET-header-value-0000000000"]
    assert_no_secrets(secrets, rec.text(), log)
    assert "debug" in log.lower() or "DEBUG" in log  # the log really was verbose


def test_no_chatgpt_token_in_logs_or_results_across_a_refresh(daemon_env: dict[str, str]) -> None:
    with chatgpt_setup(daemon_env) as s:
        first = s.issuer.issue_tokens(access_ttl_s=60)  # inside the refresh window
        write_login(s.env, first)
        rec = Recorder()
        with DaemonProcess(s.env, args=["--log-level", "debug"]) as d, Client(d.socket) as c:
            assert run_job(c, {"input": "hi"}, rec)[-1]["type"] == "job.completed"
            read_everything(c, rec)
            log = d.stderr()
        with open(os.path.join(s.env["CODEX_HOME"], "auth.json"), "rb") as f:
            now_on_disk = msgspec.json.decode(f.read())["tokens"]
    assert now_on_disk["refresh_token"] != first.refresh_token  # a refresh did happen
    secrets = [first.access_token, first.refresh_token, first.id_token]
    secrets += [now_on_disk[k] for k in ("access_token", "refresh_token", "id_token")]
    assert_no_secrets(secrets, rec.text(), log)


class EchoingUpstream:
    """A hostile upstream on 127.0.0.1 that quotes back everything a request carried (the
    bearer, every header value, the query value) in every field of its error: `x-request-id`,
    `error.code`, `.type`, `.param` and `.message`, the message with runs of whitespace, or
    padded so that the echo straddles the 500-character bound. The request's `input` names
    the shape of the error."""

    def __init__(self) -> None:
        self.echoes: list[str] = []

    async def handle(self, request: Request, responder: Responder) -> None:
        h = request.headers
        echo = " ".join(
            [h["authorization"], h["x-static"], h["x-team-secret"], request.query["api-key"]]
        )
        self.echoes.append(echo)
        shape = request.json()["input"]
        if shape == "stream":
            failed = {
                "type": "response.failed",
                "response": {"error": {"code": echo, "message": "x" * 480 + echo}},
            }
            body = b"event: response.failed\ndata: " + msgspec.json.encode(failed) + b"\n\n"
            await responder.send(200, body, content_type="text/event-stream")
            return
        if shape == "code":
            error = {"message": f"rejected:\n\n  {echo}  \t", "type": "x", "param": echo}
            error["code"] = echo
        else:  # "type": no code, so the type stands in for it
            error = {"message": "x" * 480 + echo, "type": echo, "param": echo, "code": None}
        await responder.send_json(400, {"error": error}, headers=[("x-request-id", echo)])


def leaked(secret: str, text: str) -> bool:
    """Any 10 characters in a row of a secret's words (a cut-off piece leaks too)."""
    return any(word[i : i + 10] in text for word in secret.split() for i in range(len(word) - 9))


def test_an_upstream_echoing_our_secrets_into_every_error_field_is_scrubbed(
    daemon_env: dict[str, str],
) -> None:
    """Through job/get, job.failed, `codexctl jobs --json`, the gateway's error body and its
    `x-upstream-request-id`, and the debug log."""
    key = f"plainkey-{token_hex(16)}"  # no known key shape: only the sent value can match
    static = f"static-{token_hex(8)}   spaced   {token_hex(8)}"  # a run of spaces inside
    team = f"team-{token_hex(16)}"
    query = f"query-{token_hex(16)}"
    upstream = EchoingUpstream()
    with serve_in_thread(HttpServer(upstream.handle).serve) as port:
        write_config(
            daemon_env,
            'model = "gpt-5"\n[codexd.gateway]\nenabled = true\n'
            "[model_providers.hostile]\n"
            f'name = "hostile"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
            'env_key = "HOSTILE_KEY"\nrequest_max_retries = 0\nstream_max_retries = 0\n'
            f'query_params = {{ "api-key" = "{query}" }}\n'
            f'http_headers = {{ "X-Static" = "{static}" }}\n'
            'env_http_headers = { "X-Team-Secret" = "TEAM_SECRET" }\n',
        )
        daemon_env.update(HOSTILE_KEY=key, TEAM_SECRET=team)
        rec = Recorder()
        with DaemonProcess(daemon_env, args=["--log-level", "debug"]) as d, Client(d.socket) as c:
            for shape in ("code", "type", "stream"):
                failed = job(c, rec, provider="hostile", body={"input": shape})[-1]
                assert failed["type"] == "job.failed", failed
                assert failed["error"]["data"]["kind"] in ("bad_request", "upstream_error")
            gateway = httpx.Client(
                base_url="http://codexd",
                transport=httpx.HTTPTransport(
                    uds=os.path.join(os.path.dirname(d.socket), "gateway.sock")
                ),
                timeout=30,
            )
            with gateway:
                reply = gateway.post(
                    "/v1/responses",
                    json={"model": "gpt-5", "input": "code"},
                    headers={"x-codexd-provider": "hostile"},
                )
            assert reply.status_code == 400
            assert "x-upstream-request-id" in reply.headers  # the header is there, scrubbed
            rec.add([reply.text, dict(reply.headers)])
            out = io.StringIO()
            assert codexctl_main(["jobs", "--json", "--socket", d.socket], out=out) == 0
            rec.add(out.getvalue())
            log = d.stderr()
    # The upstream really got every secret, and echoed them.
    assert len(upstream.echoes) == 4
    assert all(s in upstream.echoes[0] for s in (key, static, team, query))
    text = rec.text()
    assert "upstream rejected the request (400" in text  # the upstream's errors did arrive
    for secret in (key, static, team, query):
        assert not leaked(secret, text), secret
        assert not leaked(secret, log), secret


def test_an_issuer_echoing_the_refresh_token_is_scrubbed(daemon_env: dict[str, str]) -> None:
    """An issuer (or a proxy before it) that quotes the refresh request back: the refresh
    token (shaped like no known token) and the access token, in `error_description`,
    `error.message` and `error.code`, padded and with runs of whitespace. Checked in the
    WARNING log lines, `job.failed` of the job that waited on the refresh, `job/get` and
    `account/refresh`'s `upstream_code`."""
    with chatgpt_setup(daemon_env) as s:
        tokens = s.issuer.issue_tokens(access_ttl_s=-60)  # expired: a job must refresh first
        write_login(s.env, tokens)
        echo = f"refresh_token= {tokens.refresh_token}\n\n   access {tokens.access_token}"
        described = msgspec.json.encode(
            {"error": "invalid_request", "error_description": "x" * 280 + echo}
        )
        in_message = msgspec.json.encode({"error": {"message": echo, "code": "unavailable"}})
        in_code = msgspec.json.encode({"error": {"message": "no", "code": tokens.refresh_token}})
        # Four transient failures (the first try and its three retries), then a 401.
        s.issuer.script(
            TokenReply(400, described),
            TokenReply(503, in_message),
            TokenReply(400, described),
            TokenReply(503, in_message),
            TokenReply(401, in_code),
            grant_type="refresh_token",
        )
        rec = Recorder()
        with s.daemon() as d, Client(d.socket) as c:
            failed = run_job(c, recorder=rec)[-1]
            assert failed["type"] == "job.failed"
            assert "could not refresh the ChatGPT login" in failed["error"]["message"]
            (listed,) = rec.add(c.call("job/list"))["jobs"]
            rec.add(c.call("job/get", {"job_id": listed["id"]}))
            with pytest.raises(RpcError) as info:
                c.call("account/refresh")
            rec.add({"message": info.value.message, "data": info.value.data})
            log = d.stderr()
        assert s.issuer.stats().scripted == 5  # every scripted answer was used
    assert log.count("refreshing the ChatGPT login failed") == 4
    text = rec.text()
    for secret in (tokens.refresh_token, tokens.access_token):
        assert not leaked(secret, log), secret
        assert not leaked(secret, text), secret
    assert info.value.data is not None
    assert (info.value.data.kind, info.value.data.upstream_code) == ("auth_expired", "[redacted]")


def test_environment_values_are_never_echoed(secret_env: dict[str, str]) -> None:
    """config/read names variables, never their values; so do the errors that mention them."""
    rec = Recorder()
    secret_env.pop("FAKE_KEY")
    with DaemonProcess(secret_env) as d, Client(d.socket) as c:
        cfg = rec.add(c.call("config/read"))
        with pytest.raises(RpcError) as info:
            c.call("job/submit", {"body": {"input": "hi"}, "provider": "fake"})
        rec.add(info.value.message)
        assert "FAKE_KEY" in info.value.message  # the variable's name helps the user
    text = rec.text()
    assert "TEAM_SECRET" in msgspec.json.encode(cfg).decode()
    assert_no_secrets([API_KEY, HEADER_SECRET], text)


# ----------------------------------------------------------------------------- files


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_every_file_codexd_creates_is_private(
    secret_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    with DaemonProcess(secret_env) as d, Client(d.socket) as c:
        c.call("account/login", {"method": "api_key", "api_key": STORED_KEY})
        job(c, Recorder())
        c.call("usage/read")  # the ledger has its row (and its WAL)
        run_dir = os.path.dirname(d.socket)
        state_dir = secret_env["CODEXD_STATE_DIR"]
        home = secret_env["CODEX_HOME"]
        assert mode(d.socket) == 0o600
        assert mode(run_dir) == 0o700
        assert mode(state_dir) == 0o700
        assert mode(os.path.join(home, "auth.json")) == 0o600
        ledger = [f for f in os.listdir(state_dir) if f.startswith("usage.sqlite3")]
        assert "usage.sqlite3" in ledger
        for name in [*os.listdir(state_dir), *os.listdir(run_dir)]:
            path = os.path.join(state_dir if name in ledger else run_dir, name)
            if os.path.exists(path):
                assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
        token = os.path.join(state_dir, "gateway.token")
        if os.path.exists(token):
            assert mode(token) == 0o600


def test_state_dir_symlink_is_refused(daemon_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    os.symlink(target, daemon_env["CODEXD_STATE_DIR"])
    result = subprocess.run(
        [sys.executable, "-m", "codexd", "run"],
        env=daemon_env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "symlink" in result.stderr and "state directory" in result.stderr
    assert list(target.iterdir()) == []  # no ledger was created through the link


def test_auth_json_symlink_is_replaced_never_written_through(
    secret_env: dict[str, str], tmp_path: Path
) -> None:
    """A login writes auth.json atomically (temp file + rename in CODEX_HOME): a symlink placed
    there is replaced by a private file, and its target is never written to."""
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    target.chmod(0o644)
    link = os.path.join(secret_env["CODEX_HOME"], "auth.json")
    os.symlink(target, link)
    with DaemonProcess(secret_env) as d, Client(d.socket) as c:
        c.call("account/login", {"method": "api_key", "api_key": STORED_KEY})
        c.call("account/read")
    assert target.read_text() == "{}"
    assert not os.path.islink(link)
    assert mode(link) == 0o600


# ----------------------------------------------------------------------------- core dumps


def _abort_and_find_core(argv: list[str], env: dict[str, str], cwd: Path, ready: Any) -> bool:
    """Run `argv` with core dumps allowed, wait for `ready(proc)`, SIGABRT it; True when the
    kernel wrote a core file into `cwd` (core_pattern "core")."""

    def allow_cores() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        preexec_fn=allow_cores,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready(proc)
        proc.send_signal(signal.SIGABRT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return any(p.name.startswith("core") for p in cwd.iterdir())


def test_the_daemon_never_dumps_core(daemon_env: dict[str, str], tmp_path: Path) -> None:
    """PR_SET_DUMPABLE = 0 at start (codexd/hardening.py): SIGABRT leaves no core file, where
    a plain Python process started the same way leaves one (the control)."""
    try:
        with open("/proc/sys/kernel/core_pattern") as f:
            pattern = f.read().strip()
    except OSError:
        pytest.skip("no /proc/sys/kernel/core_pattern (not Linux)")
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not write into the working directory")
    control_dir = tmp_path / "control"
    control_dir.mkdir()

    def printed(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        proc.stdout.readline()

    control = _abort_and_find_core(
        [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(60)"],
        daemon_env,
        control_dir,
        printed,
    )
    if not control:
        pytest.skip("this machine writes no core files at all: nothing to compare with")

    daemon_dir = tmp_path / "daemon"
    daemon_dir.mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    env = dict(daemon_env, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))

    def ready(proc: subprocess.Popen[bytes]) -> None:
        while b"READY=1" not in notify.recv(4096):
            pass
        # Not dumpable: the kernel hands /proc/PID to root (an observable for non-root runs).
        if os.getuid() != 0:
            assert os.stat(f"/proc/{proc.pid}").st_uid == 0

    with notify:
        dumped = _abort_and_find_core(
            [sys.executable, "-m", "codexd", "run"], env, daemon_dir, ready
        )
    assert not dumped, "codexd left a core dump"


# ----------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("line", "kind", "needle"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"x\x80"}', "parse_error", "UTF-8"),
        (b'{"":"\xff"}', "parse_error", "UTF-8"),
        (
            b'{"id":1,"method":"daemon/status","a":' + b"[" * 5000 + b"]" * 5000 + b"}",
            "parse_error",
            "nested",
        ),
        (
            b'{"id":1,"method":"job/submit","params":{"body":' + b"[" * 5000 + b"]" * 5000 + b"}}",
            "parse_error",
            "nest",
        ),
        (b'{"id":1,"method":"job/get","params":{"job_id":"\xc3"}}', "parse_error", "UTF-8"),
        (b"0\x00", "parse_error", "not JSON"),
    ],
    ids=["bad-utf8-method", "bad-utf8-key", "deep-array", "deep-params", "bad-utf8-params", "nul"],
)
def test_hostile_lines_from_a_same_user_process_get_an_error_not_a_crash(
    daemon: DaemonProcess, line: bytes, kind: str, needle: str
) -> None:
    conn = LineConn(daemon.socket)
    conn.send(line + b"\n")
    reply = conn.recv()
    error = reply["error"]
    assert isinstance(error, dict)
    assert error["data"]["kind"] == kind
    assert needle in error["message"]
    # The same connection, and the daemon, go on serving.
    assert "result" in conn.call("daemon/status", rid=2)
    conn.close()
    assert "result" in LineConn(daemon.socket).call("daemon/ping")


# ----------------------------------------------------------------------------- gateway


def test_gateway_token_is_private_and_never_shown_but_on_request(
    secret_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    """gateway.token is 0600 in the 0700 state dir, the gateway socket 0600; the token appears
    only in `gateway/token`'s reply: not in the log, not in a 401 for a wrong one."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(os.path.join(secret_env["CODEX_HOME"], "config.toml"), "a") as f:
        f.write(f'[codexd.gateway]\nenabled = true\ntcp = "127.0.0.1:{port}"\n')
    rec = Recorder()
    with DaemonProcess(secret_env, args=["--log-level", "debug"]) as d, Client(d.socket) as c:
        token = c.call("gateway/token")["token"]
        path = os.path.join(secret_env["CODEXD_STATE_DIR"], "gateway.token")
        assert mode(path) == 0o600
        assert mode(os.path.join(os.path.dirname(d.socket), "gateway.sock")) == 0o600
        url = f"http://127.0.0.1:{port}/v1/models"
        near_miss = token[:-1] + ("A" if token[-1] != "A" else "B")
        for headers in ({}, {"Authorization": f"Bearer {near_miss}"}):
            reply = httpx.get(url, headers=headers)
            assert reply.status_code == 401
            rec.add(reply.text)
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        read_everything(c, rec)
        log = d.stderr()
    assert_no_secrets([token, near_miss], rec.text(), log)
