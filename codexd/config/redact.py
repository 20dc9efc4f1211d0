"""The effective config as `config/read` shows it: everything but secrets.

The snapshot never holds environment values (only the names of variables), so what remains to
hide is what a user wrote into the file: `experimental_bearer_token`, header and query values
that look like credentials, and passwords inside backend URLs.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from codexd.config.load import looks_like_secret
from codexd.config.schema import ConfigSnapshot

REDACTED: Final = "<redacted>"
_SECRET_NAME_PARTS: Final = ("auth", "token", "secret", "key", "password", "cookie", "signature")


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_NAME_PARTS)


def _redact_values(values: dict[str, str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    return {
        name: REDACTED if _secret_name(name) or looks_like_secret(value) else value
        for name, value in values.items()
    }


def _redact_url(url: str | None) -> str | None:
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def redact(snapshot: ConfigSnapshot) -> dict[str, Any]:
    """`config/read`'s `effective`: the snapshot as JSON builtins, secrets replaced."""
    effective: dict[str, Any] = msgspec.to_builtins(snapshot)
    effective.pop("top_level", None)
    effective.pop("catalog_models", None)
    for provider in effective["providers"].values():
        if provider.get("experimental_bearer_token"):
            provider["experimental_bearer_token"] = REDACTED
        provider["http_headers"] = _redact_values(provider.get("http_headers"))
        provider["query_params"] = _redact_values(provider.get("query_params"))
    for limits in effective["codexd"]["rate_limits"].values():
        limits["backend"] = _redact_url(limits.get("backend"))
    return effective
