"""Measuring one round: closed-loop load at a cell's concurrency, with the speculative counters'
deltas around it; a failed round names its server (dead, or its requests failed). The rounds of a
cell and the figures they give are ``specguard.judge.cell``'s. No pytest, no figures, no verdicts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from specguard.serving import http
from specguard.measure.load import LoadSpec, RoundResult, run_load, run_sync
from specguard.config.matrix import Cell
from specguard.measure.metrics import Acceptance, MetricsError, acceptance, spec_counters
from specguard.config.prompts import Prompt


DEATH_WAIT_S = 20.0


class CellError(AssertionError):
    """A round could not be measured (failed requests, dead server, no drafts)."""


class Server(Protocol):
    base_url: str

    def check_alive(self) -> None: ...

    def log_tail(self, lines: int = 50) -> str: ...


@dataclass(frozen=True)
class RoundSample:
    result: RoundResult
    acceptance: Acceptance | None


@dataclass(frozen=True)
class Pair:
    """One round of the plain server and one of the speculative server, back to back (same
    prompts, same order); ``plain_first`` alternates so that a linear drift cancels over two pairs."""

    plain: RoundSample
    spec: RoundSample
    plain_first: bool


def pair_order(index: int) -> bool:
    """True when pair ``index`` runs the plain server first: plain, spec | spec, plain | plain, …"""
    if index < 0:
        raise ValueError(f"pair index must be >= 0, got {index}")
    return index % 2 == 0


def _counters(cell: Cell, server: Server, api_key: str | None) -> Any:
    """The server's speculative-decoding counters; a server that cannot be reached is checked for
    having died first."""
    try:
        return spec_counters(server.base_url, api_key=api_key, server_name=cell.server.name)
    except http.HTTPError as exc:   # refused, reset, timed out, or not a 2xx answer
        raise _failure(cell, server, f"its metrics endpoint did not answer ({exc})") from exc


def _failure(cell: Cell, server: Server, what: str) -> CellError:
    """Why a round failed. A dead server says more (exit code, log tail) than its failed requests;
    its supervisor needs a moment to take the rest of the process group down and exit."""
    deadline = time.monotonic() + DEATH_WAIT_S
    while True:
        try:
            server.check_alive()
        except Exception as exc:
            return CellError(f"{cell.id}: {exc}")
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return CellError(f"{cell.id}: {what}\nserver log tail:\n{server.log_tail(20)}")


def run_round(cell: Cell, server: Server, prompts: list[Prompt], *, model: str, max_tokens: int,
              api_key: str | None, request_timeout_s: float, ignore_eos: bool,
              on_done: Callable[[int, int], None] | None = None) -> RoundSample:
    """One round: every prompt once at the cell's concurrency, with counter deltas around it."""
    spec = LoadSpec(base_url=server.base_url, model=model, concurrency=cell.concurrency, max_tokens=max_tokens,
                    api_key=api_key, request_timeout_s=request_timeout_s, ignore_eos=ignore_eos)
    speculative = cell.server.is_speculative
    before = _counters(cell, server, api_key) if speculative else None
    result = run_sync(run_load(spec, prompts, on_done=on_done))
    if result.failed:
        raise _failure(cell, server, f"{result.failed} of {len(result.requests)} requests failed:\n"
                       + "\n".join(result.errors()[:5]))
    acc = None
    if before is not None:
        delta = _counters(cell, server, api_key) - before
        # A round with no drafts at all is possible (n-gram finds nothing to match): its acceptance
        # is undefined, not zero; the cell's acceptance comes from the rounds that drafted.
        if delta.num_drafts > 0:
            try:
                acc = acceptance(delta)
            except MetricsError as exc:
                raise CellError(f"{cell.id}: {exc}") from exc
    return RoundSample(result, acc)
