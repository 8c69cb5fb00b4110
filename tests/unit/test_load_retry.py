"""A request whose connection fails before any response is retried on a fresh connection; one that
fails every time is reported with its attempts. Against a real local TCP server."""

from __future__ import annotations

import asyncio
import json

from specguard.measure.load import STALE_RETRIES, LoadSpec, run_load, run_sync
from specguard.config.prompts import Prompt

SSE = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in (
    {"choices": [{"delta": {"content": "hi"}}]},
    {"choices": [{"delta": {"content": " there"}}]},
    {"choices": [], "usage": {"completion_tokens": 2}},
)) + b"data: [DONE]\n\n"


async def _serve(close_first: int) -> tuple[list[int], int]:
    """Serve one request; the first ``close_first`` connections are closed as soon as the request
    line arrives (as a server does with a keep-alive connection it has just timed out)."""
    seen = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[0] += 1
        head = await reader.readuntil(b"\r\n\r\n")
        if seen[0] <= close_first:
            writer.close()
            return
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     + f"Content-Length: {len(SSE)}\r\n\r\n".encode() + SSE)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = LoadSpec(base_url=f"http://127.0.0.1:{port}", model="m", concurrency=1, max_tokens=2,
                    api_key=None, request_timeout_s=10.0, ignore_eos=True)
    async with server:
        result = await run_load(spec, [Prompt(id="p", category="c", turns=("hello",))])
    return seen, result


def test_a_connection_closed_before_the_response_is_retried() -> None:
    seen, result = run_sync(_serve(close_first=STALE_RETRIES))
    assert seen[0] == STALE_RETRIES + 1
    assert result.failed == 0 and result.requests[0].output_tokens == 2


def test_a_server_that_always_closes_fails_with_the_attempts() -> None:
    seen, result = run_sync(_serve(close_first=STALE_RETRIES + 1))
    assert seen[0] == STALE_RETRIES + 1
    assert result.failed == 1
    assert f"after {STALE_RETRIES + 1} attempts" in (result.requests[0].error or "")
