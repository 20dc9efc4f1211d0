"""Talking to the model provider.

Pure parts (no I/O): `sse` (bytes → events), `errors` (every failure → an `UpstreamError`
with an error kind), `retry` (what to do after a failed attempt), `wire` (request bodies,
usage, the normaliser base), `responses` and `chat` (each wire API's stream → job events).
`client` is the httpx shell that drives them.
"""
