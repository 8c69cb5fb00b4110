"""specguard.measure.load: prompt cycling and the per-request / per-round figures, with exact values."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.measure.load import LoadSpec, RequestResult, RoundResult, chat_payload, round_prompts, run_sync
from specguard.config.prompts import Prompt

PROPS = settings(max_examples=50, deadline=None)

PROMPTS = [Prompt("coding-01", "coding", ("Write is_even.",)),
           Prompt("coding-02", "coding", ("Explain total.", "Now add types."), system="Be brief."),
           Prompt("math-01", "math", ("2+2?",))]


# --- round_prompts ---------------------------------------------------------------------------

def test_fewer_than_available() -> None:
    assert round_prompts(PROMPTS, 2) == PROMPTS[:2]
    assert round_prompts(PROMPTS, 0) == []


def test_exactly_available_is_the_same_objects() -> None:
    out = round_prompts(PROMPTS, 3)
    assert out == PROMPTS and all(a is b for a, b in zip(out, PROMPTS))


def test_cycling_gives_unique_ids() -> None:
    out = round_prompts(PROMPTS, 8)
    assert [p.id for p in out] == ["coding-01", "coding-02", "math-01",
                                   "coding-01#1", "coding-02#1", "math-01#1",
                                   "coding-01#2", "coding-02#2"]
    again = out[4]
    assert (again.category, again.turns, again.system) == \
        ("coding", ("Explain total.", "Now add types."), "Be brief.")


def test_empty_raises() -> None:
    with pytest.raises(ValueError, match="no prompts to send"):
        round_prompts([], 4)
    with pytest.raises(ValueError, match="no prompts to send"):
        round_prompts([], 0)


@PROPS
@given(n=st.integers(1, 5), count=st.integers(0, 40))
def test_round_prompts_properties(n: int, count: int) -> None:
    prompts = [Prompt(f"q{i}", "c" if i % 2 else "d", (f"turn {i}",)) for i in range(n)]
    out = round_prompts(prompts, count)
    assert len(out) == count
    assert len({p.id for p in out}) == count
    for i, p in enumerate(out):
        src = prompts[i % n]
        assert p.id.split("#")[0] == src.id and (p.category, p.turns) == (src.category, src.turns)


# --- RequestResult.tpot_s --------------------------------------------------------------------

def req(ok: bool = True, ttft: float = 0.25, latency: float = 2.25, tokens: int = 33,
        pid: str = "p", turn: int = 0, error: str | None = None) -> RequestResult:
    return RequestResult(pid, turn, ok, error, ttft, latency, (), tokens)


def test_tpot_exact() -> None:
    assert req().tpot_s == 0.0625                       # (2.25 - 0.25) / 32
    assert req(ttft=0.5, latency=1.5, tokens=2).tpot_s == 1.0


@pytest.mark.parametrize("result", [req(tokens=1), req(tokens=0), req(ok=False, error="HTTP 500")])
def test_tpot_undefined(result: RequestResult) -> None:
    assert result.tpot_s is None


# --- RoundResult -----------------------------------------------------------------------------

def test_round_result_exact_values() -> None:
    r = RoundResult((req(tokens=32, pid="a"), req(tokens=32, pid="b"),
                     req(ok=False, tokens=0, pid="c", turn=1, error="HTTP 500: boom"),
                     req(tokens=64, pid="d")), duration_s=4.0, concurrency=4)
    assert (r.completed, r.failed, r.output_tokens) == (3, 1, 128)
    assert r.output_throughput == 32.0
    assert r.errors() == ["c (turn 1): HTTP 500: boom"]


def test_failed_requests_do_not_count_tokens() -> None:
    r = RoundResult((req(tokens=10), req(ok=False, tokens=99, error="timeout")), duration_s=2.0,
                    concurrency=2)
    assert r.output_tokens == 10 and r.output_throughput == 5.0


def test_round_result_edge_cases() -> None:
    empty = RoundResult((), duration_s=0.0, concurrency=1)
    assert (empty.completed, empty.failed, empty.output_tokens, empty.output_throughput, empty.errors()) == \
        (0, 0, 0, 0.0, [])
    assert RoundResult((req(),), duration_s=0.0, concurrency=1).output_throughput == 0.0


@PROPS
@given(tokens=st.lists(st.integers(0, 10_000), max_size=20), oks=st.lists(st.booleans(), max_size=20),
       duration=st.floats(1e-3, 1e4))
def test_round_result_properties(tokens: list[int], oks: list[bool], duration: float) -> None:
    reqs = tuple(req(ok=ok, tokens=t) for t, ok in zip(tokens, oks))
    r = RoundResult(reqs, duration, 4)
    assert r.completed + r.failed == len(reqs) == len(r.errors()) + r.completed
    assert r.output_tokens == sum(t for t, ok in zip(tokens, oks) if ok)
    assert r.output_throughput == r.output_tokens / duration


# --- chat_payload ----------------------------------------------------------------------------

def test_chat_payload() -> None:
    spec = LoadSpec("http://127.0.0.1:1", "ngram4", concurrency=4, max_tokens=32)
    msgs = PROMPTS[1].first_messages()
    assert chat_payload(spec, msgs) == {
        "model": "ngram4", "messages": msgs, "max_tokens": 32, "temperature": 0.0, "seed": 0, "stream": True,
        "stream_options": {"include_usage": True}, "ignore_eos": True,
    }  # fmt: skip


# --- Ctrl-C during a round ---------------------------------------------------------------------------

@pytest.fixture(autouse=False)
def default_sigint():
    """Python's own SIGINT handler for the test: a run started in the background by a
    non-interactive shell inherits SIGINT ignored, and run_sync then (rightly) leaves it alone."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_sigint_during_a_round_is_never_swallowed(default_sigint: None) -> None:
    """A coroutine that eats its cancellation (as a library deep in the stack can) would make
    asyncio.run return normally after Ctrl-C; run_sync raises KeyboardInterrupt all the same and
    puts the default handler back."""
    async def swallows_cancellation() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass
        return "finished as if nothing happened"

    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sync(swallows_cancellation())
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_run_sync_returns_the_result(default_sigint: None) -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_sync(value()) == 42
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
