"""A measured cell and its figures: the rounds (or plain/speculative pairs) one cell ran, the
intervals they give (throughput, paired speedup, acceptance, step cost), the checks a verdict put
on them, the record of it all that the benchmark JSON and the results file carry, and what a
baseline file keeps of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specguard.config.matrix import Cell
from specguard.judge.stats import Interval, mean_ci, paired_ratio_ci, percentile, ratio_ci, stability_warning, summarize
from specguard.judge.verdict import Check, Verdict
from specguard.measure.metrics import Acceptance
from specguard.measure.runner import Pair, RoundSample
from specguard.store.baselines import CellBaseline, MetricBaseline


def mean_itl_s(sample: RoundSample) -> float | None:
    """The round's mean gap between streamed chunks: one decode step (plain) or one speculative
    step (draft + verify, several tokens per chunk)."""
    gaps = [g for r in sample.result.requests if r.ok for g in r.itl_s]
    return sum(gaps) / len(gaps) if gaps else None


@dataclass
class CellMeasurement:
    cell: Cell
    samples: list[RoundSample] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)          # interleaved design: samples are pairs[i].spec
    baseline_throughputs: tuple[float, ...] | None = None    # sequential design: the plain cell's rounds
    checks: dict[str, Check] = field(default_factory=dict)
    confidence: float = 0.95                                 # of each interval (the look's confidence)
    pairing: str | None = None                               # "interleaved", "sequential" or None (plain)
    reused_from: tuple[str, ...] = ()                        # plain cell: the paired cells whose plain rounds it took

    @property
    def throughputs(self) -> list[float]:
        return [s.result.output_throughput for s in self.samples]

    @property
    def plain_throughputs(self) -> list[float]:
        return [p.plain.result.output_throughput for p in self.pairs]

    @property
    def pair_speedups(self) -> list[float]:
        """Each pair's ratio: the speculative round's throughput over its plain round's."""
        return [s / p for s, p in zip(self.throughputs, self.plain_throughputs)]

    @property
    def acceptances(self) -> list[Acceptance]:
        return [s.acceptance for s in self.samples if s.acceptance is not None]

    def step_costs(self) -> tuple[list[float], list[float]]:
        """Per pair: the speculative and the plain round's mean inter-chunk latency."""
        spec, plain = [], []
        for p in self.pairs:
            s, b = mean_itl_s(p.spec), mean_itl_s(p.plain)
            if s and b:
                spec.append(s)
                plain.append(b)
        return spec, plain

    def tokens_per_step(self) -> float | None:
        """Output tokens per streamed chunk after the first (one chunk per engine step): 1.0 for
        plain decoding; for a speculative server, 1 + accepted tokens per step, counting the steps
        where nothing was drafted (acceptance length counts only the steps that drafted)."""
        reqs = [r for s in self.samples for r in s.result.requests if r.ok and r.itl_s]
        steps = sum(len(r.itl_s) for r in reqs)
        return sum(r.output_tokens - 1 for r in reqs) / steps if steps else None

    def interval(self, metric: str) -> Interval | None:
        c = self.confidence
        if metric == "output_throughput":
            return mean_ci(self.throughputs, c)
        if metric == "speedup":
            if not self.cell.server.is_speculative:
                return None
            if self.pairs:
                return paired_ratio_ci(self.throughputs, self.plain_throughputs, c)
            if self.baseline_throughputs:
                return ratio_ci(self.throughputs, self.baseline_throughputs, c)
            return None
        if metric == "step_cost":
            spec, plain = self.step_costs()
            return paired_ratio_ci(spec, plain, c) if spec else None
        if metric == "acceptance_length" and self.acceptances:
            return mean_ci([a.length for a in self.acceptances], c)
        if metric == "acceptance_rate" and self.acceptances:
            return mean_ci([a.rate for a in self.acceptances], c)
        return None

    def position_interval(self, i: int) -> Interval | None:
        rates = [a.per_position[i] for a in self.acceptances if i < len(a.per_position)]
        return mean_ci(rates, self.confidence) if rates else None

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
        if self.pairs and len(self.pairs) >= 2:
            ratios = self.pair_speedups
            w = stability_warning(summarize(ratios), f"{self.cell.id} paired speedup")
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
            "pairing": self.pairing,
            "reused_from": list(self.reused_from),
            "confidence": self.confidence,
            "completed": sum(s.result.completed for s in self.samples),
            "failed": sum(s.result.failed for s in self.samples),
            "output_tokens": sum(s.result.output_tokens for s in self.samples),
            "requests_per_round": len(self.samples[0].result.requests) if self.samples else None,
            "round_throughputs": self.throughputs,
            "round_durations_s": [s.result.duration_s for s in self.samples],
            "warnings": self.warnings(),
            **environment,
        }
        for metric in ("output_throughput", "speedup", "acceptance_length", "acceptance_rate", "step_cost"):
            iv = self.interval(metric)
            info[metric] = None if iv is None else iv.estimate
            info[f"{metric}_ci"] = None if iv is None else [iv.low, iv.high]
        # speedup ≈ tokens per step ÷ step cost (acceptance length where every step drafts)
        info["tokens_per_step"] = self.tokens_per_step() if self.cell.server.is_speculative else None
        per_step, cost = info["tokens_per_step"], info["step_cost"]
        info["predicted_speedup"] = per_step / cost if per_step and cost else None
        info["per_position_acceptance"] = list(self.per_position()) or None
        if self.pairs:
            info["baseline_round_throughputs"] = self.plain_throughputs
            info["round_speedups"] = self.pair_speedups
            info["pair_plain_first"] = [p.plain_first for p in self.pairs]
        elif self.baseline_throughputs:
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
        # The key names `vllm bench serve --save-result` writes, so existing dashboards read them
        # (its acceptance rate is a percentage).
        info["median_ttft_ms"] = info["ttft_ms_p50"]
        info["p99_ttft_ms"] = info["ttft_ms_p99"]
        info["median_tpot_ms"] = info["tpot_ms_p50"]
        rate = info["acceptance_rate"]
        info["spec_decode_acceptance_rate"] = None if rate is None else rate * 100
        info["spec_decode_acceptance_length"] = info["acceptance_length"]
        info["spec_decode_per_position_acceptance_rates"] = info["per_position_acceptance"]
        if self.checks:
            deciding = [c for c in self.checks.values() if not c.advisory]
            info["verdicts"] = {m: c.verdict.value for m, c in self.checks.items() if not c.advisory}
            info["advisory"] = {m: c.verdict.value for m, c in self.checks.items() if c.advisory}
            info["judged_against"] = sorted({c.against for c in self.checks.values() if c.against})
            info["verdict"] = overall_verdict(deciding).value if deciding else None
            primary = (self.checks.get("speedup") or self.checks.get("min_speedup")
                       or next(iter(self.checks.values())))
            info["ci_low"], info["ci_high"] = primary.interval.low, primary.interval.high
            info["checks"] = [c.describe() for c in self.checks.values()]
        return info


def overall_verdict(checks: Any) -> Verdict:
    verdicts = [c.verdict for c in checks]
    for v in (Verdict.REGRESSED, Verdict.UNKNOWN, Verdict.IMPROVED):
        if v in verdicts:
            return v
    return Verdict.OK


def cell_baseline(m: CellMeasurement) -> CellBaseline:
    """What a baseline file keeps of a measurement: each figure's estimate, interval and raw rounds
    (for the speedup: each pair's ratio, or each round over the plain mean in the sequential design)."""
    metrics: dict[str, MetricBaseline] = {}
    if m.pairs:
        speedups = tuple(m.pair_speedups)
    else:
        base = m.baseline_throughputs
        speedups = tuple(t / (sum(base) / len(base)) for t in m.throughputs) if base else ()
    spec_itl, plain_itl = m.step_costs()
    raw: dict[str, tuple[Any, ...]] = {
        "output_throughput": tuple(m.throughputs),
        "speedup": speedups,
        "acceptance_length": tuple(a.length for a in m.acceptances),
        "acceptance_rate": tuple(a.rate for a in m.acceptances),
        "step_cost": tuple(s / p for s, p in zip(spec_itl, plain_itl)),
    }
    for name, rounds in raw.items():
        iv = m.interval(name)
        if iv is not None:
            metrics[name] = MetricBaseline(iv.estimate, iv.low, iv.high, rounds)
    if m.per_position():
        metrics["per_position_acceptance"] = MetricBaseline(m.per_position())
    note = None if m.pairing is None else f"pairing: {m.pairing}, {len(m.samples)} rounds, intervals at " \
                                          f"{m.confidence:.4g} confidence"
    return CellBaseline(m.cell.server.name, m.cell.concurrency, m.cell.category, metrics, note)
