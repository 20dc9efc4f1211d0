"""The OpenAI-compatible HTTP front door: `serve_gateway(daemon)` and the token."""

from codexd.gateway.server import serve_gateway
from codexd.gateway.token import TokenFile, gateway_token

__all__ = ["TokenFile", "gateway_token", "serve_gateway"]
