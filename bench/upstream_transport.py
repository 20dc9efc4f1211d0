"""CPU per streamed upstream request: httpx's AsyncClient vs codexd's Http11Transport.

One fake OpenAI (a separate process, pinned to core 1) streams a 6-delta chat reply;
this process, pinned to core 0, sends the same request through each way, sequentially and
16 at a time on one pool, reading each body to its end. Prints CPU time and wall time per
request (this process's CPU, so the fake's share is not in it), never asserts.

    .venv/bin/python bench/upstream_transport.py [--requests N]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx
from gateway import start_fake  # bench/gateway.py: the fake as a process, pinned to core 1

from codexd.upstream.transport import Http11Transport

BODY = b'{"model":"gpt-5","messages":[{"role":"user","content":"hi"}],"stream":true}'
HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}
TIMEOUTS = {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": None}


async def through_client(url: str, n: int, concurrency: int) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10)) as client:

        async def one() -> None:
            request = client.build_request("POST", url, headers=HEADERS, content=BODY)
            response = await client.send(request, stream=True)
            async for _ in response.aiter_raw():
                pass
            await response.aclose()

        await run(one, n, concurrency)


async def through_transport(url: str, n: int, concurrency: int) -> None:
    transport = Http11Transport()

    async def one() -> None:
        request = httpx.Request(
            "POST", url, headers=HEADERS, content=BODY, extensions={"timeout": TIMEOUTS}
        )
        response = await transport.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        async for _ in response.stream:
            pass
        await response.aclose()

    await run(one, n, concurrency)
    await transport.aclose()


async def run(one: Callable[[], Awaitable[None]], n: int, concurrency: int) -> None:
    async def worker() -> None:
        for _ in range(n // concurrency):
            await one()

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1600)
    n = parser.parse_args().requests
    try:
        os.sched_setaffinity(0, {0})
    except (AttributeError, OSError):
        pass
    fake, base_url = start_fake(0.0)
    url = base_url.rstrip("/") + "/chat/completions"
    try:
        print(f"{n} streamed chat requests (6 deltas) to the fake, per request:")
        for concurrency in (1, 16):
            cpu: dict[str, float] = {}
            for name, way in (
                ("httpx.AsyncClient", through_client),
                ("Http11Transport", through_transport),
            ):
                anyio.run(way, url, max(n // 8, concurrency), concurrency)  # warm up
                wall0, cpu0 = time.perf_counter(), time.process_time()
                anyio.run(way, url, n, concurrency)
                wall, cpu[name] = time.perf_counter() - wall0, time.process_time() - cpu0
                print(
                    f"  c={concurrency:<2d} {name:18s} CPU {cpu[name] / n * 1e6:7.1f} µs"
                    f"   wall {wall / n * 1e6:7.1f} µs"
                )
            ratio = cpu["httpx.AsyncClient"] / cpu["Http11Transport"]
            print(f"  c={concurrency:<2d} CPU httpx.AsyncClient / Http11Transport: {ratio:.2f}x")
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
