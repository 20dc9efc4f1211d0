"""The OpenAI-compatible HTTP front door: `serve_gateway(services)`."""

from codexd.gateway.server import serve_gateway

__all__ = ["serve_gateway"]
