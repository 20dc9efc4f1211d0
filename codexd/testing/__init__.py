"""Loopback fakes of OpenAI's HTTP services for tests, benchmarks and `codexd demo`.

`fake_openai.FakeOpenAI` plays the API (Responses, Chat Completions, models, the ChatGPT
backend's codex/responses) with scriptable faults. Import what you need from the submodules.
"""
