"""Aggregates over categories: one figure per (server, concurrency), as studies publish them.

Two ways to combine a server's category cells, and they differ when categories differ in speed:

* ``"mean of category throughputs"``: the mean over categories of each category's output
  throughput, every category weighing the same. The reference study's headline tok/s are this
  (its 31B MTP c=1 figure, 125.3, is the mean of 11 categories from roleplay's 76 to coding's 173).
* ``"pooled tokens / pooled time"``: all output tokens over all round time, each category
  weighing by its time: the time-weighted mean of the category throughputs.

The aggregate speedup is the ratio of two servers' means of categories, as the study computes it
(125.3 / 40.3 = 3.11); it is not the mean of per-category speedups.

Intervals come from per-round figures: round r's figure is the mean over categories of each
category's round-r throughput. Categories run one after another, so "round r" pairs nothing
physical, but with independent rounds these figures are i.i.d. with the variance of the mean of
categories, which is all the bootstrap needs. A cell with extra rounds (its own verdict was
UNKNOWN) contributes its first n rounds only, n the fewest any category has, so every figure
weighs every category the same and the estimate and its interval use the same rounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from specguard.config.schema import Closed, Distinct, Int, Name, Str, error_at, expect, must_be
from specguard.store.baselines import CellBaseline, MetricBaseline, MetricSchema
from specguard.config.errors import InputError, from_validation
from specguard.config.matrix import Cell, Matrix, ServerConfig
from specguard.judge.stats import Interval, mean_ci, paired_ratio_ci, ratio_ci
from specguard.config.tolerance import Tolerance
from specguard.judge.verdict import Check

if TYPE_CHECKING:
    from specguard.judge.cell import CellMeasurement

MEAN_OF_CATEGORIES = "mean of category throughputs"
POOLED = "pooled tokens / pooled time"
RATIO_OF_MEANS = "ratio of means of category throughputs"
PAIRED_GEOMEAN = "geometric mean of category paired speedups"
# (metric, the entry's aggregation) -> the labels that metric's own `aggregation` may carry.
_LABELS = {("output_throughput", MEAN_OF_CATEGORIES): (MEAN_OF_CATEGORIES,),
           ("output_throughput", POOLED): (POOLED,),
           ("speedup", MEAN_OF_CATEGORIES): (RATIO_OF_MEANS, PAIRED_GEOMEAN)}


@dataclass(frozen=True)
class MeasuredAggregate:
    server: str
    concurrency: int
    categories: tuple[str, ...]        # sorted
    rounds: int                        # rounds used per category: the fewest any cell has
    round_means: tuple[float, ...]     # per round: mean over categories of the round's throughput
    mean_of_categories: Interval       # output tok/s
    pooled: Interval                   # output tok/s

    def throughput(self, aggregation: str) -> Interval:
        return self.pooled if aggregation == POOLED else self.mean_of_categories


def category_round_means(rounds_by_category: Mapping[str, Sequence[float]]) -> tuple[float, ...]:
    """Per round r: the mean over categories of each category's round-r throughput, over the
    first n rounds, n the fewest any category has."""
    if not rounds_by_category or not all(rounds_by_category.values()):
        raise ValueError("every category needs at least one round")
    n = min(len(v) for v in rounds_by_category.values())
    # fsum: exactly rounded, so the figures do not depend on the order of the categories.
    return tuple(math.fsum(v[r] for v in rounds_by_category.values()) / len(rounds_by_category) for r in range(n))


def aggregate(cells: Sequence[CellMeasurement], *, confidence: float = 0.95, seed: int = 0) -> MeasuredAggregate:
    """Both aggregates of one (server, concurrency) from its category cells, in any order."""
    if not cells:
        raise ValueError("no cells to aggregate")
    server, conc = cells[0].cell.server.name, cells[0].cell.concurrency
    by_cat: dict[str, CellMeasurement] = {}
    for m in cells:
        if (m.cell.server.name, m.cell.concurrency) != (server, conc):
            raise ValueError(f"{m.cell.id}: expected server {server!r} at c={conc}; aggregate one pair at a time")
        if m.cell.category in by_cat:
            raise ValueError(f"{m.cell.id}: category {m.cell.category!r} given twice")
        if not m.samples or any(s.result.duration_s <= 0 for s in m.samples):
            raise ValueError(f"{m.cell.id}: needs measured rounds with a positive duration")
        by_cat[m.cell.category] = m
    n = min(len(m.samples) for m in by_cat.values())
    rounds = [[m.samples[r].result for m in by_cat.values()] for r in range(n)]
    round_means = category_round_means({c: m.throughputs for c, m in by_cat.items()})
    tokens = [float(sum(x.output_tokens for x in rr)) for rr in rounds]
    seconds = [math.fsum(x.duration_s for x in rr) for rr in rounds]
    return MeasuredAggregate(
        server=server, concurrency=conc, categories=tuple(sorted(by_cat)), rounds=n, round_means=round_means,
        mean_of_categories=mean_ci(round_means, confidence, seed=seed),
        # mean(tokens) / mean(seconds) is the pooled figure. Resampling the two independently
        # ignores that a round's tokens and time go together: a wider, conservative interval.
        pooled=ratio_ci(tokens, seconds, confidence, seed=seed))


def aggregate_speedup(spec: MeasuredAggregate, base: MeasuredAggregate, *, confidence: float = 0.95,
                      seed: int = 0) -> Interval:
    """Mean of categories of ``spec`` over that of ``base`` (its plain server), same c and categories."""
    if (spec.concurrency, spec.categories) != (base.concurrency, base.categories):
        raise ValueError(f"{spec.server} (c={spec.concurrency}, {list(spec.categories)}) and {base.server} "
                         f"(c={base.concurrency}, {list(base.categories)}) cover different cells")
    return ratio_ci(spec.round_means, base.round_means, confidence, seed=seed)


def category_pair_speedups(ratios_by_category: Mapping[str, Sequence[float]]) -> tuple[float, ...]:
    """Per pair index r: the geometric mean over categories of each category's pair-r speedup,
    over the first n pairs, n the fewest any category has."""
    if not ratios_by_category or not all(ratios_by_category.values()):
        raise ValueError("every category needs at least one pair")
    n = min(len(v) for v in ratios_by_category.values())
    k = len(ratios_by_category)
    return tuple(math.exp(math.fsum(math.log(v[r]) for v in ratios_by_category.values()) / k) for r in range(n))


def _paired_interval(ratios_by_category: Mapping[str, Sequence[float]],
                     confidence: float) -> tuple[tuple[float, ...], Interval]:
    """The per-pair geometric means and the paired t interval on their logs."""
    g = category_pair_speedups(ratios_by_category)
    return g, paired_ratio_ci(g, [1.0] * len(g), confidence)


def paired_aggregate_speedup(cells: Sequence[CellMeasurement], confidence: float = 0.95) -> Interval | None:
    """The aggregate speedup of a speculative server measured in pairs: the geometric mean over
    categories of each category's paired speedup, with the cells' own paired t interval on the
    logs (pair r of every category together). It agrees with the cells' speedups, which the ratio
    of two means of categories does not when the plain cells' rounds come from other pairs or
    times. None when a cell was not measured in pairs."""
    if not cells or any(not m.pairs for m in cells):
        return None
    return _paired_interval({m.cell.category: m.pair_speedups for m in cells}, confidence)[1]


@dataclass(frozen=True)
class AggregateCase:
    """One aggregate test: a (server, concurrency) over all the categories the session runs."""

    id: str
    server: ServerConfig
    concurrency: int


def aggregate_cases(matrix: Matrix, cells: Sequence[Cell] | None = None) -> list[AggregateCase]:
    """One per (server, concurrency) with performance cells, in server start order; given ``cells``
    (a session's selection), only those with a cell among them."""
    have = None if cells is None else {(c.server.name, c.concurrency) for c in cells}
    return [AggregateCase(aggregate_id(matrix.id_prefix, s.name, c), s, c)
            for s in matrix.server_order() if s.perf for c in matrix.workload.concurrency
            if have is None or (s.name, c) in have]


def aggregates_from_cells(cells: Mapping[str, CellBaseline], matrix: Matrix, confidence: float = 0.95,
                          categories: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``aggregates`` entries of a baseline file, derived from its stored cells' rounds (of
    ``categories`` only, if given): per (server, concurrency) with a stored round for every
    category it has, the mean of category throughputs and the aggregate speedup: from the pairs'
    ratios where every cell was measured in pairs (:func:`paired_aggregate_speedup`), else, where
    its plain server covers the same categories, the ratio of the two means (:func:`aggregate_speedup`)."""
    rounds: dict[tuple[str, int], dict[str, Sequence[float]]] = {}
    pair_ratios: dict[tuple[str, int], dict[str, Sequence[float]]] = {}
    for cell in cells.values():
        if categories is not None and cell.category not in categories:
            continue
        tp, sp = cell.metrics.get("output_throughput"), cell.metrics.get("speedup")
        rounds.setdefault((cell.server, cell.concurrency), {})[cell.category] = \
            [float(r) for r in tp.rounds] if tp is not None else []
        paired = (cell.note or "").startswith("pairing: interleaved") and sp is not None and bool(sp.rounds)
        pair_ratios.setdefault((cell.server, cell.concurrency), {})[cell.category] = \
            [float(r) for r in sp.rounds] if paired else []
    out: dict[str, dict[str, Any]] = {}
    for case in aggregate_cases(matrix):
        by_cat = rounds.get((case.server.name, case.concurrency))
        if not by_cat or not all(by_cat.values()):
            continue
        means = category_round_means(by_cat)
        tp = mean_ci(means, confidence)
        metrics = {"output_throughput": MetricBaseline(tp.estimate, tp.low, tp.high, means, MEAN_OF_CATEGORIES)}
        base = matrix.baseline_of(case.server)
        base_by_cat = rounds.get((base.name, case.concurrency)) if base is not None else None
        ratios = pair_ratios.get((case.server.name, case.concurrency), {})
        if base is not None and ratios and all(ratios.values()):
            g, sp = _paired_interval(ratios, confidence)
            metrics["speedup"] = MetricBaseline(sp.estimate, sp.low, sp.high, g, PAIRED_GEOMEAN)
        elif base_by_cat and all(base_by_cat.values()) and set(base_by_cat) == set(by_cat):
            sp = ratio_ci(means, category_round_means(base_by_cat), confidence)
            metrics["speedup"] = MetricBaseline(sp.estimate, sp.low, sp.high, (), RATIO_OF_MEANS)
        out[case.id] = {"server": case.server.name, "concurrency": case.concurrency, "aggregation": MEAN_OF_CATEGORIES,
                        "categories": sorted(by_cat), "metrics": {k: v.to_json() for k, v in metrics.items()}}
    return out


# --- stored aggregates ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredAggregate:
    key: str
    server: str
    concurrency: int
    aggregation: str
    categories: tuple[str, ...]        # sorted
    metrics: dict[str, MetricBaseline]
    note: str | None = None


def aggregate_id(id_prefix: str, server: str, concurrency: int, aggregation: str = MEAN_OF_CATEGORIES) -> str:
    """``gemma4-31b-mtp8-c1``; a pooled entry ends in ``-pooled``."""
    return f"{id_prefix}-{server}-c{concurrency}" + ("-pooled" if aggregation == POOLED else "")


class _Entry(Closed):
    server: Annotated[Name, expect("a server name")]
    concurrency: Annotated[Int, Field(ge=1), expect("a positive integer")]
    aggregation: Annotated[Str, must_be(lambda a: a in (MEAN_OF_CATEGORIES, POOLED),
                                        f"{MEAN_OF_CATEGORIES!r} or {POOLED!r}")]
    categories: Annotated[list[Name], Field(min_length=1), Distinct,
                          expect("a non-empty list of distinct names")]
    metrics: Annotated[dict[str, MetricSchema],
                       must_be(lambda m: isinstance(m, dict) and bool(m), "a non-empty object")]
    note: Annotated[Str | None, expect("a string")] = None

    @field_validator("metrics")
    @classmethod
    def _aggregates_of_the_aggregation(cls, metrics: dict[str, MetricSchema],
                                       info: ValidationInfo) -> dict[str, MetricSchema]:
        agg = info.data.get("aggregation")
        if agg is None:   # itself refused
            return metrics
        for name, metric in metrics.items():
            labels = _LABELS.get((name, agg))
            if labels is None:
                known = ", ".join(sorted(n for n, a in _LABELS if a == agg))
                raise error_at((name,), f"not an aggregate of {agg!r} (known: {known})", name)
            if metric.aggregation not in (None, *labels):
                raise error_at((name, "aggregation"), f"expected {' or '.join(map(repr, labels))}",
                               metric.aggregation)
        return metrics


def parse_aggregates(raw: Mapping[str, Any], path: str | Path,
                     id_prefix: str | None = None) -> dict[str, StoredAggregate]:
    """The ``aggregates`` object of a baseline file; with ``id_prefix``, keys must be ``aggregate_id``s."""
    return {key: _parse_entry(key, entry, str(path), id_prefix) for key, entry in raw.items()}


def _parse_entry(key: str, raw: Any, p: str, id_prefix: str | None) -> StoredAggregate:
    where = f"aggregates.{key}"
    try:
        e = _Entry.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(p, exc, prefix=where) from None
    want = aggregate_id(id_prefix, e.server, e.concurrency, e.aggregation) if id_prefix is not None else key
    if key != want:
        raise InputError(p, where, f"key should be {want!r} for server {e.server!r}, c={e.concurrency}, "
                                   f"{e.aggregation!r}")
    return StoredAggregate(key, e.server, e.concurrency, e.aggregation, tuple(sorted(e.categories)),
                           {name: m.baseline() for name, m in e.metrics.items()}, e.note)


def judge_aggregate(stored: StoredAggregate, measured: MeasuredAggregate, tolerances: Mapping[str, Tolerance],
                    speedup: Interval | None = None) -> dict[str, Check]:
    """A Check per stored metric that has a tolerance and a measured figure (``speedup`` from
    :func:`aggregate_speedup`). Raises ValueError when the two cover different cells: an aggregate
    over some categories says nothing about one over all of them."""
    if (measured.server, measured.concurrency, measured.categories) != \
            (stored.server, stored.concurrency, stored.categories):
        raise ValueError(f"{stored.key}: stored over {stored.server} c={stored.concurrency} {list(stored.categories)}, "
                         f"measured over {measured.server} c={measured.concurrency} {list(measured.categories)}")
    figures = {"output_throughput": measured.throughput(stored.aggregation), "speedup": speedup}
    checks = {}
    for metric, base in sorted(stored.metrics.items()):
        iv, tol = figures.get(metric), tolerances.get(metric)
        if iv is not None and tol is not None and isinstance(base.value, float):
            checks[metric] = Check.of(metric, iv, base.value, tol)
    return checks
