"""Closed-loop load: a fixed number of streaming chat requests in flight, measured per request.

The measuring path uses aiohttp and reads the server-sent events itself: the openai client
tops out near 10k streamed tokens/s on one core, below what one GPU serves at c=16
(``benchmarks/bench_client.py`` measures both against a local replay server).

Definitions match ``vllm bench serve``: output throughput = completed output tokens (from the
server's ``usage``) / wall time of the round; TTFT = time to the first chunk carrying choices;
ITL = gaps between later chunks (a chunk may carry several tokens under speculative decoding).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from specguard.config.prompts import Prompt, conversation

STALE_RETRIES = 2  # fresh connections tried after a connection fails before any response


@dataclass(frozen=True)
class RequestResult:
    prompt_id: str
    turn: int
    ok: bool
    error: str | None
    ttft_s: float
    latency_s: float
    itl_s: tuple[float, ...]
    output_tokens: int

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first, as vllm bench serve defines it."""
        if not self.ok or self.output_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class RoundResult:
    requests: tuple[RequestResult, ...]
    duration_s: float
    concurrency: int

    @property
    def completed(self) -> int:
        return sum(r.ok for r in self.requests)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.requests)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.requests if r.ok)

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0

    def errors(self) -> list[str]:
        return [f"{r.prompt_id} (turn {r.turn}): {r.error}" for r in self.requests if not r.ok]


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    model: str
    concurrency: int
    max_tokens: int
    api_key: str | None = None
    request_timeout_s: float = 600.0
    ignore_eos: bool = True
    seed: int = 0


def chat_payload(spec: LoadSpec, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "model": spec.model,
        "messages": messages,
        "max_tokens": spec.max_tokens,
        "temperature": 0.0,
        "seed": spec.seed,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": spec.ignore_eos,
    }


async def _sse_reads(content: aiohttp.StreamReader) -> AsyncIterator[tuple[float, list[bytes]]]:
    """Per network read: when it arrived, and the whole lines it completed (a last line may lack
    its newline). Reading whatever has arrived and splitting it here costs a fraction of
    ``readline`` per line, which held the client near the serving rate of one GPU."""
    rest = b""
    async for data in content.iter_any():
        now = time.perf_counter()
        lines = (rest + data).split(b"\n") if rest else data.split(b"\n")
        rest = lines.pop()
        yield now, lines
    if rest:
        yield time.perf_counter(), [rest]


async def _stream_chat(session: aiohttp.ClientSession, spec: LoadSpec, prompt_id: str, turn: int,
                       messages: list[dict[str, str]], want_text: bool) -> tuple[RequestResult, str]:
    """One streaming request. A chunk's time is when the read that completed it returned, so
    chunks that arrive together share a time (an ITL of 0), as they would on the wire.

    Only chunks without choices (usage, errors) are parsed: a chunk with choices is recognised
    by vLLM's compact ``"choices":[{``, and parsed only when its text is wanted. Any other
    spelling takes the parsing path, so a server with other JSON spacing is still measured right.
    """
    payload = chat_payload(spec, messages)
    for attempt in range(1 + STALE_RETRIES):
        try:
            t0 = time.perf_counter()
            resp = await session.post(f"{spec.base_url}/v1/chat/completions", json=payload)
            break
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            # No response yet: the request never reached the engine. The usual cause is a pooled
            # keep-alive connection the server closed as it was reused (uvicorn closes idle ones
            # after 5 s); aiohttp does not retry a POST itself. A fresh connection is safe.
            if attempt == STALE_RETRIES:
                return _failed(prompt_id, turn, t0, f"{type(exc).__name__}: {exc} "
                                                    f"(after {attempt + 1} attempts)"), ""
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return _failed(prompt_id, turn, t0, f"{type(exc).__name__}: {exc}"), ""
    ttft = 0.0
    last = t0
    itl: list[float] = []
    tokens = 0
    text: list[str] = []
    try:
        async with resp:
            if resp.status != 200:
                body = (await resp.text())[:500]
                return _failed(prompt_id, turn, t0, f"HTTP {resp.status}: {body}"), ""
            done = False
            async for now, lines in _sse_reads(resp.content):
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue  # the blank line ending each event, comments, other fields
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    if b'"choices":[{' in data:
                        has_choices = True
                        chunk = json.loads(data) if want_text else None
                    else:
                        chunk = json.loads(data)
                        if not isinstance(chunk, dict):
                            return _failed(prompt_id, turn, t0, f"not a chunk: {data[:200]!r}"), ""
                        has_choices = bool(chunk.get("choices"))
                    if has_choices:
                        if ttft == 0.0:
                            ttft = now - t0
                        else:
                            itl.append(now - last)
                        if chunk is not None:
                            text.append(chunk["choices"][0].get("delta", {}).get("content") or "")
                        last = now
                    elif chunk is not None and chunk.get("usage"):
                        tokens = int(chunk["usage"].get("completion_tokens") or 0)
                    elif chunk is not None and "error" in chunk:
                        return _failed(prompt_id, turn, t0, f"stream error: {chunk['error']}"), ""
                if done:
                    break
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return _failed(prompt_id, turn, t0, f"{type(exc).__name__}: {exc}"), ""
    latency = time.perf_counter() - t0
    if tokens == 0:
        return _failed(prompt_id, turn, t0, "stream ended without usage (completion_tokens)"), ""
    return RequestResult(prompt_id, turn, True, None, ttft, latency, tuple(itl), tokens), "".join(text)


def _failed(prompt_id: str, turn: int, t0: float, error: str) -> RequestResult:
    return RequestResult(prompt_id, turn, False, error, 0.0, time.perf_counter() - t0, (), 0)


async def _run_prompt(session: aiohttp.ClientSession, spec: LoadSpec, prompt: Prompt) -> list[RequestResult]:
    """All turns of one prompt, in order: each reply is appended before the next user turn."""
    results: list[RequestResult] = []
    replies: list[str] = []
    for turn in range(len(prompt.turns)):
        messages = conversation(prompt, replies)
        result, text = await _stream_chat(session, spec, prompt.id, turn, messages,
                                           want_text=turn + 1 < len(prompt.turns))
        results.append(result)
        if not result.ok:
            break
        replies.append(text)
    return results


async def run_load(spec: LoadSpec, prompts: Sequence[Prompt],
                   on_done: Callable[[int, int], None] | None = None) -> RoundResult:
    """Send every prompt once with ``spec.concurrency`` in flight; the round's clock covers them all."""
    queue: asyncio.Queue[Prompt] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    results: list[RequestResult] = []
    total = len(prompts)
    done = 0
    connector = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)

    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout,
                                     read_bufsize=1 << 16) as session:
        async def worker() -> None:
            while True:
                try:
                    prompt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results.extend(await _run_prompt(session, spec, prompt))
                nonlocal done
                done += 1
                if on_done is not None:
                    on_done(done, total)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, total))))
        duration = time.perf_counter() - t0
    return RoundResult(tuple(results), duration, spec.concurrency)


T = TypeVar("T")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, except that Ctrl-C always ends it with KeyboardInterrupt.

    Since Python 3.11 asyncio turns the first SIGINT into a cancellation of the main task and
    raises KeyboardInterrupt only if that cancellation comes back out; a library that swallows it
    somewhere down the stack makes the run return normally and the interrupt is lost (pytest then
    goes on measuring). Here SIGINT raises KeyboardInterrupt where the main thread is, as the
    default handler does; asyncio then cancels the remaining tasks and closes the loop."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return asyncio.run(coro)   # someone else handles SIGINT here
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return asyncio.run(coro)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def round_prompts(prompts: Sequence[Prompt], count: int) -> list[Prompt]:
    """``count`` prompts, cycling through ``prompts`` when there are fewer (ids stay unique)."""
    if not prompts:
        raise ValueError("no prompts to send")
    out = []
    for i in range(count):
        p = prompts[i % len(prompts)]
        lap = i // len(prompts)
        out.append(p if lap == 0 else Prompt(f"{p.id}#{lap}", p.category, p.turns, p.system))
    return out
