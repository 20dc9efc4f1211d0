"""Configuration: config.toml (+ codexd.toml) → one immutable snapshot, hot reload."""

from codexd.config.load import ConfigError, load_config, load_file
from codexd.config.redact import redact
from codexd.config.schema import (
    CodexdSettings,
    ConfigSnapshot,
    ModelSelection,
    Price,
    ProviderConfig,
    RateLimitSettings,
)
from codexd.config.store import (
    ConfigEvent,
    ConfigStatus,
    ConfigStore,
    ReloadOutcome,
)
from codexd.config.watch import watch_config

__all__ = [
    "CodexdSettings",
    "ConfigError",
    "ConfigEvent",
    "ConfigSnapshot",
    "ConfigStatus",
    "ConfigStore",
    "ModelSelection",
    "Price",
    "ProviderConfig",
    "RateLimitSettings",
    "ReloadOutcome",
    "load_config",
    "load_file",
    "redact",
    "watch_config",
]
