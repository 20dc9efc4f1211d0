"""The effective config as `config/read` shows it: everything but secrets.

The snapshot never holds environment values (only the names of variables), so what remains to
hide is what a user wrote into the file: `experimental_bearer_token`, header and query values
that look like credentials (or whose name says they are one), credentials and query values
inside any URL (`base_url`, `openai_base_url`, `chatgpt_base_url`, a Redis backend), and a
key- or token-shaped string anywhere. What counts as a secret is decided in
codexd/security/scrub.py: this module only chooses the marker and which names to hide.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from codexd.config.schema import ConfigSnapshot
from codexd.security.scrub import looks_like_secret, mask, secret_name

REDACTED: Final = "<redacted>"


def _redact_values(values: dict[str, str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    return {
        name: REDACTED if secret_name(name) or looks_like_secret(value) else value
        for name, value in values.items()
    }


def _mask_strings(value: Any) -> Any:
    """Every string of a JSON tree `mask`ed: the credentials and query values of its URLs and
    key- or token-shaped strings hidden."""
    if isinstance(value, str):
        return mask(value, REDACTED)
    if isinstance(value, dict):
        return {k: _mask_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_strings(v) for v in value]
    return value


def redact(snapshot: ConfigSnapshot) -> dict[str, Any]:
    """`config/read`'s `effective`: the snapshot as JSON builtins, secrets replaced."""
    effective: dict[str, Any] = msgspec.to_builtins(snapshot)
    effective.pop("top_level", None)
    effective.pop("catalog_models", None)
    effective.pop("layers", None)  # config/read's own member
    for provider in effective["providers"].values():
        if provider.get("experimental_bearer_token"):
            provider["experimental_bearer_token"] = REDACTED
        provider["http_headers"] = _redact_values(provider.get("http_headers"))
        provider["query_params"] = _redact_values(provider.get("query_params"))
    redacted: dict[str, Any] = _mask_strings(effective)
    return redacted
