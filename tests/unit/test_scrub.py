"""The one scrubber (codexd/security/scrub.py): what we sent is cut before anything else touches the
text, then token shapes and credentials in URLs are masked, then the length is bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
)

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
