"""The one scrubber (codexd/security/scrub.py): what we sent is cut before anything else
touches the text, then token shapes and credentials in URLs are masked, then the length is
bounded. Its one credential pattern is what every place that shows text asks: a log line, an
upstream error body or header, an OAuth error, a config error and the config view."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexd.auth.oauth import error_detail
from codexd.config.load import ConfigError, load_config
from codexd.config.redact import redact
from codexd.config.store import ConfigStore
from codexd.logs import JsonFormatter, PlainFormatter
from codexd.security import scrub as scrub_module
from codexd.security.scrub import (
    MAX_TEXT,
    REDACTED,
    Scrubber,
    looks_like_secret,
    mask,
    redact_url,
    redact_urls,
    request_values,
    scrub,
    secret_name,
)
from codexd.upstream.errors import classify_http, request_id_of

SECRET = "hdr-0123456789abcdefghij"


def pieces(secret: str, text: str, width: int = 8) -> list[str]:
    """Every `width` characters in a row of `secret` that appear in `text`."""
    return [
        word[i : i + width]
        for word in secret.split()
        for i in range(len(word) - width + 1)
        if word[i : i + width] in text
    ]


def test_a_value_straddling_the_bound_is_cut_whole() -> None:
    """Padded to 480 characters, the value crosses the 500 bound: cutting after the bound
    would leave its first 19 characters."""
    out = Scrubber([SECRET])("x" * 480 + SECRET + " and more")
    assert len(out) <= MAX_TEXT
    assert pieces(SECRET, out) == []
    assert out.endswith(REDACTED + " and more")


def test_a_value_holding_runs_of_whitespace_is_cut_as_sent_and_as_normalised() -> None:
    value = "static-0123456789   spaced\t\tvalue-abcdefghij"
    scrubber = Scrubber([value])
    for echoed in (value, " ".join(value.split())):
        out = scrubber(f"bad  header:\n\n {echoed}  \t end")
        assert out == f"bad header: {REDACTED} end"


def test_encoded_forms_and_the_bare_token_of_an_auth_header_are_cut() -> None:
    scrubber = Scrubber.for_request(
        {"Authorization": "Bearer plain-key-0123456789", "Content-Type": "application/json"},
        "https://u:pa55word-xyz@h/v1/responses?api-key=a%2Fb%20c-0123456789",
    )
    text = scrubber(
        "got plain-key-0123456789 and a/b c-0123456789 and a%2Fb+c-0123456789 "
        "from pa55word-xyz as application/json"
    )
    assert text == (
        f"got {REDACTED} and {REDACTED} and {REDACTED} from {REDACTED} as application/json"
    )


def test_request_values_leave_out_the_public_headers() -> None:
    values = list(
        request_values(
            {"content-type": "application/json", "User-Agent": "codexd/1", "X-Team": "blue"},
            "http://h/v1?v=1",
        )
    )
    assert values == ["blue", "1"]


def test_short_values_are_not_cut() -> None:
    """Cutting a value of a few characters would mangle ordinary words."""
    assert Scrubber(["blue", ""])("a blue sky") == "a blue sky"


def test_generic_patterns_still_apply_after_the_sent_values() -> None:
    out = scrub(
        "key sk-proj-AbC123xyz789 token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig "
        "header Authorization: Bearer abcdefgh12345678 url https://me:pw@host/x?token=abc"
    )
    assert out == (
        f"key {REDACTED} token {REDACTED} header Authorization: Bearer {REDACTED} "
        f"url https://{REDACTED}@host/x?token={REDACTED}"
    )


def test_word_bounds_codes_and_keeps_none() -> None:
    assert Scrubber().word(None) is None
    assert Scrubber().word("  ") is None
    assert Scrubber().word("invalid_api_key") == "invalid_api_key"
    assert len(Scrubber().word("c" * 1000) or "") == 120


def test_redact_url_hides_userinfo_and_query_values() -> None:
    assert redact_url("http://user:pass@host:8080/v1?token=abc&v=2") == (
        f"http://{REDACTED}@host:8080/v1?token={REDACTED}&v={REDACTED}"
    )
    assert redact_url("https://api.openai.com/v1") == "https://api.openai.com/v1"
    assert redact_url("http://[::1:80/x?y=1") == REDACTED  # unparsable, with a query


def test_redact_urls_reaches_urls_inside_text() -> None:
    text = "get a key at https://me:pw@example.test/keys?ref=abc, then retry"
    assert redact_urls(text, "<x>") == (
        "get a key at https://<x>@example.test/keys?ref=<x>, then retry"
    )
    assert redact_urls("no url here: a=b?c") == "no url here: a=b?c"


def test_mask_leaves_ordinary_text() -> None:
    text = "model gpt-5 used 1200 tokens; sk-short; bearer; disk-controller-0123; https://x/y"
    assert mask(text) == text
    assert not looks_like_secret("blue")


# Values drawn from characters the marker does not use, so that no marker can complete one.
VALUES = st.text("ABCDEF0123456789-_ \t\n", min_size=8).filter(lambda s: len(s.strip()) >= 8)


@given(st.text(), VALUES, st.text())
def test_a_sent_value_never_survives_whatever_surrounds_it(
    before: str, value: str, after: str
) -> None:
    out = Scrubber([value])(before + value + after)
    assert value.strip() not in out
    assert " ".join(value.split()) not in out


# --------------------------------------------------------------------------- one pattern

# One of each shape the pattern knows; each shorter than the long-unspaced-string rule of
# `looks_like_secret`, so that only the pattern can find it.
SHAPES = [
    "sk-proj-AbC123xyz789",
    "sess-AbCdEf0123456789",
    "ghp_AbCdEf0123456789xyz",
    "xoxb-1234-5678-abcdef",
    "eyJhbGciOiJIUzI1.eyJzdWIi.c2ln",
]


@pytest.mark.parametrize("secret", SHAPES)
def test_the_pattern_judges_text_and_values_alike(secret: str) -> None:
    assert len(secret) < 32
    assert mask(f"got {secret} back") == f"got {REDACTED} back"
    assert looks_like_secret(secret)
    assert looks_like_secret(f"token={secret}")
    assert not looks_like_secret("sk-abc") and mask("sk-abc") == "sk-abc"  # too short for a key


def test_secret_names() -> None:
    assert secret_name("X-Api-Key") and secret_name("Authorization") and secret_name("Cookie")
    assert not secret_name("X-Team")


def _log_plain(text: str) -> str:
    record = logging.LogRecord("codexd", logging.WARNING, __file__, 1, text, None, None)
    return PlainFormatter(journal=False).format(record)


def _log_json(text: str) -> str:
    record = logging.LogRecord("codexd", logging.WARNING, __file__, 1, text, None, None)
    return str(msgspec.json.decode(JsonFormatter().format(record))["msg"])


def _upstream_error_body(text: str) -> str:
    body = json.dumps({"error": {"message": text, "code": "bad", "type": "x"}}).encode()
    err = classify_http(400, {"content-type": "application/json"}, body, 0.0)
    return f"{err.message} | {err.upstream_message}"


def _upstream_header(text: str) -> str:
    return request_id_of({"x-request-id": text}) or ""


def _oauth_error(text: str) -> str:
    return error_detail(json.dumps({"error": "invalid_grant", "error_description": text}).encode())


def _config_error(text: str, home: Path) -> str:
    (home / "config.toml").write_text(
        f"[model_providers.az]\nrequest_max_retries = {json.dumps(text)}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(home), {})
    return info.value.message


def _config_view_header(text: str, home: Path) -> str:
    (home / "config.toml").write_text(
        f'[model_providers.az]\nbase_url = "https://x.example/v1"\n'
        f"http_headers = {{ X-Team = {json.dumps(text)} }}\n"
    )
    view = redact(ConfigStore.open(str(home), {}).snapshot)
    return str(view["providers"]["az"]["http_headers"]["X-Team"])


def _config_view_string(text: str, home: Path) -> str:
    (home / "config.toml").write_text(
        f'[model_providers.az]\nbase_url = "https://x.example/v1"\n'
        f"env_key_instructions = {json.dumps(text)}\n"
    )
    view = redact(ConfigStore.open(str(home), {}).snapshot)
    return str(view["providers"]["az"]["env_key_instructions"])


TEXT_SITES: dict[str, Callable[[str], str]] = {
    "log line": _log_plain,
    "json log line": _log_json,
    "upstream error body": _upstream_error_body,
    "upstream header": _upstream_header,
    "oauth error": _oauth_error,
}
CONFIG_SITES: dict[str, Callable[[str, Path], str]] = {
    "config error": _config_error,
    "config view header": _config_view_header,
    "config view string": _config_view_string,
}


def _shown_everywhere(secret: str, home: Path) -> dict[str, str]:
    shown = {name: site(f"ask for {secret} now") for name, site in TEXT_SITES.items()}
    for name, site in CONFIG_SITES.items():
        shown[name] = site(f"ask for {secret} now", home)
    return shown


# How each place says it hid something: scrubbed text, the config view, a config error.
MARKERS = (REDACTED, "<redacted>", "a string that looks like a credential")


@pytest.mark.parametrize("secret", SHAPES)
def test_every_place_that_shows_text_hides_every_shape(secret: str, tmp_path: Path) -> None:
    for name, shown in _shown_everywhere(secret, tmp_path).items():
        assert secret not in shown, name
        assert secret[:8] not in shown, name
        assert any(m in shown for m in MARKERS), name


def test_every_place_asks_the_one_pattern(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A shape only a changed pattern knows is hidden wherever text is shown: no place keeps
    a pattern of its own."""
    invented = "zqx-0123456789"
    assert invented in _shown_everywhere(invented, tmp_path)["log line"]  # not a secret yet
    widened = re.compile(scrub_module._TOKENS.pattern + r"|\bzqx-[0-9]{8,}")
    monkeypatch.setattr(scrub_module, "_TOKENS", widened)
    for name, shown in _shown_everywhere(invented, tmp_path).items():
        assert invented not in shown, name
        assert any(m in shown for m in MARKERS), name
