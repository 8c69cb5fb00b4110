"""A replay server: vLLM's streaming chat-completions wire format with no model behind it.

It answers as fast as it can, so that a client reading from it measures its own ceiling: how many
streamed tokens per second it can consume. Used by ``bench_client.py``; also runnable alone::

    python benchmarks/replay_server.py --port 8123 --tokens-per-request 256 --chunk-tokens 1

``POST /v1/chat/completions`` with ``stream: true`` answers exactly as vLLM's OpenAI server does
(``model_dump_json(exclude_unset=True)``, compact JSON, one ``data: <json>\\n\\n`` event per
write, so one HTTP chunk per event): a role chunk ``delta: {role: assistant, content: ""}``; one
chunk per ``--chunk-tokens`` tokens (more than one stands for speculative decoding, where a step
can emit several tokens); the last of them carries ``finish_reason: "length"``; then, when
``stream_options.include_usage`` is set, the usage chunk (``choices: []``); then ``data: [DONE]``.
A request's ``max_tokens`` (or ``max_completion_tokens``) sets its token count; without one,
``--tokens-per-request``. It never sleeps. ``stream: false`` gets one ``chat.completion`` object.

``GET /health`` answers 200 and ``GET /metrics`` an empty text page.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import sys
import time
from collections.abc import Sequence

from aiohttp import web

HIGH_WATER = 1 << 20  # bytes queued for one client before the replay waits for it

WORDS = ("the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ".", "\n",
         " \"quoted\"", " café")  # a quote and a non-ASCII word keep clients' JSON escaping honest


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Could not parse value: {value!r}. Expected a positive integer.")
    if n < 1:
        raise argparse.ArgumentTypeError(f"Invalid value: {value!r}. Expected a positive integer.")
    return n


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Could not parse value: {value!r}. Expected a port, 0-65535.")
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"Invalid port: {value!r}. Expected 0-65535 (0 picks a free one).")
    return n


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def stream_events(request_id: str, model: str, created: int, n_tokens: int, chunk_tokens: int,
                  prompt_tokens: int, include_usage: bool) -> list[bytes]:
    """The whole stream of one request, one SSE event per item (``data: ...\\n\\n``)."""
    head = f'data: {{"id":{_dumps(request_id)},"object":"chat.completion.chunk","created":{created},' \
           f'"model":{_dumps(model)},"choices":[{{"index":0,"delta":'
    events = [f'{head}{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}\n\n']
    words = itertools.cycle(WORDS)
    sent = 0
    while sent < n_tokens:
        k = min(chunk_tokens, n_tokens - sent)
        sent += k
        text = _dumps("".join(next(words) for _ in range(k)))
        if sent < n_tokens:
            tail = '"logprobs":null,"finish_reason":null}]}'
        else:
            tail = '"logprobs":null,"finish_reason":"length","stop_reason":null}]}'
        events.append(f'{head}{{"content":{text}}},{tail}\n\n')
    if include_usage:
        events.append(usage_event(request_id, model, created, prompt_tokens, n_tokens).decode())
    events.append("data: [DONE]\n\n")
    return [e.encode() for e in events]


def usage_event(request_id: str, model: str, created: int, prompt_tokens: int, n_tokens: int) -> bytes:
    """The last chunk before ``[DONE]`` when ``stream_options.include_usage`` is set."""
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + n_tokens,
             "completion_tokens": n_tokens}
    return (f'data: {{"id":{_dumps(request_id)},"object":"chat.completion.chunk","created":{created},'
            f'"model":{_dumps(model)},"choices":[],"usage":{_dumps(usage)}}}\n\n').encode()


def _prompt_tokens(messages: object) -> int:
    """A rough count (words): the replay has no tokenizer, and no client here checks it."""
    if not isinstance(messages, list):
        return 0
    return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))


def _bad_request(message: str) -> web.Response:
    body = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    return web.json_response(body, status=400)


_ID_MARK, _CREATED_MARK = b"chatcmpl-replay-@@@@@@@@@@@@", b"<CREATED!>"  # the widths of the real ones


def _frame(event: bytes) -> bytes:
    """One HTTP/1.1 chunk, as uvicorn sends each string vLLM yields."""
    return b"%x\r\n%b\r\n" % (len(event), event)


@functools.lru_cache(maxsize=64)
def _rendered(model: str, n_tokens: int, chunk_tokens: int, events_per_write: int) -> tuple[bytes, ...]:
    """The role and token chunks of a stream, framed and joined ``events_per_write`` at a time.

    Rendered once per shape with marks where the id and time go (same widths, so the chunk
    lengths stay right): per request the replay only substitutes them, so it outruns any client.
    """
    events = stream_events(_ID_MARK.decode(), model, 0, n_tokens, chunk_tokens, 0, include_usage=False)
    framed = [_frame(e.replace(b'"created":0,', b'"created":%b,' % _CREATED_MARK)) for e in events[:-1]]
    assert len(framed) == 1 + -(-n_tokens // chunk_tokens)  # role + token chunks, no [DONE]
    return tuple(b"".join(framed[i:i + events_per_write]) for i in range(0, len(framed), events_per_write))


def build_app(tokens_per_request: int = 256, chunk_tokens: int = 1,
              events_per_write: int = 64) -> web.Application:
    """The replay's aiohttp app; ``tokens_per_request`` applies when a request has no ``max_tokens``."""
    counter = itertools.count()

    async def chat(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError as exc:
            return _bad_request(f"request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _bad_request("request body must be a JSON object")
        n_tokens = body.get("max_tokens")
        if n_tokens is None:
            n_tokens = body.get("max_completion_tokens")
        if n_tokens is None:
            n_tokens = tokens_per_request
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
            return _bad_request(f"max_tokens must be a positive integer, got {n_tokens!r}")
        model = str(body.get("model") or "replay")
        request_id = f"chatcmpl-replay-{next(counter) % 10**12:012d}"
        created = int(time.time())
        prompt_tokens = _prompt_tokens(body.get("messages"))
        if not body.get("stream"):
            text = "".join(itertools.islice(itertools.cycle(WORDS), n_tokens))
            return web.json_response({
                "id": request_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": "length", "stop_reason": None}],
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + n_tokens,
                          "completion_tokens": n_tokens},
            })
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        # the usage chunk (it carries this prompt's count) and [DONE], rendered per request
        tail = _frame(b"data: [DONE]\n\n")
        if include_usage:
            tail = _frame(usage_event(request_id, model, created, prompt_tokens, n_tokens)) + tail
        rid, stamp = request_id.encode(), b"%d" % created
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(b"")  # the headers alone; the body below is framed already
        transport = request.transport
        # aiohttp's own write costs ~20 us per event, slower than the client under test; each
        # event is still its own HTTP chunk, but events_per_write of them go out per syscall.
        for batch in _rendered(model, n_tokens, chunk_tokens, events_per_write) + (tail,):
            if transport is None or transport.is_closing():
                return resp  # the client went away
            transport.write(batch.replace(_ID_MARK, rid).replace(_CREATED_MARK, stamp))
            # Yield only when the client is more than HIGH_WATER behind: it has plenty to read.
            while transport.get_write_buffer_size() > HIGH_WATER and not transport.is_closing():
                await asyncio.sleep(0.0005)
        await resp.write_eof()  # the terminating zero-length chunk
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="", content_type="text/plain")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=_port, default=8123, metavar="N",
                        help="Port on 127.0.0.1 (0 picks a free one). Default: %(default)r")
    parser.add_argument("--tokens-per-request", type=_positive_int, default=256, metavar="T",
                        help="Tokens per reply when the request has no max_tokens. Default: %(default)r")
    parser.add_argument("--chunk-tokens", type=_positive_int, default=1, metavar="K",
                        help="Tokens per streamed chunk (K > 1 mimics speculative decoding). "
                             "Default: %(default)r")
    parser.add_argument("--events-per-write", type=_positive_int, default=64, metavar="E",
                        help="Events (each its own HTTP chunk) per socket write; 1 sends each alone, "
                             "as a server streaming slower than its client would. Default: %(default)r")
    return parser.parse_args(argv)


async def serve(port: int, tokens_per_request: int, chunk_tokens: int, events_per_write: int) -> None:
    runner = web.AppRunner(build_app(tokens_per_request, chunk_tokens, events_per_write), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"replay server listening on http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()  # until the process is signalled
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop  # the replay must outrun the client; uvloop is the faster loop when present
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(serve(args.port, args.tokens_per_request, args.chunk_tokens, args.events_per_write))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
