"""Helpers shared by the auth tests: unsigned JWTs and auth.json documents (no tests here)."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

AUTH = "https://api.openai.com/auth"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(payload: dict[str, Any]) -> str:
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(payload).encode())}.{b64(b'signature-not-checked')}"


def make_tokens(
    *, exp: float, email: str = "user@example.com", plan: str = "plus", account: str = "acct-1"
) -> dict[str, str]:
    """A fresh, unique token triple; the strings are long and random so a leak is greppable."""
    tag = secrets.token_hex(12)
    id_token = make_jwt(
        {
            "email": email,
            AUTH: {"chatgpt_plan_type": plan, "chatgpt_account_id": account},
            "nonce": tag,
        }
    )
    access = make_jwt({"exp": int(exp), AUTH: {"chatgpt_account_id": account}, "jti": tag})
    return {
        "id_token": id_token,
        "access_token": access,
        "refresh_token": f"rt-{tag}-{secrets.token_hex(16)}",
        "account_id": account,
    }


def chatgpt_doc(
    tokens: dict[str, str], last_refresh: str = "2026-11-25T09:00:00.000000Z"
) -> dict[str, Any]:
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": tokens,
        "last_refresh": last_refresh,
    }
