"""Secrets and the claims codexd reads from ChatGPT JWTs.

As Codex does, claims are read from the base64url payload without verifying the signature: the
tokens come from the issuer over TLS or from the user's own auth.json, and codexd only reads them
to show who is logged in and to know when the access token expires. A malformed token is a
`MalformedToken` value, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Final, NoReturn

import msgspec

AUTH_CLAIM: Final = "https://api.openai.com/auth"
PROFILE_CLAIM: Final = "https://api.openai.com/profile"

# PlanType::from_raw_value: aliases that Codex folds into one plan.
_PLAN_ALIASES: Final = {"hc": "enterprise", "education": "edu"}


class Secret:
    """A key or token. Its repr and str are redacted; `reveal()` is the one way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


class MalformedToken(msgspec.Struct, frozen=True):
    """Why a JWT could not be read. `reason` never quotes the token."""

    reason: str


class JwtClaims(msgspec.Struct, frozen=True):
    """What codexd reads from an id_token or access token (all optional: tokens vary by era)."""

    email: str | None = None
    plan_type: str | None = None
    account_id: str | None = None
    user_id: str | None = None
    exp: int | None = None


def decode_jwt_payload(token: str) -> dict[str, Any] | MalformedToken:
    """The JSON payload of `header.payload.signature`, unverified."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return MalformedToken("not a JWT: expected three non-empty dot-separated parts")
    segment = parts[1]
    try:
        raw = base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return MalformedToken("the JWT payload is not base64url")
    try:
        payload = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return MalformedToken("the JWT payload is not JSON")
    if not isinstance(payload, dict):
        return MalformedToken("the JWT payload is not a JSON object")
    return payload


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def normalize_plan(raw: str | None) -> str | None:
    if raw is None:
        return None
    plan = raw.strip().lower()
    return _PLAN_ALIASES.get(plan, plan) or None


def parse_claims(token: str) -> JwtClaims | MalformedToken:
    """email, plan, account id, user id and exp, tolerating missing or oddly typed claims."""
    payload = decode_jwt_payload(token)
    if isinstance(payload, MalformedToken):
        return payload
    auth = payload.get(AUTH_CLAIM)
    auth = auth if isinstance(auth, dict) else {}
    profile = payload.get(PROFILE_CLAIM)
    profile = profile if isinstance(profile, dict) else {}
    exp = payload.get("exp")
    # bool is an int subclass; a float exp is legal JSON from some issuers.
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        exp_value = None
    else:
        exp_value = int(exp) if abs(exp) < 2**62 else None
    return JwtClaims(
        email=_str_or_none(payload.get("email")) or _str_or_none(profile.get("email")),
        plan_type=normalize_plan(_str_or_none(auth.get("chatgpt_plan_type"))),
        account_id=_str_or_none(auth.get("chatgpt_account_id")),
        user_id=_str_or_none(auth.get("chatgpt_user_id")) or _str_or_none(auth.get("user_id")),
        exp=exp_value,
    )


def claims_or_empty(token: Secret | None) -> JwtClaims:
    """The claims of `token`, or no claims at all when it is missing or malformed."""
    if token is None:
        return JwtClaims()
    claims = parse_claims(token.reveal())
    return JwtClaims() if isinstance(claims, MalformedToken) else claims
