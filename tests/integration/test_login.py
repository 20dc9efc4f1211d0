"""account/login end to end: a real daemon, the fake issuer, the test as the browser."""

from __future__ import annotations

import os
import socket
import stat
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest

from codexctl import Client, RpcError
from tests.integration._chatgpt import (
    Recorder,
    Setup,
    assert_no_secrets,
    chatgpt_setup,
    read_auth_json,
    run_job,
    token_strings,
    wait_notification,
)


@pytest.fixture
def setup(daemon_env: dict[str, str]) -> Iterator[Setup]:
    with chatgpt_setup(daemon_env) as s:
        yield s


def play_browser(auth_url: str) -> httpx.Response:
    """What a browser does: open the URL, follow the issuer's redirect to the callback."""
    return httpx.get(auth_url, follow_redirects=True, timeout=30)


def test_browser_login_end_to_end(setup: Setup) -> None:
    rec = Recorder()
    with setup.daemon() as d, Client(d.socket) as c, Client(d.socket) as watcher:
        watcher.call("events/subscribe", {"topics": ["account"]})
        started = rec.add(c.call("account/login", {"method": "browser"}))
        assert set(started) == {"login_id", "auth_url"}
        url = urllib.parse.urlsplit(started["auth_url"])
        assert f"{url.scheme}://{url.netloc}" == setup.issuer.origin
        assert url.path == "/oauth/authorize"
        query = dict(urllib.parse.parse_qsl(url.query))
        assert query["client_id"] == "app_EMoamEEZ73f0CkXaXp7hrann"
        assert query["redirect_uri"] in (
            "http://localhost:1455/auth/callback",
            "http://localhost:1457/auth/callback",
        )
        assert query["code_challenge_method"] == "S256"
        assert query["originator"] == "codex_cli_rs"

        page = play_browser(started["auth_url"])
        assert page.status_code == 200
        assert "You are signed in" in page.text
        assert str(page.url).startswith(query["redirect_uri"])

        done = wait_notification(c, "account/login_completed", rec)
        assert done == {"login_id": started["login_id"], "success": True}
        # The topic carries the same completion, then who is logged in now.
        assert wait_notification(watcher, "account/login_completed", rec) == done
        updated = wait_notification(watcher, "account/updated", rec)
        assert updated == {"mode": "chatgpt", "email": "user@example.com", "plan_type": "plus"}

        account = rec.add(c.call("account/read"))
        assert account["mode"] == "chatgpt"
        assert account["email"] == "user@example.com"
        assert account["account_id"] == "acct_fake0001"
        assert account["source"] == "auth_file"

        saved = read_auth_json(setup.env)
        assert saved is not None
        assert list(saved) == ["auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh"]
        assert saved["auth_mode"] == "chatgpt"
        assert saved["OPENAI_API_KEY"].startswith("sk-fake-")  # the id_token → API key exchange
        assert saved["tokens"]["account_id"] == "acct_fake0001"
        path = os.path.join(setup.env["CODEX_HOME"], "auth.json")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        stats = setup.issuer.stats()
        assert (stats.code_exchanges, stats.token_exchanges) == (1, 1)

        # The login is in use at once: a job goes to the ChatGPT backend with its token.
        events = run_job(c, recorder=rec)
        assert events[-1]["type"] == "job.completed"
        req = setup.fake.model_requests("/backend-api/codex/responses")[-1]
        assert req.headers["authorization"] == f"Bearer {saved['tokens']['access_token']}"

        # The callback server is gone once the login is over.
        port = int(urllib.parse.urlsplit(query["redirect_uri"]).port or 0)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        log = d.stderr()
    assert_no_secrets(token_strings(saved), log, rec.text())


def test_callback_port_falls_back_to_1457(setup: Setup) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 1455))
        except OSError:
            pytest.skip("port 1455 is in use on this machine")
        taken.listen()
        with setup.daemon() as d, Client(d.socket) as c:
            started = c.call("account/login", {"method": "browser"})
            assert (
                "redirect_uri=http%3A%2F%2Flocalhost%3A1457%2Fauth%2Fcallback"
                in (started["auth_url"])
            )
            assert play_browser(started["auth_url"]).status_code == 200
            assert wait_notification(c, "account/login_completed")["success"] is True


def test_state_mismatch_is_refused_and_the_login_can_be_cancelled(setup: Setup) -> None:
    with setup.daemon() as d, Client(d.socket) as c:
        started = c.call("account/login", {"method": "browser"})
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(started["auth_url"]).query))
        forged = f"{query['redirect_uri']}?code=ac_forged&state=not-the-state"
        refused = httpx.get(forged, timeout=10)
        assert refused.status_code == 400
        assert "State mismatch" in refused.text
        assert setup.issuer.stats().code_exchanges == 0

        assert c.call("account/login/cancel", {"login_id": started["login_id"]}) == {
            "cancelled": True
        }
        done = wait_notification(c, "account/login_completed")
        assert done["login_id"] == started["login_id"]
        assert done["success"] is False
        assert "cancelled" in done["error"]
        # Over: cancelling again says so; an id never given out is not_found.
        assert c.call("account/login/cancel", {"login_id": started["login_id"]}) == {
            "cancelled": False
        }
        with pytest.raises(RpcError) as info:
            c.call("account/login/cancel", {"login_id": "login_nope"})
        assert info.value.kind == "not_found"
        assert read_auth_json(setup.env) is None
        # The port is free again for the next login.
        again = c.call("account/login", {"method": "browser"})
        assert play_browser(again["auth_url"]).status_code == 200
        assert wait_notification(c, "account/login_completed")["success"] is True


def test_denied_sign_in_ends_the_login_with_the_reason(setup: Setup) -> None:
    setup.issuer.deny_next_authorize("access_denied", "The user denied access.")
    with setup.daemon() as d, Client(d.socket) as c:
        started = c.call("account/login", {"method": "browser"})
        page = play_browser(started["auth_url"])
        assert "Sign-in failed" in page.text
        done = wait_notification(c, "account/login_completed")
        assert done == {
            "login_id": started["login_id"],
            "success": False,
            "error": "Sign-in failed: The user denied access.",
        }
        assert c.call("account/read")["mode"] is None


def test_device_login(setup: Setup) -> None:
    rec = Recorder()
    with setup.daemon() as d, Client(d.socket) as c:
        started = rec.add(c.call("account/login", {"method": "device"}))
        assert started["verification_url"] == setup.issuer.verification_url
        assert started["user_code"]
        assert "auth_url" not in started
        assert setup.issuer.approve_device(started["user_code"]) == started["user_code"]
        done = wait_notification(c, "account/login_completed", rec)
        assert done == {"login_id": started["login_id"], "success": True}
        assert rec.add(c.call("account/read"))["mode"] == "chatgpt"
        saved = read_auth_json(setup.env)
        assert saved is not None
        assert saved["auth_mode"] == "chatgpt"
        assert saved["OPENAI_API_KEY"] is None  # as Codex: no API-key exchange after a device login
        assert run_job(c, recorder=rec)[-1]["type"] == "job.completed"
        log = d.stderr()
    assert_no_secrets(token_strings(saved), log, rec.text())


def test_device_login_cancelled_while_polling(setup: Setup) -> None:
    with setup.daemon() as d, Client(d.socket) as c:
        started = c.call("account/login", {"method": "device"})
        setup.issuer.wait_for(lambda s: s.device_polls >= 1)
        assert c.call("account/login/cancel", {"login_id": started["login_id"]})["cancelled"]
        done = wait_notification(c, "account/login_completed")
        assert done["success"] is False
        with pytest.raises(LookupError):
            setup.issuer.approve_device("nope")
        assert read_auth_json(setup.env) is None


def test_api_key_login(setup: Setup) -> None:
    key = "sk-proj-test-login-key-1234567890"
    rec = Recorder()
    with setup.daemon() as d, Client(d.socket) as c:
        started = rec.add(c.call("account/login", {"method": "api_key", "api_key": key}))
        assert list(started) == ["login_id"]
        done = wait_notification(c, "account/login_completed", rec)
        assert done == {"login_id": started["login_id"], "success": True}
        assert read_auth_json(setup.env) == {"auth_mode": "apikey", "OPENAI_API_KEY": key}
        account = rec.add(c.call("account/read"))
        assert (account["mode"], account["source"]) == ("api_key", "auth_file")
        with pytest.raises(RpcError) as info:
            c.call("account/login", {"method": "api_key", "api_key": "two words"})
        assert info.value.kind == "invalid_params"
        assert "two words" not in info.value.message
        log = d.stderr()
    assert_no_secrets([key], log, rec.text())


def test_logout_revokes_upstream_then_deletes(setup: Setup) -> None:
    with setup.daemon() as d, Client(d.socket) as c, Client(d.socket) as watcher:
        started = c.call("account/login", {"method": "browser"})
        play_browser(started["auth_url"])
        assert wait_notification(c, "account/login_completed")["success"]
        saved = read_auth_json(setup.env)
        assert saved is not None
        refresh_token = saved["tokens"]["refresh_token"]
        watcher.call("events/subscribe", {"topics": ["account"]})

        assert c.call("account/logout") == {"revoked": True}
        assert setup.issuer.stats().revocations == 1
        assert setup.issuer.refresh_token_state(refresh_token) == "invalidated"
        assert read_auth_json(setup.env) is None
        assert wait_notification(watcher, "account/updated") == {
            "mode": None,
            "email": None,
            "plan_type": None,
        }
        with pytest.raises(RpcError) as info:
            c.call("job/submit", {"body": {"input": "hi"}})
        assert info.value.kind == "unauthenticated"


def test_forced_login_method_refuses_the_other_kind(daemon_env: dict[str, str]) -> None:
    with chatgpt_setup(daemon_env, extra_config="") as s:
        cfg = os.path.join(s.env["CODEX_HOME"], "config.toml")
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write('forced_login_method = "chatgpt"\n' + text)
        with s.daemon() as d, Client(d.socket) as c:
            with pytest.raises(RpcError) as info:
                c.call("account/login", {"method": "api_key", "api_key": "sk-x"})
            assert info.value.kind == "invalid_params"
            assert "forced_login_method" in info.value.message
