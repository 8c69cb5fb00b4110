"""How many streamed tokens per second can the load generator consume on one core?

The load generator must never be the bottleneck: a GPU serving a small model streams thousands of
tokens per second at c=16, and a client that tops out near that reports its own ceiling as the
server's throughput. This starts ``replay_server.py`` (vLLM's wire format, no model, never sleeps)
in a subprocess on one core, pins itself to another, and measures closed-loop rounds of
``--requests`` streaming chat requests of ``--tokens`` tokens each with two clients:

* ``specguard``: :func:`specguard.measure.load.run_load`, the suite's measuring path, run as the suite runs
  it (``asyncio.run`` per round); every round is also checked: each request's token count (from
  ``usage``) and its number of inter-token gaps must match what the replay sent;
* ``openai``: ``AsyncOpenAI`` streaming the same requests with the same concurrency and the same
  per-chunk timing work.

Tokens per second = usage completion tokens of the round / wall time of the round. Usage::

    python benchmarks/bench_client.py                      # c=1 and c=16, 3 repeats, both clients
    python benchmarks/bench_client.py --json results/client.json --require-tok-s 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing specguard
    sys.path.insert(0, str(REPO))

from specguard.measure.load import LoadSpec, run_load  # noqa: E402
from specguard.config.prompts import Prompt  # noqa: E402

REPLAY = Path(__file__).resolve().parent / "replay_server.py"
SCHEMA_VERSION = 1
CLIENTS = ("specguard", "openai")
MODEL = "replay"
USER_TURN = "Tell me a long story about a fox."


class BenchError(RuntimeError):
    """The replay server would not start, or a client's counts disagree with what was sent."""


# --- the replay server, as a context manager that cannot leak its process ---------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ReplayServer:
    """``replay_server.py`` in its own process group, pinned to ``cpu`` when given.

    >>> with ReplayServer(tokens_per_request=256, chunk_tokens=1, cpu=0) as server:
    ...     print(server.base_url)
    """

    def __init__(self, *, tokens_per_request: int, chunk_tokens: int, cpu: int | None,
                 events_per_write: int = 64, startup_timeout_s: float = 30.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, str(REPLAY), "--port", str(self.port),
                    "--tokens-per-request", str(tokens_per_request), "--chunk-tokens", str(chunk_tokens),
                    "--events-per-write", str(events_per_write)]
        self.cpu = cpu
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ReplayServer:
        cpu = self.cpu
        preexec: Callable[[], None] | None = None
        if cpu is not None:
            def preexec() -> None:
                os.sched_setaffinity(0, {cpu})
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True, preexec_fn=preexec)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        url = f"{self.base_url}/health"
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                raise BenchError(f"replay server exited with code {code} before {url} answered: "
                                 f"{' '.join(self.cmd)}\n{err}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise BenchError(f"replay server did not answer {url} within {self.startup_timeout_s:.0f} s: "
                         f"{' '.join(self.cmd)}")

    def stop(self) -> None:
        """SIGTERM to the whole process group, then SIGKILL after 5 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc.stderr:
            proc.stderr.close()


# --- one round per client ---------------------------------------------------------------------

@dataclass(frozen=True)
class Round:
    client: str
    concurrency: int
    tokens: int
    duration_s: float
    cpu_s: float  # the client process's CPU time over the round (asyncio.run included)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.duration_s

    @property
    def tok_cpu_s(self) -> float:
        """Tokens per CPU second: the ceiling on a core of its own, whatever else shared it."""
        return self.tokens / self.cpu_s if self.cpu_s > 0 else float("inf")


def prompts_for(requests: int) -> list[Prompt]:
    return [Prompt(f"replay-{i}", "replay", (USER_TURN,)) for i in range(requests)]


def chunks_per_reply(tokens: int, chunk_tokens: int) -> int:
    """Chunks with choices the replay sends per request: the role chunk, then one per K tokens."""
    return 1 + math.ceil(tokens / chunk_tokens)


def specguard_round(base_url: str, concurrency: int, requests: int, tokens: int, chunk_tokens: int) -> Round:
    spec = LoadSpec(base_url=base_url, model=MODEL, concurrency=concurrency, max_tokens=tokens)
    prompts = prompts_for(requests)
    cpu0 = time.process_time()
    result = asyncio.run(run_load(spec, prompts))
    cpu_s = time.process_time() - cpu0
    if result.failed:
        raise BenchError(f"specguard: {result.failed} of {len(result.requests)} requests failed:\n"
                         + "\n".join(result.errors()[:5]))
    gaps = chunks_per_reply(tokens, chunk_tokens) - 1
    for r in result.requests:
        if r.output_tokens != tokens or len(r.itl_s) != gaps:
            raise BenchError(f"specguard: request {r.prompt_id} counted {r.output_tokens} tokens and "
                             f"{len(r.itl_s)} inter-token gaps; the replay sent {tokens} tokens in "
                             f"{gaps + 1} chunks ({gaps} gaps)")
    if len(result.requests) != requests:
        raise BenchError(f"specguard: {len(result.requests)} results for {requests} requests")
    return Round("specguard", concurrency, result.output_tokens, result.duration_s, cpu_s)


async def _openai_load(base_url: str, concurrency: int, requests: int, tokens: int,
                       chunk_tokens: int) -> tuple[int, float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    messages: list[Any] = [{"role": "user", "content": USER_TURN}]
    expected_chunks = chunks_per_reply(tokens, chunk_tokens)
    total = 0

    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="replay", max_retries=0,
                                  timeout=600.0) as client:
        async def one() -> int:
            # the same per-chunk work as run_load: a timestamp, TTFT or one gap, usage at the end
            t0 = time.perf_counter()
            last, ttft, itl, used, chunks = t0, 0.0, [], 0, 0
            stream = await client.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=tokens, temperature=0.0, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            async for chunk in stream:
                now = time.perf_counter()
                if chunk.choices:
                    chunks += 1
                    if ttft == 0.0:
                        ttft = now - t0
                    else:
                        itl.append(now - last)
                    last = now
                elif chunk.usage:
                    used = chunk.usage.completion_tokens
            if used != tokens or chunks != expected_chunks:
                raise BenchError(f"openai: counted {used} tokens in {chunks} chunks; the replay sent "
                                 f"{tokens} tokens in {expected_chunks} chunks")
            return used

        async def worker() -> None:
            nonlocal total
            while not queue.empty():
                queue.get_nowait()
                used = await one()  # not `total += await one()`: that reads total before awaiting
                total += used

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
        duration = time.perf_counter() - t0
    return total, duration


def openai_round(base_url: str, concurrency: int, requests: int, tokens: int, chunk_tokens: int) -> Round:
    cpu0 = time.process_time()
    total, duration = asyncio.run(_openai_load(base_url, concurrency, requests, tokens, chunk_tokens))
    return Round("openai", concurrency, total, duration, time.process_time() - cpu0)


ROUNDS: dict[str, Callable[[str, int, int, int, int], Round]] = {
    "specguard": specguard_round,
    "openai": openai_round,
}


# --- the benchmark ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    client: str
    concurrency: int
    samples_tok_s: tuple[float, ...]
    samples_tok_cpu_s: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_tok_s)

    @property
    def median_tok_cpu_s(self) -> float:
        return statistics.median(self.samples_tok_cpu_s)

    def to_json(self) -> dict[str, Any]:
        return {"client": self.client, "concurrency": self.concurrency,
                "samples_tok_s": list(self.samples_tok_s), "median_tok_s": self.median,
                "min_tok_s": min(self.samples_tok_s), "max_tok_s": max(self.samples_tok_s),
                "samples_tok_per_cpu_s": list(self.samples_tok_cpu_s),
                "median_tok_per_cpu_s": self.median_tok_cpu_s}


def run_benchmark(args: argparse.Namespace, base_url: str,
                  progress: Callable[[str], None] = lambda s: None) -> list[Summary]:
    summaries = []
    for client in args.clients:
        for c in args.concurrency:
            measure = ROUNDS[client]
            for _ in range(args.warmup):  # connections, imports and caches warm, not measured
                measure(base_url, c, max(c, min(args.requests, 2 * c)), args.tokens, args.chunk_tokens)
            rounds = [measure(base_url, c, args.requests, args.tokens, args.chunk_tokens)
                      for _ in range(args.repeats)]
            summaries.append(Summary(client, c, tuple(r.tok_s for r in rounds),
                                     tuple(r.tok_cpu_s for r in rounds)))
            progress(f"{client:>9} c={c:<3} {', '.join(f'{r.tok_s:,.0f}' for r in rounds)} tok/s "
                     f"({', '.join(f'{r.tok_cpu_s:,.0f}' for r in rounds)} per CPU second)")
    return summaries


def format_table(summaries: Sequence[Summary]) -> str:
    lines = [f"{'client':<10} {'concurrency':>11} {'median tok/s':>13} {'min':>10} {'max':>10} "
             f"{'tok/CPU-s':>10}"]
    for s in summaries:
        lines.append(f"{s.client:<10} {s.concurrency:>11} {s.median:>13,.0f} "
                     f"{min(s.samples_tok_s):>10,.0f} {max(s.samples_tok_s):>10,.0f} "
                     f"{s.median_tok_cpu_s:>10,.0f}")
    return "\n".join(lines)


def environment(client_cpu: int | None, server_cpu: int | None) -> dict[str, Any]:
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "openai": openai.__version__, "cpu": cpu_model, "cpu_count": os.cpu_count(),
            "client_cpu": client_cpu, "server_cpu": server_cpu, "platform": platform.platform()}


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Could not parse value: {value!r}. Expected a positive integer.")
    if n < 1:
        raise argparse.ArgumentTypeError(f"Invalid value: {value!r}. Expected a positive integer.")
    return n


def _int_list(value: str) -> list[int]:
    try:
        out = [_positive_int(v) for v in value.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"Could not parse value: {value!r}. "
                                         "Expected positive integers separated by commas, e.g. '1,16'.")
    return out


def _clients(value: str) -> list[str]:
    out = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in out if v not in CLIENTS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"Unknown client(s) in {value!r}. Expected a comma-separated "
                                         f"subset of {','.join(CLIENTS)}.")
    return out


def _cpu(value: str) -> int | None | str:
    """A CPU number, None for 'none' (unpinned), or 'auto' (resolved in :func:`parse_args`)."""
    if value.lower() in ("none", "auto"):
        return None if value.lower() == "none" else "auto"
    try:
        cpu = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Could not parse value: {value!r}. "
                                         "Expected a CPU number, 'auto' or 'none'.")
    if cpu not in os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"CPU {cpu} is not available to this process "
                                         f"(available: {sorted(os.sched_getaffinity(0))}).")
    return cpu


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=_positive_int, default=64, metavar="N",
                   help="Requests per round. Default: %(default)r")
    p.add_argument("--tokens", type=_positive_int, default=256, metavar="T",
                   help="Tokens per reply (the request's max_tokens). Default: %(default)r")
    p.add_argument("--chunk-tokens", type=_positive_int, default=1, metavar="K",
                   help="Tokens per streamed chunk (K > 1 mimics speculative decoding). Default: %(default)r")
    p.add_argument("--events-per-write", type=_positive_int, default=64, metavar="E",
                   help="Events per socket write of the replay (1: each alone). Default: %(default)r")
    p.add_argument("--concurrency", type=_int_list, default=[1, 16], metavar="C,...",
                   help="Requests in flight, one measurement each. Default: 1,16")
    p.add_argument("--repeats", type=_positive_int, default=3, metavar="R",
                   help="Measured rounds per client and concurrency. Default: %(default)r")
    p.add_argument("--warmup", type=int, default=1, metavar="W",
                   help="Short unmeasured rounds before each measurement. Default: %(default)r")
    p.add_argument("--clients", type=_clients, default=list(CLIENTS), metavar="NAME,...",
                   help=f"Clients to measure. Default: {','.join(CLIENTS)}")
    p.add_argument("--client-cpu", type=_cpu, default="auto", metavar="CPU",
                   help="Core the client runs on ('none': unpinned; 'auto': the last available core). "
                        "Default: %(default)r")
    p.add_argument("--server-cpu", type=_cpu, default="auto", metavar="CPU",
                   help="Core the replay server runs on ('none': unpinned; 'auto': the first available "
                        "core, when there are two or more). Default: %(default)r")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="Also write the results, raw samples and environment here. Default: %(default)r")
    p.add_argument("--require-tok-s", type=float, default=None, metavar="X",
                   help="Exit 1 when specguard's median is below X tok/s at any concurrency. "
                        "Default: %(default)r")
    args = p.parse_args(argv)
    if args.warmup < 0:
        p.error(f"--warmup: invalid value {args.warmup!r}. Expected 0 or more.")
    cpus = sorted(os.sched_getaffinity(0))
    if args.client_cpu == "auto":
        args.client_cpu = cpus[-1]
    if args.server_cpu == "auto":
        args.server_cpu = cpus[0] if len(cpus) > 1 else None
    if args.client_cpu is not None and args.client_cpu == args.server_cpu:
        print(f"warning: client and replay server share CPU {args.client_cpu}; the client's ceiling "
              "will read low", file=sys.stderr)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with ReplayServer(tokens_per_request=args.tokens, chunk_tokens=args.chunk_tokens,
                      events_per_write=args.events_per_write, cpu=args.server_cpu) as server:
        if args.client_cpu is not None:  # after the server's fork, so only the client is pinned here
            os.sched_setaffinity(0, {args.client_cpu})
        print(f"replay {server.base_url} on CPU {args.server_cpu}, client on CPU {args.client_cpu}; "
              f"{args.requests} requests x {args.tokens} tokens, {args.chunk_tokens} token(s)/chunk, "
              f"{args.repeats} repeats", file=sys.stderr)
        summaries = run_benchmark(args, server.base_url, progress=lambda s: print(s, file=sys.stderr))
    print(format_table(summaries))
    if args.json is not None:
        doc = {"version": SCHEMA_VERSION, "benchmark": "client-replay",
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "config": {"requests": args.requests, "tokens": args.tokens, "chunk_tokens": args.chunk_tokens,
                          "events_per_write": args.events_per_write, "repeats": args.repeats, "warmup": args.warmup},
               "environment": environment(args.client_cpu, args.server_cpu),
               "results": [s.to_json() for s in summaries]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    if args.require_tok_s is not None:
        low = [s for s in summaries if s.client == "specguard" and s.median < args.require_tok_s]
        for s in low:
            print(f"specguard at c={s.concurrency}: median {s.median:,.0f} tok/s is below "
                  f"--require-tok-s {args.require_tok_s:,.0f}", file=sys.stderr)
        if low:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
