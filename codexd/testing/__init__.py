"""Loopback fakes of OpenAI's HTTP services for tests, benchmarks and `codexd demo`.

`fake_openai.FakeOpenAI` plays the API (Responses, Chat Completions, models, the ChatGPT
backend's codex/responses) with scriptable faults; `fake_issuer.FakeIssuer` plays the OAuth
issuer (authorize, token grants with single-use refresh tokens, revoke, device code), alone or
on the same server. `http` is the small HTTP/1.1 server both run on. Import from the submodules.
"""
