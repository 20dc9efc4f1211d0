"""Authentication: auth.json and the keyring in Codex's shapes, JWT claims, the issuer's OAuth
endpoints, and `AuthSession`, the single place that refreshes (single-flight, under auth.lock).
"""

from codexd.auth.authfile import AuthDocument, AuthFileError, TokenSet
from codexd.auth.session import (
    OPENAI,
    AuthSession,
    Credentials,
    Provider,
    ProviderAuth,
)
from codexd.auth.stores import CredentialStore, StoreError, open_store
from codexd.auth.tokens import JwtClaims, MalformedToken, Secret, parse_claims

__all__ = [
    "OPENAI",
    "AuthDocument",
    "AuthFileError",
    "AuthSession",
    "CredentialStore",
    "Credentials",
    "JwtClaims",
    "MalformedToken",
    "Provider",
    "ProviderAuth",
    "Secret",
    "StoreError",
    "TokenSet",
    "open_store",
    "parse_claims",
]
