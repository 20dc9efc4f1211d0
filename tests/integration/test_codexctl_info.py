"""`codexctl models | limits | usage | config | events` against a real daemon and the fake."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from codexctl import commands_info
from codexctl.cli import main
from codexctl.fmt import ESTIMATE_NOTE
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, Reply
from tests.conftest import write_config
from tests.integration.test_codexctl_jobs import Screen, run_in_pty


def codexctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def config_text(env: dict[str, str]) -> str:
    return Path(env["CODEX_HOME"], "config.toml").read_text()


# --------------------------------------------------------------------------- models


def test_models_table_and_json(upstream_daemon: DaemonProcess) -> None:
    result = codexctl(upstream_daemon.env, "models")
    assert result.returncode == 0, result.stderr
    header, *rows, note = result.stdout.splitlines()
    assert header.split() == [
        "MODEL", "CONTEXT", "REASONING", "(*default)", "IN", "$/1M", "CACHED", "$/1M", "OUT",
        "$/1M", "AS", "OF", "SOURCE",
    ]  # fmt: skip
    # a price confirmed on the provider's page: the page and its date
    gpt51 = next(r for r in rows if r.startswith("gpt-5.1 "))
    assert gpt51.split() == [
        "gpt-5.1", "272,000", "none,low,medium*,high", "1.25", "0.125", "10", "2026-12-05",
        "https://developers.openai.com/api/docs/models/gpt-5.1",
    ]  # fmt: skip
    # no confirmed price: the default price, marked as an estimate, as `usage` marks it
    codex_max = next(r for r in rows if r.startswith("gpt-5.1-codex-max "))
    assert codex_max.split()[3:] == ["~1.25", "~0.125", "~10", "-", "default"]
    assert note == ESTIMATE_NOTE
    # the price columns line up on the right, before the source
    ends = {r.index(r.split()[5]) + len(r.split()[5]) for r in (gpt51, codex_max)}
    assert ends == {header.index("OUT $/1M") + len("OUT $/1M")}
    as_json = json.loads(codexctl(upstream_daemon.env, "models", "--json").stdout)
    assert {m["slug"] for m in as_json["models"]} >= {"gpt-5", "gpt-3.5-turbo"}
    by_slug = {m["slug"]: m for m in as_json["models"]}
    assert by_slug["gpt-5.1"]["price"]["as_of"] == "2026-12-05"
    assert by_slug["gpt-5.1-codex-max"]["price"] is None
    assert as_json["default_price"]["source"] == "default"
    bad = codexctl(upstream_daemon.env, "models", "--provider", "nope")
    assert bad.returncode == 1 and "unknown provider 'nope'" in bad.stderr


# --------------------------------------------------------------------------- limits


@pytest.fixture
def limited_daemon(upstream_env: dict[str, str]) -> Iterator[DaemonProcess]:
    write_config(
        upstream_env,
        config_text(upstream_env)
        + "[codexd.rate_limits.openai]\nrequests_per_minute = 100\nmax_concurrency = 2\n",
    )
    with DaemonProcess(upstream_env) as proc:
        yield proc


def test_limits_show_budget_and_chatgpt_windows(
    limited_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(
            headers=(
                ("x-codex-primary-used-percent", "25"),
                ("x-codex-primary-window-minutes", "300"),
                ("x-codex-primary-reset-after-seconds", "4330"),
                ("x-codex-secondary-used-percent", "50"),
                ("x-codex-secondary-window-minutes", "10080"),
                ("x-codex-secondary-reset-after-seconds", "432100"),
            )
        )
    )
    assert codexctl(limited_daemon.env, "ask", "hi").returncode == 0
    code, raw = run_in_pty(limited_daemon.env, "limits", "--provider", "openai", columns=120)
    assert code == 0, raw
    screen = Screen(120)
    screen.feed(raw)
    lines = [line for line in screen.lines() if line]
    assert lines[:7] == [
        "openai",
        "  codexd budget",
        "    requests   99 left of 100/min",
        "    tokens     not set (the upstream's window below applies)",
        "    in flight  0 of 2",
        "    queued     0",
        "    paused     no",
    ], lines
    assert lines[7] == "  upstream (as last seen)"
    up = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines[8:])
    # the fake's nominal 10,000 requests a minute, one used
    assert re.fullmatch(
        r"\[-{20}\] 9,999 of 10,000 left, resets in \d+s \(\d\d:\d\d:\d\d [+-]\d\d:\d\d\)",
        up["requests"],
    ), up
    assert re.fullmatch(
        r"\[#####-{15}\] 25% used, resets in 1h1[12]m \(\d\d:\d\d:\d\d [+-]\d\d:\d\d\)",
        up["5h window"],
    ), up
    assert re.fullmatch(
        r"\[#{10}-{10}\] 50% used, resets in 5d\S* "
        r"\(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d\)",
        up["7d window"],
    ), up

    every = codexctl(limited_daemon.env, "limits")
    headings = [line for line in every.stdout.splitlines() if line and not line[0].isspace()]
    assert headings == ["fake", "lmstudio", "ollama", "openai"]
    # one column for the values of every provider's block
    starts = {
        len(line) - len(re.split(r"\S\s{2,}", line.strip(), maxsplit=1)[1])
        for line in every.stdout.splitlines()
        if line.startswith("    ")
    }
    assert len(starts) == 1, every.stdout
    as_json = json.loads(codexctl(limited_daemon.env, "limits", "--json").stdout)
    (openai,) = [p for p in as_json["providers"] if p["provider"] == "openai"]
    assert openai["budget"]["requests_per_minute"] == 100


def test_limits_show_each_number_once(upstream_daemon: DaemonProcess) -> None:
    """Without a budget of its own, codexd follows the upstream's headers: the count left is
    the upstream's, shown once, not once more as a learned budget."""
    assert codexctl(upstream_daemon.env, "ask", "hi").returncode == 0
    result = codexctl(upstream_daemon.env, "limits", "--provider", "openai")
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"(?<![\d,])9,999\b", result.stdout)) == 1, result.stdout
    assert re.search(
        r"^    requests +not set \(the upstream's window below applies\)$", result.stdout, re.M
    )


def test_limit_rows_show_a_pause_and_shared_backend() -> None:
    now = 1_800_000_000.0
    entry = {
        "provider": "openai",
        "budget": {
            "requests_per_minute": None,
            "tokens_per_minute": 1000,
            "max_concurrency": 4,
            "available_requests": None,
            "available_tokens": 250,
            "in_flight": 3,
            "queued": 7,
            "paused_until": "2027-01-15T08:01:30Z",
        },
        "upstream": {},
        "backend": {"kind": "redis", "url": "redis://127.0.0.1:6379/0", "connected": False},
    }
    (title, budget), *rest = commands_info.limit_sections(entry, now)
    assert title == "codexd budget" and rest == []  # nothing seen upstream: no section
    rows = dict(budget)
    assert rows["requests"] == "not set"
    assert rows["tokens"] == "250 left of 1,000/min"
    assert rows["in flight"] == "3 of 4"
    assert rows["queued"] == "7"
    assert rows["paused"].endswith("(in 1m30s)")
    assert rows["shared"] == "redis redis://127.0.0.1:6379/0: unreachable, using the local budget"


# --------------------------------------------------------------------------- usage


def wait_for_usage(env: dict[str, str], requests: int) -> dict[str, object]:
    """The ledger commits in the background: read until the rows are there (bounded)."""
    deadline = time.monotonic() + 20
    while True:
        result = codexctl(env, "usage", "--json")
        assert result.returncode == 0, result.stderr
        usage = json.loads(result.stdout)
        if usage["total"]["requests"] >= requests or time.monotonic() > deadline:
            return usage  # type: ignore[no-any-return]


def test_usage_after_jobs(upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI) -> None:
    env = upstream_daemon.env
    assert codexctl(env, "usage").stdout == "no usage recorded in this period\n"
    for model in ("gpt-5.1", "gpt-5-nano"):  # priced in the catalog: no estimate below
        assert codexctl(env, "ask", "hello there", "--model", model).returncode == 0
    usage = wait_for_usage(env, 2)
    total = usage["total"]
    assert isinstance(total, dict)
    reported = [r.usage for r in fake_openai.model_requests() if r.usage is not None]
    assert total["requests"] == 2
    assert total["output_tokens"] == sum(u.output_tokens for u in reported)

    table = codexctl(env, "usage")
    assert table.returncode == 0
    header, *rows, footer = table.stdout.splitlines()
    assert header.split() == [
        "MODEL",
        "REQUESTS",
        "INPUT",
        "CACHED",
        "OUTPUT",
        "REASONING",
        "COST",
    ]
    assert sorted(r.split()[0] for r in rows) == ["gpt-5-nano", "gpt-5.1"]
    assert footer.split()[:2] == ["total", "2"]
    assert {len(line) for line in (header, *rows, footer)} == {len(header)}

    by_day = codexctl(env, "usage", "--by", "day")
    day_rows = by_day.stdout.splitlines()[1:-1]
    assert len(day_rows) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d +2 .*\[#{20}\]", day_rows[0])

    by_client = codexctl(env, "usage", "--by", "client", "--csv")
    assert by_client.stdout.splitlines()[0] == (
        "client,requests,input_tokens,cached_input_tokens,output_tokens,reasoning_tokens,"
        "cost_usd,estimated"
    )
    assert by_client.stdout.splitlines()[1].startswith("codexctl,2,")

    future = codexctl(env, "usage", "--since", "2999-01-01")
    assert future.stdout == "no usage recorded in this period\n"
    bad = codexctl(env, "usage", "--since", "yesterday-ish")
    assert bad.returncode == 1 and "since" in bad.stderr


def test_usage_shows_spend_against_the_budget_caps(upstream_env: dict[str, str]) -> None:
    write_config(
        upstream_env,
        config_text(upstream_env) + "[codexd.budget]\ndaily_usd = 5.0\nmonthly_usd = 100.0\n",
    )
    with DaemonProcess(upstream_env) as d:
        assert codexctl(d.env, "ask", "hi").returncode == 0
        usage = wait_for_usage(d.env, 1)
        cost = usage["total"]["cost_usd"]  # type: ignore[index]
        table = codexctl(d.env, "usage")
    from codexctl.fmt import format_usd

    spent = format_usd(cost)
    assert table.stdout.splitlines()[-1] == (
        f"budget  today {spent} of $5.00 · this month {spent} of $100.00"
    )


def test_money_is_plain_decimals_for_people_and_scripts(upstream_env: dict[str, str]) -> None:
    # 1 input and 8 output tokens at these prices cost $0.000000026 (2.6e-08)
    write_config(
        upstream_env,
        config_text(upstream_env)
        + '[codexd.prices."gpt-5"]\ninput = 0.01\ncached_input = 0.001\noutput = 0.002\n',
    )
    with DaemonProcess(upstream_env) as d:
        code, raw = run_in_pty(d.env, "ask", "hi")
        assert code == 0, raw
        assert raw.splitlines()[-1].strip() == "gpt-5 · 1 in / 8 out tokens · $0.000000026"
        wait_for_usage(d.env, 1)
        as_json = codexctl(d.env, "usage", "--json").stdout
        as_csv = codexctl(d.env, "usage", "--csv").stdout
        jobs_json = codexctl(d.env, "jobs", "--json").stdout
        code, table = run_in_pty(d.env, "usage")
    assert code == 0, table
    assert '"cost_usd": 0.000000026' in as_json and "e-" not in as_json
    assert json.loads(as_json)["total"]["cost_usd"] == pytest.approx(2.6e-08)
    assert '"cost_usd": 0.000000026' in jobs_json and "e-" not in jobs_json
    assert as_csv.splitlines()[1].split(",")[6] == "0.000000026"
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert total.split()[-1] == "$0.000000026"


def test_money_format_keeps_two_significant_digits() -> None:
    from codexctl.fmt import format_usd, plain_number

    assert format_usd(8.125e-05) == "$0.000081"
    assert format_usd(0.0421) == "$0.0421"
    assert format_usd(0.0) == "$0.00"
    assert format_usd(1234.5, estimated=True) == "~$1,234.50"
    assert plain_number(5e-08) == "0.00000005"
    assert plain_number(1e22) == "10000000000000000000000"
    assert [commands_info.format_price(p) for p in (1.25, 10, 10.0, 5e-05, None)] == [
        "1.25",
        "10",
        "10",
        "0.00005",
        "-",
    ]


def test_an_upstream_window_without_a_remaining_count_is_not_drawn_as_spent() -> None:
    entry = {"budget": {}, "upstream": {"requests": {"limit": 500, "resets_at": None}}}
    sections = dict(commands_info.limit_sections(entry, 1_800_000_000.0))
    rows = dict(sections["upstream (as last seen)"])
    assert rows["requests"] == f"{commands_info.bar(0)} ? of 500 left"


def test_usage_table_bars_scale_by_cost() -> None:
    out = io.StringIO()
    rows = [
        {"day": "2026-11-01", "requests": 1, "cost_usd": 1.0},
        {"day": "2026-11-02", "requests": 4, "cost_usd": 4.0, "estimated": True},
    ]
    commands_info.write_usage_table(out, "day", rows, {"requests": 5, "cost_usd": 5.0})
    lines = out.getvalue().splitlines()
    assert lines[1].endswith("$1.00  [#####---------------]")
    assert lines[2].endswith("~$4.00  [####################]")
    assert lines[3].split()[:2] == ["total", "5"]
    assert lines[4].startswith("~ estimated")


# --------------------------------------------------------------------------- config


def test_config_show_is_redacted(upstream_env: dict[str, str]) -> None:
    write_config(
        upstream_env,
        config_text(upstream_env)
        + 'http_headers = { Authorization = "Bearer sk-secret-header-value-123" }\n',
    )
    with DaemonProcess(upstream_env) as d:
        shown = codexctl(d.env, "config", "show")
        as_json = codexctl(d.env, "config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"# {Path(d.env['CODEX_HOME'], 'config.toml')} (generation 1")
    assert 'model = "gpt-5"\n' in shown.stdout
    assert "\n[model_providers.fake]\n" in shown.stdout
    for out in (shown.stdout, as_json.stdout):
        assert "sk-secret-header-value-123" not in out
        assert d.env["OPENAI_API_KEY"] not in out
    assert json.loads(as_json.stdout)["generation"] == 1


def test_config_check_needs_no_daemon(daemon_env: dict[str, str], tmp_path: Path) -> None:
    good = tmp_path / "good" / "config.toml"
    good.parent.mkdir()
    good.write_text('model = "gpt-5"\n[profiles.fast]\nmodel = "gpt-5-mini"\n')
    ok = codexctl(daemon_env, "config", "check", str(good))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{good}: ok\n"

    bad = tmp_path / "bad" / "config.toml"
    bad.parent.mkdir()
    bad.write_text('model = "gpt-5"\n\n[model_providers.x]\nrequest_max_retries = "x"\n')
    failed = codexctl(daemon_env, "config", "check", str(bad))
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith(
        "codexctl: config.toml:4: model_providers.x.request_max_retries"
    )
    assert failed.stderr.count("\n") == 1
    as_json = json.loads(codexctl(daemon_env, "config", "check", str(bad), "--json").stdout)
    assert as_json["ok"] is False and "request_max_retries" in as_json["error"]

    missing = codexctl(daemon_env, "config", "check", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1 and "no such file" in missing.stderr

    write_config(daemon_env, "model = 5\n")  # $CODEX_HOME/config.toml, the default
    default = codexctl(daemon_env, "config", "check")
    assert default.returncode == 1
    assert default.stderr.startswith("codexctl: config.toml:1: model: ")


def test_config_show_can_be_copied_into_a_config_file(
    upstream_daemon: DaemonProcess, tmp_path: Path
) -> None:
    shown = codexctl(upstream_daemon.env, "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "\n[model_providers.fake]\n" in shown.stdout
    copy = tmp_path / "config.toml"
    copy.write_text(shown.stdout)
    checked = codexctl(upstream_daemon.env, "config", "check", str(copy))
    assert (checked.returncode, checked.stderr) == (0, "")


def test_config_check_warns_about_unknown_keys(daemon_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'approval_policy = "never"\nopenai_base_ur = "http://127.0.0.1:9/v1"\nzzz = 1\n'
        '[model_providers.x]\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    checked = codexctl(daemon_env, "config", "check", str(path))
    assert checked.returncode == 0
    assert checked.stdout == f"{path}: ok\n"
    assert checked.stderr.splitlines() == [
        "codexctl: warning: config.toml:2: openai_base_ur: not a key Codex or codexd knows, "
        "so both ignore it: did you mean openai_base_url?",
        "codexctl: warning: config.toml:3: zzz: not a key Codex or codexd knows, so both ignore it",
    ]
    as_json = json.loads(codexctl(daemon_env, "config", "check", str(path), "--json").stdout)
    assert as_json["ok"] is True
    assert [w.split(":")[2].strip() for w in as_json["warnings"]] == ["openai_base_ur", "zzz"]


def test_config_check_without_codexd_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands_info, "find_codexd", lambda: None)
    out, err = io.StringIO(), io.StringIO()
    assert main(["config", "check", "/tmp/x.toml"], out, err) == 3
    assert "codexd is not installed" in err.getvalue()
    assert err.getvalue().count("\n") == 1


def test_config_reload_reports_generation_and_errors(upstream_daemon: DaemonProcess) -> None:
    env = upstream_daemon.env
    same = codexctl(env, "config", "reload")
    assert same.stdout == "config unchanged: generation 1\n"
    # Every reload sends RELOADING=1/READY=1 to the harness's notify socket: read them, or a
    # full datagram queue blocks the daemon's sd_notify.
    upstream_daemon.wait_for_all()
    write_config(env, config_text(env).replace('model = "gpt-5"', 'model = "gpt-5-mini"'))
    changed = codexctl(env, "config", "reload")
    upstream_daemon.wait_for_all()
    assert changed.returncode == 0
    # the file watcher may have reloaded it first; either way it is generation 2 now
    assert re.fullmatch(r"config (reloaded|unchanged): generation 2\n", changed.stdout)
    write_config(env, config_text(env) + "[codexd]\nno_such_key = 1\n")
    broken = codexctl(env, "config", "reload")
    assert broken.returncode == 1
    assert broken.stderr.startswith("codexctl: config.toml:")
    assert "codexd.no_such_key" in broken.stderr
    assert broken.stderr.count("\n") == 1
    shown = codexctl(env, "config", "show")
    assert "# last reload failed: config.toml:" in shown.stdout
    assert 'model = "gpt-5-mini"' in shown.stdout  # the valid one stays in force


# --------------------------------------------------------------------------- events


class Lines:
    """Lines from a pipe, read without blocking past a deadline."""

    def __init__(self, stream: object) -> None:
        self.fd = stream.fileno()  # type: ignore[attr-defined]
        self.buf = b""
        self.seen: list[str] = []

    def wait_for(self, match: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode()
                self.seen.append(line)
                if match(line):
                    return line
            left = deadline - time.monotonic()
            assert left > 0, f"no matching line; saw {self.seen}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                assert chunk, f"the stream ended; saw {self.seen}"
                self.buf += chunk


@pytest.mark.parametrize("as_json", [False, True])
def test_events_follow_config_changes(upstream_daemon: DaemonProcess, as_json: bool) -> None:
    env = upstream_daemon.env
    args = ["events", "config"] + (["--json"] if as_json else [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        Lines(proc.stderr).wait_for(lambda line: "following config" in line)
        out = Lines(proc.stdout)
        good = config_text(env).replace('model = "gpt-5"', 'model = "gpt-5-mini"')
        write_config(env, good)
        line = out.wait_for(lambda line: "config/reloaded" in line or "config reloaded" in line)
        if as_json:
            note = json.loads(line)
            assert note["method"] == "config/reloaded"
            assert note["params"]["generation"] == 2
        else:
            assert re.fullmatch(
                r"\d\d:\d\d:\d\d [+-]\d\d:\d\d  config reloaded  generation 2 from .*", line
            )
        write_config(env, "model = 5\n")
        invalid = out.wait_for(lambda line: "config/invalid" in line or "config invalid" in line)
        assert "config.toml:1: model" in invalid
        if not as_json:  # the same invalid state again after a good one is shown again
            write_config(env, good)
            out.wait_for(lambda line: "config reloaded" in line)
            write_config(env, "model = 5\n")
            again = out.wait_for(lambda line: "config invalid" in line)
            assert again.endswith(invalid.split("  ", 1)[1])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_events_on_a_terminal_one_human_line_per_change(
    limited_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    """Every notification in words (no JSON, no wire values), and a state that did not
    change (the limiter republishes when only the upstream headers moved) is not shown again."""
    env = limited_daemon.env
    reply = Reply(headers=(("x-codex-primary-used-percent", "25"),))
    fake_openai.script(reply, reply)
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexctl", "events"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    try:
        with os.fdopen(os.dup(master), "rb", buffering=0) as terminal:
            screen = Lines(terminal)
            screen.wait_for(lambda line: "following" in line)
            for _ in range(2):
                assert codexctl(env, "ask", "hi").returncode == 0
            write_config(env, config_text(env).replace('model = "gpt-5"', 'model = "gpt-5-mini"'))
            screen.wait_for(lambda line: "config reloaded" in line)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    stamp = r"^\d\d:\d\d:\d\d [+-]\d\d:\d\d  "
    assert all(re.match(stamp, line) for line in screen.seen[1:]), screen.seen
    lines = [re.sub(stamp, "", line.rstrip("\r")) for line in screen.seen[1:]]
    assert all(not line.startswith(("{", "[")) and "/" not in line.split("  ")[0] for line in lines)
    assert [a for a, b in itertools.pairwise(lines) if a == b] == []
    limits = [line for line in lines if line.startswith("limits ")]
    assert limits[:2] == [
        "limits           openai: 1 in flight, 0 queued",
        "limits           openai: 0 in flight, 0 queued",
    ], lines
    finished = [line for line in lines if line.startswith("job finished")]
    assert len(finished) == 2
    assert re.fullmatch(r"job finished     job_\w+ completed codexctl gpt-5 \$0\.\d+", finished[0])


def test_events_rejects_an_unknown_topic(upstream_daemon: DaemonProcess) -> None:
    result = codexctl(upstream_daemon.env, "events", "weather")
    assert result.returncode == 2
    assert "unknown topic 'weather'" in result.stderr


def test_every_command_imports_nothing_heavy(upstream_daemon: DaemonProcess) -> None:
    code = (
        "import sys\n"
        "from codexctl.cli import main\n"
        "rcs = [main(a.split()) for a in sys.argv[1:]]\n"
        "heavy = [m for m in ('httpx', 'anyio', 'keyring', 'httpcore', 'watchfiles') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy, rcs)\n"
    )
    commands = ["ask hi", "jobs", "models", "limits", "usage", "config show", "config reload"]
    out = subprocess.run(
        [sys.executable, "-c", code, *commands],
        capture_output=True,
        text=True,
        env=upstream_daemon.env,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert f"HEAVY [] {[0] * len(commands)}" in out.stdout
