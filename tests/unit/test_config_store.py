"""ConfigStore: swap only when valid, generations, notifications; redaction for config/read."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codexctl.results import ConfigRejected, ConfigReloaded
from codexd.config.load import load_config
from codexd.config.redact import REDACTED, redact
from codexd.config.store import (
    RESTART_KEYS,
    ConfigStore,
    rfc3339,
)

T0 = datetime(2026, 11, 25, 9, 0, 0, 123000, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def open_store(home: Path) -> tuple[ConfigStore, Clock, list[object]]:
    clock = Clock()
    store = ConfigStore.open(str(home), {}, now=clock)
    events: list[object] = []
    store.subscribe(events.append)
    return store, clock, events


def test_rfc3339() -> None:
    assert rfc3339(T0) == "2026-11-25T09:00:00.123Z"


def test_starts_at_generation_one(tmp_path: Path) -> None:
    store, _, _ = open_store(tmp_path)
    status = store.status()
    assert (status.generation, status.error) == (1, None)
    assert status.loaded_at == "2026-11-25T09:00:00.123Z"
    assert status.path == str(tmp_path / "config.toml")


def test_a_valid_change_swaps_and_notifies(tmp_path: Path) -> None:
    store, clock, events = open_store(tmp_path)
    before = store.snapshot
    clock.now = T0 + timedelta(seconds=5)
    (tmp_path / "config.toml").write_text('model = "gpt-5"\n')
    outcome = store.reload()
    assert (outcome.generation, outcome.changed, outcome.error) == (2, True, None)
    assert store.snapshot.model == "gpt-5"
    assert before.model is None  # a job holding the old snapshot keeps it
    assert store.loaded_at == "2026-11-25T09:00:05.123Z"
    assert events == [ConfigReloaded(generation=2, path=str(tmp_path / "config.toml"))]


def test_an_unchanged_file_does_not_bump_the_generation(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "gpt-5"\n')
    store, _, events = open_store(tmp_path)
    (tmp_path / "config.toml").write_text('# same thing\nmodel = "gpt-5"\n')
    outcome = store.reload()
    assert (outcome.generation, outcome.changed) == (1, False)
    assert events == []


def test_an_invalid_edit_keeps_the_old_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "config.toml").write_text('model = "gpt-5"\n')
    store, _, events = open_store(tmp_path)
    old = store.snapshot
    (tmp_path / "config.toml").write_text('model = "gpt-5.2"\n[codexd]\nmax_connections = 0\n')
    with caplog.at_level(logging.WARNING, logger="codexd.config"):
        first = store.reload()
        second = store.reload()
    message = "config.toml:3: codexd.max_connections: expected an integer ≥ 1, got 0"
    assert first.error is not None and first.error.message == message
    assert (first.generation, first.changed) == (1, False)
    assert second.error == first.error
    assert store.snapshot is old
    assert store.status().error == message
    assert events == [ConfigRejected(path=str(tmp_path / "config.toml"), error=message)] * 2
    # Logged once per distinct error, not once per attempt.
    assert [r.getMessage() for r in caplog.records].count(
        f"config invalid, keeping generation 1: {message}"
    ) == 1


def test_fixing_the_file_clears_the_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "gpt-5"\n')
    store, _, events = open_store(tmp_path)
    (tmp_path / "config.toml").write_text("model = \n")
    assert store.reload().error is not None
    # Reverted to exactly the config in force: no new generation, but the error is gone and
    # subscribers hear that the config is good again.
    (tmp_path / "config.toml").write_text('model = "gpt-5"\n')
    outcome = store.reload()
    assert (outcome.generation, outcome.changed, outcome.error) == (1, False, None)
    assert store.error is None
    assert isinstance(events[-1], ConfigReloaded)


def test_open_raises_on_an_invalid_file(tmp_path: Path) -> None:
    from codexd.config.load import ConfigError

    (tmp_path / "config.toml").write_text("[codexd]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"^config.toml:2: codexd.bogus: unknown key"):
        ConfigStore.open(str(tmp_path), {})


def test_unsubscribe(tmp_path: Path) -> None:
    store = ConfigStore.open(str(tmp_path), {})
    seen: list[object] = []
    stop = store.subscribe(seen.append)
    stop()
    (tmp_path / "config.toml").write_text('model = "x"\n')
    store.reload()
    assert seen == []


# --------------------------------------------------------------------------- redaction


def test_redact_hides_secrets_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        """
model = "gpt-5"

[model_providers.az]
base_url = "https://x.example.com/v1"
experimental_bearer_token = "tok-123"
query_params = { api-version = "2025-04-01", api-key = "abc" }
env_http_headers = { "X-Proxy-Token" = "PROXY_TOKEN" }

[model_providers.az.http_headers]
X-Team = "platform"
Authorization = "Bearer abc"
X-Custom = "sk-proj-1234"

[codexd.rate_limits.az]
backend = "redis://:hunter2@127.0.0.1:6379/0"
"""
    )
    store = ConfigStore.open(str(tmp_path), {"OPENAI_API_KEY": "sk-live-should-never-appear"})
    effective = redact(store.snapshot)
    text = json.dumps(effective)
    for secret in ("tok-123", "Bearer abc", "sk-proj-1234", "hunter2", 'abc"', "sk-live"):
        assert secret not in text
    az = effective["providers"]["az"]
    assert az["experimental_bearer_token"] == REDACTED
    assert az["http_headers"] == {
        "X-Team": "platform",
        "Authorization": REDACTED,
        "X-Custom": REDACTED,
    }
    assert az["query_params"] == {"api-version": "2025-04-01", "api-key": REDACTED}
    assert az["env_http_headers"] == {"X-Proxy-Token": "PROXY_TOKEN"}
    assert effective["codexd"]["rate_limits"]["az"]["backend"] == (
        f"redis://{REDACTED}@127.0.0.1:6379/0"
    )
    assert effective["model"] == "gpt-5"
    # Unset limits are null, not missing.
    assert effective["codexd"]["budget"] == {"daily_usd": None, "monthly_usd": None}
    assert effective["codexd"]["rate_limits"]["az"]["requests_per_minute"] is None


def test_a_key_that_needs_a_restart_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, _, _ = open_store(tmp_path)
    (tmp_path / "config.toml").write_text('model = "gpt-5"\n')
    store.reload()
    assert store.restart_pending == []  # `model` applies on reload
    (tmp_path / "config.toml").write_text(
        'model = "gpt-5"\ncli_auth_credentials_store = "keyring"\n'
        '[codexd.rate_limits.openai]\nbackend = "redis://127.0.0.1:6379/0"\n'
    )
    with caplog.at_level(logging.WARNING, logger="codexd.config"):
        store.reload()
        (tmp_path / "config.toml").write_text(
            'model = "gpt-5.2"\ncli_auth_credentials_store = "keyring"\n'
            '[codexd.rate_limits.openai]\nbackend = "redis://127.0.0.1:6379/0"\n'
        )
        store.reload()
    pending = ["cli_auth_credentials_store", "codexd.rate_limits.openai.backend"]
    assert store.restart_pending == pending
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "config: cli_auth_credentials_store, codexd.rate_limits.openai.backend changed since "
        "start-up and applies only after a restart of codexd"
    ]
    (tmp_path / "config.toml").write_text('model = "gpt-5.2"\n')
    store.reload()
    assert store.restart_pending == []  # back to what codexd started with


def test_every_restart_key_names_a_key_of_the_file(tmp_path: Path) -> None:
    """A renamed key would silently drop out of the list (and out of the doc's restart marks)."""
    (tmp_path / "config.toml").write_text("[codexd.rate_limits.openai]\n")
    snapshot = load_config(str(tmp_path), {})
    for key in RESTART_KEYS:
        node: Any = snapshot
        for part in key.split("."):
            if part == "*":
                node = next(iter(node.values()))
            else:
                assert part in type(node).__struct_fields__, key
                node = getattr(node, part)
        assert not isinstance(node, msgspec.Struct | dict), f"{key} is a table, not a key"
