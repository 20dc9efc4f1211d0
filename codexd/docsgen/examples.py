"""One example exchange per method, and one message per notification, for docs/protocol.md.

Hand-written, but not free to drift: tests/unit/test_docs_generated.py decodes every example's
params with its method's params type and every result with its result type, and checks that
each member an example shows is one the type has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple


class Exchange(NamedTuple):
    """A request's params (None: the request leaves `params` out) and the reply's result."""

    params: dict[str, Any] | None
    result: Any


_JOB_ID: Final = "job_01JD6Q8Z4W2M"
_AT: Final = "2026-11-25T09:00:00.123Z"
_DONE_AT: Final = "2026-11-25T09:00:02.480Z"

_USAGE: Final = {
    "input_tokens": 1200,
    "cached_input_tokens": 1024,
    "output_tokens": 90,
    "reasoning_tokens": 64,
    "total_tokens": 1290,
}

_JOB: Final = {
    "id": _JOB_ID,
    "state": "completed",
    "client": "notes.py",
    "provider": "openai",
    "model": "gpt-5.1-codex-max",
    "api": "responses",
    "created_at": _AT,
    "started_at": "2026-11-25T09:00:00.125Z",
    "finished_at": _DONE_AT,
    "attempts": 1,
    "output_text": "Hello!",
    "usage": _USAGE,
    "cost_usd": 0.00115,
    "error": None,
}

_JOB_NO_TEXT: Final = {k: v for k, v in _JOB.items() if k != "output_text"}

_ACCOUNT: Final = {
    "mode": "chatgpt",
    "source": "auth_file",
    "email": "ada@example.com",
    "plan_type": "plus",
    "account_id": "acc-5f2e",
    "expires_at": "2026-12-05T09:00:00.000Z",
    "last_refresh": "2026-11-25T08:58:10.000Z",
    "store": "file",
}

_LIMITS: Final = {
    "provider": "openai",
    "budget": {
        "requests_per_minute": 500,
        "tokens_per_minute": 200000,
        "max_concurrency": 16,
        "available_requests": 497,
        "available_tokens": 191808,
        "in_flight": 1,
        "queued": 0,
        "paused_until": None,
    },
    "upstream": {
        "requests": {"limit": 500, "remaining": 498, "reset_after_s": 0.12},
        "tokens": {"limit": 200000, "remaining": 198700, "reset_after_s": 0.39},
        "primary": None,
        "secondary": None,
        "credits": None,
    },
}

EXAMPLES: Final[Mapping[str, Exchange]] = {
    "initialize": Exchange(
        {"client": {"name": "notes.py", "version": "0.3.1"}},
        {"server": {"name": "codexd", "version": "0.1.0"}, "protocol_version": 1},
    ),
    "daemon/ping": Exchange(None, {}),
    "daemon/status": Exchange(
        None,
        {
            "version": "0.1.0",
            "protocol_version": 1,
            "pid": 4242,
            "started_at": _AT,
            "started_by": "systemd",
            "uptime_s": 3600.5,
            "socket": "/run/user/1000/codexd/codexd.sock",
            "codex_home": "/home/ada/.codex",
            "state_dir": "/home/ada/.local/state/codexd",
            "connections": 2,
            "jobs": {"queued": 0, "running": 1, "retained": 12},
            "config": {
                "path": "/home/ada/.codex/config.toml",
                "generation": 3,
                "loaded_at": _AT,
                "error": None,
            },
            "account": {"mode": "chatgpt", "email": "ada@example.com", "plan_type": "plus"},
            "budget": None,
            "gateway": None,
        },
    ),
    "daemon/shutdown": Exchange(None, {}),
    "daemon/methods": Exchange(
        None,
        [
            {
                "name": "daemon/ping",
                "params_schema": {"$ref": "#/$defs/NoParams", "$defs": {}},
                "result_schema": {"$ref": "#/$defs/Empty", "$defs": {}},
                "summary": "Liveness; the cheapest call.",
            }
        ],
    ),
    "account/read": Exchange(None, _ACCOUNT),
    "account/refresh": Exchange(None, {**_ACCOUNT, "last_refresh": _DONE_AT}),
    "account/login": Exchange(
        {"method": "device"},
        {
            "login_id": "login_7Hq2",
            "verification_url": "https://auth.openai.com/codex/device",
            "user_code": "WXYZ-1234",
        },
    ),
    "account/login/cancel": Exchange({"login_id": "login_7Hq2"}, {"cancelled": True}),
    "account/logout": Exchange(None, {"revoked": True}),
    "models/list": Exchange(
        {"provider": "openai"},
        {
            "models": [
                {
                    "slug": "gpt-5.1-codex-max",
                    "display_name": "GPT-5.1 Codex Max",
                    "description": "For long agentic coding tasks.",
                    "context_window": 272000,
                    "default_reasoning_level": "medium",
                    "supported_reasoning_levels": ["low", "medium", "high", "xhigh"],
                    "price": None,
                },
                {
                    "slug": "gpt-5.1",
                    "display_name": "GPT-5.1",
                    "description": "For coding and agentic tasks.",
                    "context_window": 272000,
                    "default_reasoning_level": "medium",
                    "supported_reasoning_levels": ["none", "low", "medium", "high"],
                    "price": {
                        "input": 1.25,
                        "cached_input": 0.125,
                        "output": 10.0,
                        "source": "https://developers.openai.com/api/docs/models/gpt-5.1",
                        "as_of": "2026-12-05",
                    },
                },
            ],
            "default_price": {
                "input": 1.25,
                "cached_input": 0.125,
                "output": 10.0,
                "source": "default",
                "as_of": None,
            },
        },
    ),
    "config/read": Exchange(
        None,
        {
            "path": "/home/ada/.codex/config.toml",
            "generation": 3,
            "loaded_at": _AT,
            "error": None,
            "effective": {"model": "gpt-5.1-codex-max", "model_provider": "openai"},
        },
    ),
    "config/reload": Exchange(None, {"generation": 4, "changed": True}),
    "job/submit": Exchange(
        {
            "body": {"input": "Say hello.", "reasoning": {"effort": "low"}},
            "client_request_id": "notes-17",
        },
        {"job_id": _JOB_ID, "state": "queued"},
    ),
    "job/get": Exchange({"job_id": _JOB_ID}, _JOB),
    "job/list": Exchange({"state": "completed", "limit": 1}, {"jobs": [_JOB]}),
    "job/subscribe": Exchange(
        {"job_id": _JOB_ID, "after_seq": 2}, {"job_id": _JOB_ID, "next_seq": 7}
    ),
    "job/unsubscribe": Exchange({"job_id": _JOB_ID}, {}),
    "job/cancel": Exchange(
        {"job_id": _JOB_ID},
        {
            **_JOB,
            "state": "cancelled",
            "output_text": "Hel",
            "usage": None,
            "cost_usd": None,
            "error": {
                "code": -32041,
                "message": "the job was cancelled; submit it again to retry",
                "data": {"kind": "cancelled", "retryable": False},
            },
        },
    ),
    "ratelimits/read": Exchange({"provider": "openai"}, {"providers": [_LIMITS]}),
    "usage/read": Exchange(
        {"since": "2026-11-01", "group_by": ["model"]},
        {
            "rows": [
                {
                    "model": "gpt-5.1-codex-max",
                    "requests": 42,
                    "input_tokens": 51000,
                    "cached_input_tokens": 40000,
                    "output_tokens": 6100,
                    "reasoning_tokens": 2500,
                    "cost_usd": 0.0795,
                    "estimated": False,
                }
            ],
            "total": {
                "requests": 42,
                "input_tokens": 51000,
                "cached_input_tokens": 40000,
                "output_tokens": 6100,
                "reasoning_tokens": 2500,
                "cost_usd": 0.0795,
                "estimated": False,
            },
        },
    ),
    "gateway/token": Exchange({"rotate": False}, {"token": "cxg_3kq9V1xR7mT2pL8sZ0aB4nW6"}),
    "events/subscribe": Exchange({"topics": ["jobs", "config"]}, {}),
}

NOTIFICATION_EXAMPLES: Final[Mapping[str, Any]] = {
    "job/event": {
        "job_id": _JOB_ID,
        "seq": 3,
        "event": {"type": "response.output_text.delta", "delta": "Hel"},
    },
    "subscription/dropped": {"reason": "slow_consumer", "job_id": _JOB_ID, "next_seq": 120},
    "account/updated": {"mode": "chatgpt", "email": "ada@example.com", "plan_type": "plus"},
    "account/login_completed": {"login_id": "login_7Hq2", "success": True},
    "config/reloaded": {"generation": 4, "path": "/home/ada/.codex/config.toml"},
    "config/invalid": {
        "path": "/home/ada/.codex/config.toml",
        "error": "config.toml line 12: [codexd] max_conections: unknown key "
        "(did you mean max_connections?)",
    },
    "ratelimits/updated": _LIMITS,
    "job/created": {
        "job": {
            **_JOB_NO_TEXT,
            "state": "queued",
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "usage": None,
            "cost_usd": None,
        }
    },
    "job/finished": {"job": _JOB_NO_TEXT},
}

ERROR_EXAMPLE: Final[dict[str, Any]] = {
    "jsonrpc": "2.0",
    "id": 7,
    "error": {
        "code": -32602,
        "message": "invalid params for job/get: Object missing required field `job_id`",
        "data": {"kind": "invalid_params", "retryable": False},
    },
}
