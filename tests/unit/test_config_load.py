"""config.toml / codexd.toml → one snapshot, or one located error."""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexctl.protocol import ErrorKind
from codexd.config.load import ConfigError, is_loopback, load_config, load_file, locate
from codexd.config.schema import OPENAI_API_BASE_URL

NO_ENV: dict[str, str] = {}


def write(home: Path, text: str, name: str = "config.toml") -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error_of(home: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(str(home), NO_ENV)
    return info.value


# --------------------------------------------------------------------------- defaults


def test_missing_home_means_all_defaults(tmp_path: Path) -> None:
    snap = load_config(str(tmp_path / "nowhere"), NO_ENV)
    assert snap.model is None
    assert snap.model_provider == "openai"
    assert snap.profile is None
    assert snap.cli_auth_credentials_store == "file"
    assert snap.forced_login_method is None
    assert snap.chatgpt_base_url == "https://chatgpt.com/backend-api/"
    assert sorted(snap.providers) == ["lmstudio", "ollama", "openai"]
    openai = snap.providers["openai"]
    assert openai.base_url == OPENAI_API_BASE_URL
    assert (openai.request_max_retries, openai.stream_max_retries) == (4, 5)
    assert openai.stream_idle_timeout_ms == 300_000
    assert openai.wire_api == "responses"
    assert openai.requires_openai_auth is True
    assert snap.providers["ollama"].base_url == "http://localhost:11434/v1"
    assert snap.providers["lmstudio"].base_url == "http://localhost:1234/v1"
    c = snap.codexd
    assert (c.log_level, c.max_message_bytes, c.max_connections) == ("info", 1_048_576, 256)
    assert (c.max_queued_jobs, c.job_retention_s, c.drain_timeout_s) == (1000, 900, 30)
    assert (c.max_retry_wait_s, c.max_job_log_events) == (120, 100_000)
    assert c.auth_issuer == "https://auth.openai.com"
    assert c.usage_retention_days == 400
    assert c.connection_idle_timeout_s == 600
    assert c.rate_limits == {} and c.prices == {}
    assert (c.budget.daily_usd, c.budget.monthly_usd) == (None, None)
    assert (c.gateway.enabled, c.gateway.tcp) == (False, None)
    assert (c.gateway.head_timeout_s, c.gateway.idle_timeout_s) == (10, 120)
    assert c.gateway.max_unauthenticated_connections == 128
    limits = snap.rate_limit("openai")
    assert (limits.requests_per_minute, limits.tokens_per_minute) == (None, None)
    assert (limits.max_concurrency, limits.default_output_tokens) == (64, 4096)


def test_empty_file_equals_missing_file(tmp_path: Path) -> None:
    missing = load_config(str(tmp_path), NO_ENV)
    write(tmp_path, "# nothing yet\n")
    assert load_config(str(tmp_path), NO_ENV) == missing


def test_openai_base_url_and_oss_env(tmp_path: Path) -> None:
    write(tmp_path, 'openai_base_url = "http://127.0.0.1:9999/v1"\n')
    snap = load_config(str(tmp_path), {"CODEX_OSS_PORT": "4242"})
    assert snap.providers["openai"].base_url == "http://127.0.0.1:9999/v1"
    assert snap.route("openai", chatgpt_auth=True).base_url == "http://127.0.0.1:9999/v1"
    assert snap.providers["ollama"].base_url == "http://localhost:4242/v1"


def test_chatgpt_login_goes_to_the_codex_backend(tmp_path: Path) -> None:
    snap = load_config(str(tmp_path), NO_ENV)
    assert (
        snap.route("openai", chatgpt_auth=True).base_url == "https://chatgpt.com/backend-api/codex"
    )
    assert snap.route("openai", chatgpt_auth=False).base_url == "https://api.openai.com/v1"


# --------------------------------------------------------------------------- a real Codex file

REAL_CODEX_CONFIG = """
# ~/.codex/config.toml of a Codex CLI user
model = "gpt-5.1-codex-max"
model_reasoning_effort = "high"
model_reasoning_summary = "detailed"
model_verbosity = "low"
approval_policy = "on-request"
sandbox_mode = "workspace-write"
preferred_auth_method = "chatgpt"
file_opener = "vscode"
hide_agent_reasoning = false
show_raw_agent_reasoning = true
disable_response_storage = true
notify = ["python3", "/home/me/.codex/notify.py"]
model_max_output_tokens = 32000
project_doc_max_bytes = 65536
cli_auth_credentials_store = "keyring"
forced_login_method = "chatgpt"
oss_provider = "ollama"

[sandbox_workspace_write]
network_access = true
writable_roots = ["/tmp"]

[shell_environment_policy]
inherit = "core"
exclude = ["AWS_*", "AZURE_*"]
set = { CI = "1" }

[history]
persistence = "save-all"
max_bytes = 10485760

[tui]
notifications = ["agent-turn-complete", "approval-requested"]
animations = false

[features]
web_search_request = true
unified_exec = false

[otel]
environment = "dev"
log_user_prompt = false

[otel.exporter.otlp-http]
endpoint = "https://otel.example.com/v1/logs"
protocol = "binary"
headers = { "x-otlp-api-key" = "secret" }

[mcp_servers.docs]
command = "npx"
args = ["-y", "@example/docs-mcp"]
env = { "API_KEY" = "value" }
startup_timeout_sec = 20

[mcp_servers.figma]
url = "https://mcp.figma.com/mcp"
bearer_token_env_var = "FIGMA_TOKEN"

[projects."/home/me/src/app"]
trust_level = "trusted"

[projects."/home/me/src/other"]
trust_level = "untrusted"

[profiles.deep]
model = "gpt-5.2"
model_reasoning_effort = "xhigh"
approval_policy = "never"

[profiles.local]
model = "gpt-oss:20b"
model_provider = "ollama"
sandbox_mode = "read-only"

[model_providers.azure]
name = "Azure"
base_url = "https://my-resource.openai.azure.com/openai"
env_key = "AZURE_OPENAI_API_KEY"
wire_api = "responses"
query_params = { api-version = "2025-04-01-preview" }
request_max_retries = 8
stream_idle_timeout_ms = 600000
websocket_connect_timeout_ms = 20000
supports_websockets = false

[model_providers.proxy]
name = "Corporate proxy"
base_url = "https://llm.example.com/v1"
requires_openai_auth = true
http_headers = { "X-Team" = "platform" }
env_http_headers = { "X-Proxy-Token" = "PROXY_TOKEN" }
"""


def test_a_real_codex_config_with_many_unrelated_keys_loads(tmp_path: Path) -> None:
    write(tmp_path, REAL_CODEX_CONFIG)
    snap = load_config(str(tmp_path), NO_ENV)
    assert snap.model == "gpt-5.1-codex-max"
    assert snap.model_reasoning_effort == "high"
    assert snap.model_reasoning_summary == "detailed"
    assert snap.cli_auth_credentials_store == "keyring"
    assert snap.forced_login_method == "chatgpt"
    azure = snap.providers["azure"]
    assert azure.name == "Azure"
    assert azure.request_max_retries == 8
    assert azure.stream_max_retries == 5
    assert azure.stream_idle_timeout_ms == 600_000
    assert azure.query_params == {"api-version": "2025-04-01-preview"}
    proxy = snap.providers["proxy"]
    assert proxy.requires_openai_auth is True
    assert proxy.env_http_headers == {"X-Proxy-Token": "PROXY_TOKEN"}
    assert snap.route("proxy", chatgpt_auth=True).base_url == "https://llm.example.com/v1"


def test_a_custom_provider_without_a_name_is_named_after_its_id(tmp_path: Path) -> None:
    write(tmp_path, '[model_providers.mine]\nbase_url = "http://127.0.0.1:1/v1"\n')
    assert load_config(str(tmp_path), NO_ENV).providers["mine"].name == "mine"


# --------------------------------------------------------------------------- profiles


def test_profile_picks_model_and_provider(tmp_path: Path) -> None:
    write(tmp_path, 'profile = "local"\n' + REAL_CODEX_CONFIG)
    snap = load_config(str(tmp_path), NO_ENV)
    assert snap.profile == "local"
    assert snap.model == "gpt-oss:20b"
    assert snap.model_provider == "ollama"
    assert snap.provider.base_url == "http://localhost:11434/v1"
    # The profile overrides only what it sets.
    assert snap.model_reasoning_effort == "high"


def test_a_request_may_name_another_profile(tmp_path: Path) -> None:
    write(tmp_path, 'profile = "local"\n' + REAL_CODEX_CONFIG)
    snap = load_config(str(tmp_path), NO_ENV)
    deep = snap.selection("deep")
    assert (deep.model, deep.model_provider, deep.model_reasoning_effort) == (
        "gpt-5.2",
        "openai",
        "xhigh",
    )
    assert snap.selection().model == "gpt-oss:20b"
    with pytest.raises(KeyError):
        snap.selection("nope")


def test_an_undefined_profile_is_located(tmp_path: Path) -> None:
    write(tmp_path, 'model = "x"\nprofile = "fast"\n')
    err = error_of(tmp_path)
    assert err.message.startswith('config.toml:2: profile: profile "fast" is not defined')


def test_an_unknown_provider_is_located_where_it_was_chosen(tmp_path: Path) -> None:
    write(tmp_path, 'profile = "p"\n\n[profiles.p]\nmodel_provider = "azur"\n')
    err = error_of(tmp_path)
    assert err.line == 4
    assert err.key == "profiles.p.model_provider"
    assert 'unknown provider "azur"' in err.message


# --------------------------------------------------------------------------- located errors


def test_bad_toml_syntax_reports_tomllibs_line(tmp_path: Path) -> None:
    write(tmp_path, 'model = "gpt-5"\n\n[model_providers.azure\nname = "x"\n')
    err = error_of(tmp_path)
    assert err.line == 3
    assert err.key is None
    assert err.message.startswith("config.toml:3: invalid TOML: ")
    assert err.file == str(tmp_path / "config.toml")


def test_wrong_type_is_located_with_the_exact_message(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        model = "gpt-5.1-codex"

        [model_providers.other]
        name = "Other"

        [model_providers.azure]
        name = "Azure"
        base_url = "https://x.openai.azure.com/openai"
        env_key = "AZURE_OPENAI_API_KEY"
        wire_api = "responses"

        request_max_retries = "x"
        """,
    )
    err = error_of(tmp_path)
    assert err.message == (
        "config.toml:12: model_providers.azure.request_max_retries: "
        'expected an integer ≤ 100, got "x"'
    )
    assert (err.line, err.key) == (12, "model_providers.azure.request_max_retries")


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        (
            "[model_providers.az]\nstream_max_retries = 101\n",
            2,
            "model_providers.az.stream_max_retries",
            "expected an integer ≤ 100, got 101",
        ),
        (
            "[model_providers.az]\nrequest_max_retries = -1\n",
            2,
            "model_providers.az.request_max_retries",
            "expected an integer ≥ 0, got -1",
        ),
        (
            '[model_providers.az]\nwire_api = "grpc"\n',
            2,
            "model_providers.az.wire_api",
            'expected one of "responses", "chat", got "grpc"',
        ),
        (
            'model = "m"\nmodel_reasoning_effort = "huge"\n',
            2,
            "model_reasoning_effort",
            "expected one of",
        ),
        (
            "model_providers = { az = { stream_idle_timeout_ms = 0 } }\n",
            1,
            "model_providers.az.stream_idle_timeout_ms",
            "expected an integer ≥ 1, got 0",
        ),
        (
            "[codexd]\nmax_connections = true\n",
            2,
            "codexd.max_connections",
            "expected an integer ≥ 1, got true",
        ),
        (
            "[codexd]\nconnection_idle_timeout_s = -1\n",
            2,
            "codexd.connection_idle_timeout_s",
            "expected a number > 0, got -1",
        ),
        (
            "[codexd.gateway]\nhead_timeout_s = 0\n",
            2,
            "codexd.gateway.head_timeout_s",
            "expected a number > 0, got 0",
        ),
        (
            '[codexd.gateway]\nidle_timeout_s = "2m"\n',
            2,
            "codexd.gateway.idle_timeout_s",
            'expected a number > 0, got "2m"',
        ),
        (
            "[codexd.gateway]\nmax_unauthenticated_connections = 0\n",
            2,
            "codexd.gateway.max_unauthenticated_connections",
            "expected an integer ≥ 1, got 0",
        ),
        (
            '[codexd.budget]\ndaily_usd = "20"\n',
            2,
            "codexd.budget.daily_usd",
            'expected a number ≥ 0, got "20"',
        ),
        (
            "[model_providers.az.http_headers]\nX-A = 1\n",
            2,
            "model_providers.az.http_headers.X-A",
            "expected a string, got 1",
        ),
        (
            "[model_params]\ntemperature = 3.5\n",
            2,
            "model_params.temperature",
            "expected a number ≤ 2, got 3.5",
        ),
        (
            'cli_auth_credentials_store = "vault"\n',
            1,
            "cli_auth_credentials_store",
            'expected one of "file", "keyring", "auto", got "vault"',
        ),
    ],
)
def test_wrong_value_is_located(
    tmp_path: Path, text: str, line: int, key: str, problem: str
) -> None:
    write(tmp_path, text)
    err = error_of(tmp_path)
    assert (err.line, err.key) == (line, key)
    assert err.message.startswith(f"config.toml:{line}: {key}: {problem}")


@pytest.mark.parametrize("reserved", ["openai", "ollama", "lmstudio"])
def test_a_reserved_provider_id_is_an_error(tmp_path: Path, reserved: str) -> None:
    write(tmp_path, f'model = "x"\n\n[model_providers.{reserved}]\nname = "mine"\n')
    err = error_of(tmp_path)
    assert (err.line, err.key) == (3, f"model_providers.{reserved}")
    assert "cannot be overridden" in err.message
    assert f"{reserved}-custom" in err.message


def test_an_unknown_key_in_codexd_is_an_error_with_a_hint(tmp_path: Path) -> None:
    write(tmp_path, "[codexd]\nlog_level = 'debug'\nmax_conections = 10\n")
    err = error_of(tmp_path)
    assert err.message == (
        "config.toml:3: codexd.max_conections: unknown key in [codexd]; "
        "did you mean `max_connections`?"
    )


def test_an_unknown_key_in_a_codexd_sub_table_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "[codexd.rate_limits.openai]\nrequests_per_minute = 5\nrpm = 5\n")
    err = error_of(tmp_path)
    assert (err.line, err.key) == (3, "codexd.rate_limits.openai.rpm")


def test_unknown_keys_in_codex_tables_are_tolerated(tmp_path: Path) -> None:
    write(tmp_path, '[model_providers.az]\nauth = { command = "x" }\nmystery = 1\n')
    assert load_config(str(tmp_path), NO_ENV).providers["az"].name == "az"


def test_a_non_loopback_gateway_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, '[codexd.gateway]\nenabled = true\ntcp = "0.0.0.0:8765"\n')
    err = error_of(tmp_path)
    assert (err.line, err.key) == (3, "codexd.gateway.tcp")
    assert "loopback" in err.message


def test_rate_limits_for_an_unknown_provider_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, "[codexd.rate_limits.opanai]\nrequests_per_minute = 5\n")
    err = error_of(tmp_path)
    assert (err.line, err.key) == (1, "codexd.rate_limits.opanai")


def test_full_codexd_table_is_read(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [codexd]
        log_level = "debug"
        max_connections = 8

        [codexd.rate_limits.openai]
        requests_per_minute = 500
        tokens_per_minute = 200000
        max_concurrency = 16
        backend = "redis://127.0.0.1:6379/0"

        [codexd.budget]
        daily_usd = 20.0
        monthly_usd = 200

        [codexd.prices."my-model"]
        input = 1
        cached_input = 0.1
        output = 2

        [codexd.gateway]
        enabled = true
        tcp = "[::1]:8765"
        head_timeout_s = 5
        idle_timeout_s = 30.5
        max_unauthenticated_connections = 16
        """,
    )
    c = load_config(str(tmp_path), NO_ENV).codexd
    assert (c.log_level, c.max_connections) == ("debug", 8)
    openai = c.rate_limits["openai"]
    assert (openai.requests_per_minute, openai.tokens_per_minute) == (500, 200_000)
    assert (openai.max_concurrency, openai.default_output_tokens) == (16, 4096)
    assert (c.budget.daily_usd, c.budget.monthly_usd) == (20.0, 200.0)
    assert c.prices["my-model"].output == 2.0
    assert (c.gateway.enabled, c.gateway.tcp) == (True, "[::1]:8765")
    assert (c.gateway.head_timeout_s, c.gateway.idle_timeout_s) == (5, 30.5)
    assert c.gateway.max_unauthenticated_connections == 16


# --------------------------------------------------------------------------- codexd.toml


def test_codexd_toml_may_hold_our_tables(tmp_path: Path) -> None:
    write(tmp_path, 'model = "gpt-5"\n[codexd]\nmax_connections = 9\n')
    write(
        tmp_path, "[codexd]\nlog_level = 'debug'\n[model_params]\nmax_tokens = 100\n", "codexd.toml"
    )
    snap = load_config(str(tmp_path), NO_ENV)
    assert (snap.codexd.max_connections, snap.codexd.log_level) == (9, "debug")
    assert snap.model_params.max_tokens == 100


def test_a_key_set_in_both_files_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, 'model = "gpt-5"\n\n[codexd]\nmax_connections = 9\n')
    write(tmp_path, "# ours\n[codexd]\nmax_connections = 10\n", "codexd.toml")
    err = error_of(tmp_path)
    assert err.message == (
        "codexd.toml:3: codexd.max_connections: also set in config.toml:4: set it in one file only"
    )


def test_errors_in_codexd_toml_name_that_file(tmp_path: Path) -> None:
    write(tmp_path, 'model = "gpt-5"\n')
    write(tmp_path, "[codexd]\n\nlog_level = 3\n", "codexd.toml")
    assert error_of(tmp_path).message.startswith("codexd.toml:3: codexd.log_level: expected one of")


def test_codexd_toml_holds_only_our_tables(tmp_path: Path) -> None:
    write(tmp_path, 'model = "gpt-5"\n', "codexd.toml")
    err = error_of(tmp_path)
    assert (os.path.basename(err.file), err.line, err.key) == ("codexd.toml", 1, "model")


# --------------------------------------------------------------------------- load_file / rpc


def test_load_file_checks_one_file(tmp_path: Path) -> None:
    good = write(tmp_path / "a", 'model = "gpt-5"\n', "anything.toml")
    assert load_file(str(good)).model == "gpt-5"
    bad = write(tmp_path / "b", "[codexd]\nnope = 1\n", "codexd.toml")
    with pytest.raises(ConfigError) as info:
        load_file(str(bad))
    assert info.value.message.startswith("codexd.toml:2: codexd.nope: unknown key")
    with pytest.raises(ConfigError, match="no such file"):
        load_file(str(tmp_path / "missing.toml"))


def test_to_rpc_error_carries_file_line_key(tmp_path: Path) -> None:
    write(tmp_path, "[codexd]\nmax_connections = 0\n")
    rpc = error_of(tmp_path).to_rpc_error()
    assert rpc.kind == ErrorKind.CONFIG_INVALID
    assert rpc.code == -32050
    assert rpc.data.file == str(tmp_path / "config.toml")
    assert (rpc.data.line, rpc.data.key) == (2, "codexd.max_connections")
    assert rpc.message == "config.toml:2: codexd.max_connections: expected an integer ≥ 1, got 0"


def test_a_secret_in_a_wrong_place_is_not_echoed(tmp_path: Path) -> None:
    write(tmp_path, '[model_providers.az]\nrequest_max_retries = "sk-proj-abcdef0123456789"\n')
    err = error_of(tmp_path)
    assert "sk-proj" not in err.message
    assert "looks like a credential" in err.message


# --------------------------------------------------------------------------- the locator

_bare = st.text(alphabet="abcxyz_-", min_size=1, max_size=6)
_key = st.one_of(_bare, st.text(alphabet="ab .c", min_size=1, max_size=5))


def _quote(part: str) -> str:
    return part if part and all(c in "abcxyz_-" for c in part) else '"' + part + '"'


@given(
    tables=st.dictionaries(
        st.tuples(_key, _key),
        st.dictionaries(_key, st.integers(), min_size=1, max_size=3),
        min_size=1,
        max_size=4,
    ),
    dotted=st.booleans(),
)
def test_locate_finds_every_written_key(
    tables: dict[tuple[str, str], dict[str, int]], dotted: bool
) -> None:
    lines: list[str] = ["# header comment", 'title = """multi', "[not.a] = table", '"""']
    expected: dict[tuple[str, ...], int] = {}
    for (a, b), values in tables.items():
        if dotted:
            lines.append("[" + _quote(a) + "]")
            for k, v in values.items():
                lines.append(f"{_quote(b)}.{_quote(k)} = {v}")
                expected.setdefault((a, b, k), len(lines))
        else:
            lines.append(f"[ {_quote(a)} . {_quote(b)} ]")
            for k, v in values.items():
                lines.append(f"{_quote(k)}={v}  # note")
                expected.setdefault((a, b, k), len(lines))
        lines.append("")
    text = "\n".join(lines)
    for key, line in expected.items():
        assert locate(text, key) == line
    assert locate(text, ("not", "a")) is None


def test_locate_falls_back_to_the_inline_table_line() -> None:
    text = "[model_providers]\naz = { request_max_retries = 'x' }\n"
    assert locate(text, ("model_providers", "az", "request_max_retries")) == 2


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("127.0.0.1:8765", True),
        ("127.1.2.3:1", True),
        ("localhost:80", True),
        ("[::1]:8765", True),
        ("0.0.0.0:8765", False),
        ("192.168.1.2:8765", False),
        ("[::]:8765", False),
        ("example.com:80", False),
        ("127.0.0.1", False),
        ("127.0.0.1:99999", False),
    ],
)
def test_is_loopback(address: str, ok: bool) -> None:
    assert is_loopback(address) is ok


@given(
    ids=st.lists(st.sampled_from(["azure", "proxy", "local-2", "x_y"]), min_size=1, unique=True),
    bad_index=st.integers(min_value=0, max_value=3),
    field=st.sampled_from(["request_max_retries", "stream_max_retries"]),
    value=st.one_of(
        st.integers(min_value=101, max_value=10**6),
        st.integers(max_value=-1, min_value=-(10**6)),
        st.text(alphabet="abc", max_size=5),
        st.booleans(),
    ),
)
def test_a_bad_retry_count_is_located_in_any_provider(
    ids: list[str], bad_index: int, field: str, value: object
) -> None:
    bad = ids[bad_index % len(ids)]
    lines = ['model = "gpt-5"']
    expected_line = 0
    for provider_id in ids:
        lines += ["", f"[model_providers.{provider_id}]", 'base_url = "http://127.0.0.1:1/v1"']
        if provider_id == bad:
            shown = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
            lines.append(f"{field} = {shown}")
            expected_line = len(lines)
        else:
            lines.append(f"{field} = 3")
    with tempfile.TemporaryDirectory() as home:
        Path(home, "config.toml").write_text("\n".join(lines) + "\n")
        with pytest.raises(ConfigError) as info:
            load_config(home, NO_ENV)
    err = info.value
    assert (err.line, err.key) == (expected_line, f"model_providers.{bad}.{field}")
    assert err.message.startswith(f"config.toml:{expected_line}: model_providers.{bad}.{field}: ")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        assert err.problem == f"expected an integer ≥ 0, got {value}"
    else:
        assert err.problem.startswith("expected an integer ≤ 100, got ")


# --------------------------------------------------------------------------- header fields


@pytest.mark.parametrize(
    ("header", "line", "problem"),
    [
        ('http_headers = { "X-Team" = "blue\\r\\nX-Evil: 1" }', 4, "line break (CR or LF)"),
        ('http_headers = { "X-Team" = "a\\nb" }', 4, "line break (CR or LF)"),
        ('http_headers = { "X-Team" = "caf\u00e9" }', 4, "non-ASCII"),
        ('http_headers = { "X-Team" = "a\\u0000b" }', 4, "NUL"),
        ('http_headers = { "X Team" = "blue" }', 4, "not a valid HTTP header name"),
        ("[model_providers.p.http_headers]\nX-Team = 'blue'\n'X:Bad' = 'x'", 6, "header name"),
    ],
)
def test_a_header_the_transport_would_refuse_is_a_located_error(
    tmp_path: Path, header: str, line: int, problem: str
) -> None:
    write(tmp_path, f'model = "m"\n[model_providers.p]\nname = "p"\n{header}\n')
    err = error_of(tmp_path)
    assert err.line == line
    assert err.key is not None and err.key.startswith("model_providers.p.http_headers.X")
    assert problem in err.problem
    assert "X-Evil" not in err.message


def test_an_env_header_variable_holding_a_line_break_is_named_never_quoted(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        """
        [model_providers.p]
        name = "p"
        env_http_headers = { "X-Team-Token" = "TEAM_TOKEN" }
        """,
    )
    env = {"TEAM_TOKEN": "tok-0123456789\r\n"}
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), env)
    err = info.value
    assert (err.line, err.key) == (3, "model_providers.p.env_http_headers.X-Team-Token")
    assert "TEAM_TOKEN holds a line break" in err.message
    assert "tok-0123456789" not in err.message
    # Unset, or a value HTTP can carry: the file loads.
    load_config(str(tmp_path), {})
    load_config(str(tmp_path), {"TEAM_TOKEN": "tok-0123456789"})


def test_an_unparseable_redis_url_is_named_without_quoting_its_password(tmp_path: Path) -> None:
    # `?` in a password makes the rest of it look like a port; the parser's own message quotes
    # that part, so the error must not carry the parser's words.
    write(
        tmp_path,
        '[codexd.rate_limits.openai]\nbackend = "redis://default:Hunter2Secret?x@redis.example:6379/0"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), {})
    message = str(info.value)
    assert "codexd.rate_limits.openai.backend" in message
    assert "percent-encoded" in message
    assert "Hunter2" not in message
