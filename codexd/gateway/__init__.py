"""The OpenAI-compatible HTTP front door: `GatewayListeners(services)` serves it as the
config says, following reloads."""

from codexd.gateway.listeners import GatewayListeners, serve_gateway

__all__ = ["GatewayListeners", "serve_gateway"]
