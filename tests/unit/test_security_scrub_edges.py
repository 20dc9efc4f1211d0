"""Edges of the scrubber (codexd/security/scrub.py) through its public functions: which forms
of a value we sent are cut, in which order, what counts as a secret by its shape, how a URL's
credentials are hidden, and the length bound."""

from __future__ import annotations

from codexd.security.scrub import (
    REDACTED,
    Scrubber,
    looks_like_secret,
    redact_url,
    scrub,
)


def test_a_longer_value_is_cut_before_a_shorter_one_it_holds() -> None:
    """Cutting the shorter value first would leave the rest of the longer one in the text."""
    short, longer = "zz-secret-123", "top-part-999/zz-secret-123"
    for values in ([short, longer], [longer, short]):
        assert Scrubber(values)(f"echo {longer} end") == f"echo {REDACTED} end"


def test_a_value_holding_a_slash_and_a_space_is_cut_in_each_url_encoded_form() -> None:
    scrubber = Scrubber(["abc/def ghijk-123"])
    for echoed in ("abc%2Fdef%20ghijk-123", "abc%2Fdef+ghijk-123"):
        assert scrubber(f"echo {echoed} end") == f"echo {REDACTED} end"


def test_the_credentials_of_an_auth_scheme_are_cut_alone_even_with_spaces() -> None:
    """A Digest header's credentials hold spaces: quoted back without the scheme, they are
    still ours to hide."""
    credentials = 'username="me", response="6629fae49393a05397450978507c4ef1"'
    scrubber = Scrubber.for_request({"Authorization": f"Digest {credentials}"})
    assert scrubber(f"got {credentials} back") == f"got {REDACTED} back"


def test_only_an_auth_scheme_makes_the_rest_of_a_value_a_secret_alone() -> None:
    """A value whose first word is not a scheme is cut whole, and its words stay words."""
    scrubber = Scrubber(["2024-06 quarterly-report-draft"])
    assert scrubber("see quarterly-report-draft and 2024-06 quarterly-report-draft") == (
        f"see quarterly-report-draft and {REDACTED}"
    )


def test_a_long_unspaced_value_with_a_digit_looks_like_a_secret() -> None:
    assert looks_like_secret("a" * 31 + "1")  # 32 characters
    assert not looks_like_secret("a" * 30 + "1")  # 31
    assert not looks_like_secret("a" * 40)  # no digit: a word, a path
    assert not looks_like_secret("the 2 quick brown foxes jumped over the lazy dog")


def test_redact_url_hides_the_query_values_of_a_url_without_userinfo() -> None:
    assert redact_url("https://api.example.test/v1?key=abc") == (
        f"https://api.example.test/v1?key={REDACTED}"
    )


def test_redact_url_keeps_the_names_of_blank_query_values() -> None:
    assert redact_url("https://h/x?a=&b=1") == f"https://h/x?a={REDACTED}&b={REDACTED}"


def test_redact_url_keeps_an_ipv6_host_and_invents_none() -> None:
    assert redact_url("https://u:pw@[::1]:8080/x") == f"https://{REDACTED}@[::1]:8080/x"
    assert redact_url("https://u:pw@/x") == f"https://{REDACTED}@/x"


def test_an_unparsable_url_is_kept_only_when_it_holds_no_credentials() -> None:
    assert redact_url("http://host:99999999/x") == "http://host:99999999/x"
    assert redact_url("http://u:p@host:99999999/x") == REDACTED
    assert redact_url("http://host:99999999/x?token=abc") == REDACTED


def test_the_length_bound_is_the_callers_and_a_text_at_the_bound_is_whole() -> None:
    assert scrub("x" * 30, 20) == "x" * 19 + "…"
    assert scrub("y" * 20, 20) == "y" * 20
    assert Scrubber()("y" * 20, 20) == "y" * 20


def test_a_scrubbers_repr_shows_none_of_its_values() -> None:
    """A scrubber travels with a request: a traceback or debug log may print it."""
    scrubber = Scrubber(["sk-proj-0123456789abcdef"])
    scrubber("warm it up: sk-proj-0123456789abcdef")
    assert "0123456789" not in repr(scrubber)
