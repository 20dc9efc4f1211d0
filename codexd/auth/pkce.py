"""PKCE (RFC 7636, S256) and the OAuth `state`, generated as Codex does."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from codexd.auth.tokens import Secret


def b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def challenge_for(verifier: str) -> str:
    """`base64url_nopad(sha256(verifier))`: the S256 challenge."""
    return b64url_nopad(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class PkceCodes:
    verifier: Secret
    challenge: str
    method: str = "S256"


def generate_pkce(random_bytes: Callable[[int], bytes] = os.urandom) -> PkceCodes:
    """64 random bytes → the verifier (86 characters, within RFC 7636's 43..128)."""
    verifier = b64url_nopad(random_bytes(64))
    return PkceCodes(verifier=Secret(verifier), challenge=challenge_for(verifier))


def generate_state(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """32 random bytes, base64url without padding."""
    return b64url_nopad(random_bytes(32))
