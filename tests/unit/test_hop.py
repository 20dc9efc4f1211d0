"""codexd marks the requests it sends upstream, and its gateway knows its own mark."""

from __future__ import annotations

from codexd.auth.session import Credentials
from codexd.auth.tokens import Secret
from codexd.config.schema import ProviderConfig
from codexd.hop import HOP, HOP_HEADER, is_own_hop
from codexd.upstream.runner import request_headers


def test_api_key_requests_carry_the_mark_and_the_gateway_knows_it() -> None:
    key = Credentials(mode="api_key", source="env", bearer=Secret("sk-test-0000"))
    headers = request_headers(ProviderConfig(), key, {})
    assert headers[HOP_HEADER] == HOP
    # The gateway sees header names lower-cased.
    assert is_own_hop({k.lower(): v for k, v in headers.items()})


def test_another_value_or_none_is_not_ours() -> None:
    assert not is_own_hop({"x-codexd-hop": "0" * 16})
    assert not is_own_hop({})


def test_chatgpt_requests_look_like_codexs_own() -> None:
    login = Credentials(
        mode="chatgpt", source="auth_file", bearer=Secret("at-0000"), account_id="acct"
    )
    headers = request_headers(ProviderConfig(), login, {})
    assert HOP_HEADER not in headers
