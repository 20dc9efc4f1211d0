"""codexd: one per-user daemon that owns everything about talking to OpenAI."""

__version__ = "0.1.0"
