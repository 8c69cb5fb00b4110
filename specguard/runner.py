"""One cell's measurement: rounds of closed-loop load, acceptance deltas, figures and verdicts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from specguard.baselines import CellBaseline
from specguard.load import LoadSpec, RoundResult, run_load, run_sync
from specguard.matrix import Cell
from specguard.metrics import Acceptance, MetricsError, acceptance, spec_counters
from specguard.prompts import Prompt
from specguard.stats import Interval, mean_ci, percentile, ratio_ci, stability_warning, summarize
from specguard.tolerance import Tolerance
from specguard.verdict import Check, Verdict, judge


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


@dataclass
class CellMeasurement:
    cell: Cell
    samples: list[RoundSample] = field(default_factory=list)
    baseline_throughputs: tuple[float, ...] | None = None   # the plain server's rounds, same c and category
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def throughputs(self) -> list[float]:
        return [s.result.output_throughput for s in self.samples]

    @property
    def acceptances(self) -> list[Acceptance]:
        return [s.acceptance for s in self.samples if s.acceptance is not None]

    def interval(self, metric: str) -> Interval | None:
        if metric == "output_throughput":
            return mean_ci(self.throughputs)
        if metric == "speedup":
            if not self.cell.server.is_speculative or not self.baseline_throughputs:
                return None
            return ratio_ci(self.throughputs, self.baseline_throughputs)
        if metric == "acceptance_length" and self.acceptances:
            return mean_ci([a.length for a in self.acceptances])
        if metric == "acceptance_rate" and self.acceptances:
            return mean_ci([a.rate for a in self.acceptances])
        return None

    def per_position(self) -> tuple[float, ...]:
        """Pooled over rounds: accepted at position i / drafts."""
        acc = self.acceptances
        drafts = sum(a.drafts for a in acc)
        if not acc or drafts <= 0:
            return ()
        k = max(len(a.per_position) for a in acc)
        return tuple(sum(a.per_position[i] * a.drafts for a in acc if i < len(a.per_position)) / drafts
                     for i in range(k))

    def latencies_ms(self, which: str) -> list[float]:
        reqs = [r for s in self.samples for r in s.result.requests if r.ok]
        if which == "ttft":
            return [r.ttft_s * 1e3 for r in reqs]
        if which == "tpot":
            return [r.tpot_s * 1e3 for r in reqs if r.tpot_s is not None]
        return [x * 1e3 for r in reqs for x in r.itl_s]

    def warnings(self) -> list[str]:
        out = []
        if len(self.throughputs) >= 2:
            w = stability_warning(summarize(self.throughputs), f"{self.cell.id} output_throughput")
            if w:
                out.append(w)
        return out

    def extra_info(self, environment: dict[str, Any]) -> dict[str, Any]:
        """What goes into pytest-benchmark's ``extra_info`` (and the results JSONL)."""
        info: dict[str, Any] = {
            "cell": self.cell.id,
            "server": self.cell.server.name,
            "model": self.cell.server.model,
            "method": (self.cell.server.spec or {}).get("method", "none"),
            "num_speculative_tokens": self.cell.server.num_speculative_tokens,
            "concurrency": self.cell.concurrency,
            "category": self.cell.category,
            "rounds": len(self.samples),
            "completed": sum(s.result.completed for s in self.samples),
            "failed": sum(s.result.failed for s in self.samples),
            "output_tokens": sum(s.result.output_tokens for s in self.samples),
            "round_throughputs": self.throughputs,
            "round_durations_s": [s.result.duration_s for s in self.samples],
            "warnings": self.warnings(),
            **environment,
        }
        for metric in ("output_throughput", "speedup", "acceptance_length", "acceptance_rate"):
            iv = self.interval(metric)
            info[metric] = None if iv is None else iv.estimate
            info[f"{metric}_ci"] = None if iv is None else [iv.low, iv.high]
        info["per_position_acceptance"] = list(self.per_position()) or None
        if self.baseline_throughputs:
            info["baseline_round_throughputs"] = list(self.baseline_throughputs)
        if self.acceptances:
            info["round_acceptance_lengths"] = [a.length for a in self.acceptances]
            info["drafts"] = sum(a.drafts for a in self.acceptances)
            info["draft_tokens"] = sum(a.draft_tokens for a in self.acceptances)
            info["accepted_tokens"] = sum(a.accepted_tokens for a in self.acceptances)
        for which in ("ttft", "tpot", "itl"):
            values = self.latencies_ms(which)
            info[f"{which}_ms_p50"] = percentile(values, 50) if values else None
            info[f"{which}_ms_p99"] = percentile(values, 99) if values else None
            info[f"mean_{which}_ms"] = sum(values) / len(values) if values else None
        # The key names `vllm bench serve --save-result` writes, so existing dashboards read them.
        info["mean_ttft_ms"] = info["mean_ttft_ms"]
        info["median_ttft_ms"] = info["ttft_ms_p50"]
        info["p99_ttft_ms"] = info["ttft_ms_p99"]
        info["median_tpot_ms"] = info["tpot_ms_p50"]
        info["spec_decode_acceptance_rate"] = info["acceptance_rate"]
        info["spec_decode_acceptance_length"] = info["acceptance_length"]
        info["spec_decode_per_position_acceptance_rates"] = info["per_position_acceptance"]
        if self.checks:
            info["verdicts"] = {m: c.verdict.value for m, c in self.checks.items()}
            info["verdict"] = overall_verdict(self.checks.values()).value
            primary = self.checks.get("speedup") or next(iter(self.checks.values()))
            info["ci_low"], info["ci_high"] = primary.interval.low, primary.interval.high
        return info


def overall_verdict(checks: Any) -> Verdict:
    verdicts = [c.verdict for c in checks]
    for v in (Verdict.REGRESSED, Verdict.UNKNOWN, Verdict.IMPROVED):
        if v in verdicts:
            return v
    return Verdict.OK


def run_round(cell: Cell, server: Server, prompts: list[Prompt], *, model: str, max_tokens: int,
              api_key: str | None, request_timeout_s: float, ignore_eos: bool,
              on_done: Callable[[int, int], None] | None = None) -> RoundSample:
    """One round: every prompt once at the cell's concurrency, with counter deltas around it."""
    spec = LoadSpec(base_url=server.base_url, model=model, concurrency=cell.concurrency, max_tokens=max_tokens,
                    api_key=api_key, request_timeout_s=request_timeout_s, ignore_eos=ignore_eos)
    speculative = cell.server.is_speculative
    before = spec_counters(server.base_url, api_key=api_key, server_name=cell.server.name) if speculative else None
    result = run_sync(run_load(spec, prompts, on_done=on_done))
    if result.failed:
        # A dead server says more (exit code, log tail) than its failed requests; its supervisor
        # needs a moment to take the rest of the process group down and exit.
        deadline = time.monotonic() + DEATH_WAIT_S
        while True:
            try:
                server.check_alive()
            except Exception as exc:
                raise CellError(f"{cell.id}: {exc}") from exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        raise CellError(f"{cell.id}: {result.failed} of {len(result.requests)} requests failed:\n"
                        + "\n".join(result.errors()[:5]) + f"\nserver log tail:\n{server.log_tail(20)}")
    acc = None
    if before is not None:
        delta = spec_counters(server.base_url, api_key=api_key, server_name=cell.server.name) - before
        # A round with no drafts at all is possible (n-gram finds nothing to match): its acceptance
        # is undefined, not zero; the cell's acceptance comes from the rounds that drafted.
        if delta.num_drafts > 0:
            try:
                acc = acceptance(delta)
            except MetricsError as exc:
                raise CellError(f"{cell.id}: {exc}") from exc
    return RoundSample(result, acc)


def judge_cell(m: CellMeasurement, stored: CellBaseline | None, tolerances: dict[str, Tolerance]) -> dict[str, Check]:
    """A Check per metric that has a tolerance, a stored value and a measurement."""
    checks: dict[str, Check] = {}
    if stored is None:
        return checks
    for metric, tol in tolerances.items():
        if metric == "per_position_acceptance":
            continue
        iv = m.interval(metric)
        base = stored.metrics.get(metric)
        if iv is None or base is None or not isinstance(base.value, float):
            continue
        checks[metric] = Check(metric, judge(iv, base.value, tol), iv, base.value, tol)
    tol = tolerances.get("per_position_acceptance")
    base = stored.metrics.get("per_position_acceptance")
    if tol is not None and base is not None and isinstance(base.value, tuple) and m.acceptances:
        for i, stored_rate in enumerate(base.value):
            # Deep positions accept rarely; a relative band on a rate near 0 is noise, not signal.
            if stored_rate < 0.05:
                continue
            rates = [a.per_position[i] for a in m.acceptances if i < len(a.per_position)]
            if rates:
                iv = mean_ci(rates)
                name = f"acceptance_pos{i + 1}"
                checks[name] = Check(name, judge(iv, stored_rate, tol), iv, stored_rate, tol)
    return checks
