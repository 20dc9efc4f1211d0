from __future__ import annotations

import pickle

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexd.auth.pkce import challenge_for, generate_pkce, generate_state
from codexd.auth.tokens import JwtClaims, MalformedToken, Secret, parse_claims
from tests.unit.test_auth_support import AUTH, b64, make_jwt


def test_secret_is_redacted_everywhere_but_reveal() -> None:
    s = Secret("sk-very-secret-value")
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", f"{[s]}", f"{ {'k': s} }"):
        assert "very-secret" not in shown
    assert s.reveal() == "sk-very-secret-value"
    assert s == Secret("sk-very-secret-value")
    assert s != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        msgspec.json.encode({"k": s})


def test_claims_from_a_chatgpt_id_token() -> None:
    token = make_jwt(
        {
            "email": "ada@example.com",
            "exp": 1_900_000_000,
            AUTH: {
                "chatgpt_plan_type": "Pro",
                "chatgpt_account_id": "acct-9",
                "chatgpt_user_id": "user-3",
            },
        }
    )
    assert parse_claims(token) == JwtClaims(
        email="ada@example.com",
        plan_type="pro",
        account_id="acct-9",
        user_id="user-3",
        exp=1_900_000_000,
    )


def test_email_falls_back_to_the_profile_claim_and_plan_aliases_fold() -> None:
    token = make_jwt(
        {
            "https://api.openai.com/profile": {"email": "p@example.com"},
            AUTH: {"chatgpt_plan_type": "hc", "user_id": "u-1"},
        }
    )
    claims = parse_claims(token)
    assert isinstance(claims, JwtClaims)
    assert (claims.email, claims.plan_type, claims.user_id, claims.exp) == (
        "p@example.com",
        "enterprise",
        "u-1",
        None,
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"exp": "soon", AUTH: "not an object", "email": 7}, JwtClaims()),
        ({"exp": True}, JwtClaims()),
        ({"exp": 1.5e9}, JwtClaims(exp=1_500_000_000)),
        ({"exp": 1e300}, JwtClaims()),
        ({AUTH: {"chatgpt_plan_type": "somethingnew"}}, JwtClaims(plan_type="somethingnew")),
    ],
)
def test_odd_claims_are_tolerated(payload: dict[str, object], expected: JwtClaims) -> None:
    assert parse_claims(make_jwt(payload)) == expected


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "three non-empty"),
        ("a.b", "three non-empty"),
        ("a..c", "three non-empty"),
        ("a.!!!!.c", "base64url"),
        (f"a.{b64(b'not json')}.c", "not JSON"),
        (f"a.{b64(b'[1, 2]')}.c", "not a JSON object"),
    ],
)
def test_malformed_tokens_are_values_not_exceptions(token: str, reason: str) -> None:
    result = parse_claims(token)
    assert isinstance(result, MalformedToken)
    assert reason in result.reason


@given(st.text())
def test_any_text_parses_to_claims_or_a_malformed_value(text: str) -> None:
    assert isinstance(parse_claims(text), JwtClaims | MalformedToken)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["email", "exp", AUTH, "x"]), json_values))
def test_any_json_payload_parses_without_raising(payload: dict[str, object]) -> None:
    assert isinstance(parse_claims(make_jwt(payload)), JwtClaims)


def test_pkce_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636, Appendix B
    assert challenge_for(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_generated_pkce_and_state_are_codex_sized_and_url_safe() -> None:
    codes = generate_pkce()
    verifier = codes.verifier.reveal()
    assert len(verifier) == 86  # 64 bytes, base64url without padding
    assert codes.challenge == challenge_for(verifier)
    assert codes.method == "S256"
    assert "=" not in verifier and "+" not in verifier and "/" not in verifier
    assert len(generate_state()) == 43
    assert generate_state() != generate_state()
    assert "dBjft" not in repr(codes) and verifier not in repr(codes)
