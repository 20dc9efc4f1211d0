"""`daemon/status` shows spend against the `[codexd.budget]` caps (issue F6 item 3)."""

from __future__ import annotations

from codexctl import Client
from codexd.testing.daemon_process import DaemonProcess
from tests.conftest import write_config


def test_status_shows_spend_against_the_caps(upstream_env: dict[str, str]) -> None:
    with open(upstream_env["CODEX_HOME"] + "/config.toml", "a") as f:
        f.write("\n[codexd.budget]\ndaily_usd = 5.0\nmonthly_usd = 50.0\n")
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        budget = c.call("daemon/status")["budget"]
        assert budget["daily_usd"] == 5.0
        assert budget["monthly_usd"] == 50.0
        assert budget["spent_today_usd"] == 0.0
        assert budget["day_resets_at"].endswith("Z")
        c.call("job/submit", {"body": {"input": "hi"}})
        while True:
            n = c.next_notification(timeout=30)
            assert n is not None
            if n.method == "job/event" and n.params["event"]["type"] == "job.completed":
                cost = n.params["event"]["cost_usd"]
                break
        c.call("usage/read")  # waits for the ledger to hold the finished job
        spent = c.call("daemon/status")["budget"]["spent_today_usd"]
        assert abs(spent - cost) < 1e-9


def test_status_budget_is_null_without_caps(upstream_env: dict[str, str]) -> None:
    write_config(upstream_env, "")
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        assert c.call("daemon/status")["budget"] is None
