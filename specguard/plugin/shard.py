"""``pytest --shard K/N``: the K-th of N disjoint slices of a matrix, one per CI runner.

    pytest -m "gpu or lossless" --matrix fixtures/matrices/gemma4-h100.toml --shard 2/8 \\
        --results-dir shard-2 --benchmark-json shard-2/benchmark.json

The unit of sharding is a **family × a group of categories**. A family is a plain server and the
speculative servers judged against it (families that a gate case spans are joined): the paired
design needs both live, and a sequential speedup divides by the plain cell's own rounds, so a
unit holds every cell of its family in its categories, at every concurrency. Tests that belong to
no category (lossless cases, the generated-prompt test, the security test per server, gate cases,
aggregates) go with their family's *first* unit: the one holding the family's first category in
the session's order (gate cases measure that category, so their cells are in that unit too). A
family without performance cells is one unit of its own. Tests outside every unit (unit tests,
inner-pytest tests) run in shard 1 only.

Costs, the first of these that any cell has (cells without it get the others' mean):

1. its recorded duration: the sum of its rounds' durations in its latest record in the results
   folder's ``cells.jsonl`` (warm-up and server starts not counted);
2. rounds × requests per round × max_tokens ÷ the profile's stored output tok/s (the baseline's
   cell, else its server's aggregate): an upper bound, but in proportion across cells, so a
   model three times slower weighs three times more on the first run;
3. max_tokens: the run's cost counted in cells × max_tokens.

Category groups: per family, as many as the family's cost divided by a target unit cost; every
target that changes a family's group count is tried, the units are assigned by greedy longest
processing time first (ties broken by unit id), and among the plans whose longest shard is
within ``CLOSE`` of the best, the one with the fewest empty shards, then the fewest units (fewer
units: fewer server starts), is kept. Categories go into a family's groups by the same greedy
rule. Everything is a function of the matrix, the session's cells, the records and the baseline,
so every runner that reads the same files computes the same plan; the plan's digest is recorded,
and ``python -m specguard merge`` refuses shards whose digests differ.

No pytest here: the plugin's wiring is in ``specguard/plugin/hooks.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from specguard.config.matrix import Cell, Matrix
from specguard.judge.gate import gate_cases

if TYPE_CHECKING:
    from specguard.judge.aggregate import StoredAggregate
    from specguard.store.baselines import BaselineFile

CLOSE = 0.05   # a plan with fewer units is kept when its longest shard is within 5% of the best
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` → ``(2, 8)``; a ValueError saying what is expected otherwise."""
    match = _SPEC.fullmatch(text)
    if match is None:
        raise ValueError(f"could not parse {text!r}; expected K/N with 1 <= K <= N, e.g. '2/8'")
    k, n = int(match[1]), int(match[2])
    if n < 1:
        raise ValueError(f"expected N >= 1 in K/N, got {text!r}")
    if not 1 <= k <= n:
        raise ValueError(f"expected 1 <= K <= N, got {text!r} (shards are numbered 1 to {n})")
    return k, n


@dataclass(frozen=True)
class Unit:
    """What one shard runs without splitting: a family's cells in some categories (and, for its
    first unit, the family's tests that belong to no category)."""

    id: str                       # "31b-baseline:coding+qa+stem"; a family without cells: "baseline-bf16"
    family: str
    categories: tuple[str, ...]
    cells: tuple[str, ...]
    cost: float


@dataclass(frozen=True)
class Plan:
    count: int
    units: tuple[Unit, ...]          # families in start order, each family's first unit first
    shard_of: Mapping[str, int]      # unit id → shard, 1..count
    family_of: Mapping[str, str]     # server name → family
    seconds: bool                    # costs are seconds (recorded, or estimated from stored tok/s)
    basis: str                       # how the costs were estimated, for people
    upper_bound: bool = False        # the seconds assume every request runs to max_tokens

    def units_of(self, shard: int) -> list[Unit]:
        return [u for u in self.units if self.shard_of[u.id] == shard]

    def loads(self) -> list[float]:
        """Each shard's estimated cost, shard 1 first."""
        return [math.fsum(u.cost for u in self.units_of(k)) for k in range(1, self.count + 1)]

    def unit_for(self, server: str, category: str | None) -> Unit:
        """The unit of a test of ``server`` in ``category`` (None: a test of no category)."""
        family = self.family_of[server]
        mine = [u for u in self.units if u.family == family]
        if category is not None:
            for u in mine:
                if category in u.categories:
                    return u
        return mine[0]

    def digest(self) -> str:
        """The same on every runner that computed the same plan."""
        text = json.dumps({"count": self.count, "units": {u.id: [self.shard_of[u.id], list(u.cells)]
                                                           for u in self.units}}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self, shard: int) -> str:
        """E.g. ``shard 2/8: 1 of 8 units (31b-baseline:coding+qa+stem), 18 of 132 cells, about 1.9 h
        of 15.0 h (recorded durations)``."""
        mine = self.units_of(shard)
        cells = sum(len(u.cells) for u in mine)
        total = sum(len(u.cells) for u in self.units)
        load, whole = self.loads()[shard - 1], math.fsum(u.cost for u in self.units)
        about = "at most about" if self.upper_bound else "about"
        size = (f"{about} {_hours(load)} of {_hours(whole)}" if self.seconds
                else f"{load / whole:.0%} of the run's cells × max_tokens" if whole else "no cells")
        return (f"shard {shard}/{self.count}: {len(mine)} of {len(self.units)} units "
                f"({', '.join(u.id for u in mine) or 'none'}), {cells} of {total} cells, {size} ({self.basis})")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds / 60:.0f} min"


def recorded_durations(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Cell id → seconds its rounds took, from its latest ``cell`` record (warm-up and server
    starts are not in it)."""
    out: dict[str, float] = {}
    for r in records:
        if r.get("kind") != "cell" or not isinstance(r.get("cell"), str):
            continue
        rounds = [d for d in r.get("round_durations_s") or [] if isinstance(d, (int, float)) and d > 0]
        if rounds:
            out[r["cell"]] = math.fsum(rounds)
    return out


def stored_throughputs(matrix: Matrix, cells: Sequence[Cell], baseline: BaselineFile | None,
                       aggregates: Mapping[str, StoredAggregate]) -> dict[str, float]:
    """Cell id → a stored output tok/s: the baseline's cell, else its server's aggregate at that
    concurrency (the Gemma study publishes mostly those)."""
    from specguard.judge.aggregate import aggregate_id

    out: dict[str, float] = {}
    for c in cells:
        stored = baseline.cells.get(c.id) if baseline is not None else None
        metric = stored.metrics.get("output_throughput") if stored is not None else None
        if metric is None:
            agg = aggregates.get(aggregate_id(matrix.id_prefix, c.server.name, c.concurrency))
            metric = agg.metrics.get("output_throughput") if agg is not None else None
        if metric is not None and isinstance(metric.value, (int, float)) and metric.value > 0:
            out[c.id] = float(metric.value)
    return out


def cell_costs(matrix: Matrix, cells: Sequence[Cell], durations: Mapping[str, float],
               throughputs: Mapping[str, float] | None = None) -> tuple[dict[str, float], bool, str]:
    """(cell id → cost, costs are seconds, basis). Recorded seconds where any cell has some; else
    seconds at stored throughputs with every request at max_tokens (an upper bound, in proportion
    across cells); else max_tokens per cell. Cells without a figure get the others' mean."""
    w = matrix.workload
    estimated = {c.id: w.rounds * w.requests_per_round(c.concurrency) * w.max_tokens / throughputs[c.id]
                 for c in cells if (throughputs or {}).get(c.id, 0) > 0}
    recorded = {c.id: float(durations[c.id]) for c in cells if durations.get(c.id, 0) > 0}
    if recorded:
        known, basis = recorded, "recorded durations"
    elif estimated:
        known, basis = estimated, "no recorded durations: the baseline's tok/s, every request at max_tokens"
    else:
        return {c.id: float(w.max_tokens) for c in cells}, False, "no recorded durations: cells × max_tokens"
    per_cell = math.fsum(known.values()) / len(known)
    if len(known) < len(cells):
        basis += f" (for {len(known)} of {len(cells)} cells, the mean for the others)"
    return {c.id: known.get(c.id, per_cell) for c in cells}, True, basis


def families(matrix: Matrix, cells: Sequence[Cell]) -> dict[str, str]:
    """Server name → family: its plain server's name (its own without one); the families of the
    two servers of a gate case are one family, named by the earlier in start order."""
    order = [s.name for s in matrix.server_order()]
    parent = {s.name: (matrix.baseline_of(s) or s).name for s in matrix.servers}
    root = {f: f for f in parent.values()}

    def find(f: str) -> str:
        while root[f] != f:
            f = root[f]
        return f

    for case in gate_cases(matrix, list(cells)):
        names = [case.candidate.server.name] + ([case.reference.server.name] if case.reference else [])
        first, *rest = sorted({find(parent[n]) for n in names}, key=order.index)
        for other in rest:
            root[other] = first
    return {name: find(f) for name, f in parent.items()}


def lpt(costs: Mapping[str, float], count: int) -> dict[str, int]:
    """Greedy longest processing time first: each item, costliest first (ties: by name), to the
    least loaded of ``count`` bins (ties: the lowest); item → bin, 1..count."""
    loads = [0.0] * count
    out: dict[str, int] = {}
    for item in sorted(costs, key=lambda i: (-costs[i], i)):
        k = min(range(count), key=lambda b: (loads[b], b))
        out[item] = k + 1
        loads[k] += costs[item]
    return out


@dataclass
class _Family:
    name: str
    categories: list[str]                       # in the session's order
    cells: dict[str, list[str]] = field(default_factory=dict)   # category → cell ids
    cost: dict[str, float] = field(default_factory=dict)        # category → cost

    @property
    def total(self) -> float:
        return math.fsum(self.cost.values())

    def units(self, groups: int) -> list[Unit]:
        if not self.categories:
            return [Unit(self.name, self.name, (), (), 0.0)]
        bins = lpt(self.cost, min(groups, len(self.categories)))
        out = []
        for g in sorted(set(bins.values()), key=lambda b: min(self.categories.index(c) for c in bins if bins[c] == b)):
            cats = tuple(c for c in self.categories if bins[c] == g)
            out.append(Unit(f"{self.name}:{'+'.join(cats)}", self.name, cats,
                            tuple(i for c in cats for i in self.cells[c]), math.fsum(self.cost[c] for c in cats)))
        return out


def plan(matrix: Matrix, cells: Sequence[Cell], durations: Mapping[str, float], count: int,
         throughputs: Mapping[str, float] | None = None) -> Plan:
    """The whole run's split into ``count`` shards (see the module's docstring)."""
    if count < 1:
        raise ValueError(f"expected at least one shard, got {count}")
    costs, seconds, basis = cell_costs(matrix, cells, durations, throughputs)
    family_of = families(matrix, cells)
    fams: dict[str, _Family] = {}
    for server in matrix.server_order():
        fams.setdefault(family_of[server.name], _Family(family_of[server.name], []))
    for c in cells:
        fam = fams[family_of[c.server.name]]
        if c.category not in fam.cells:
            fam.categories.append(c.category)
        fam.cells.setdefault(c.category, []).append(c.id)
        fam.cost[c.category] = fam.cost.get(c.category, 0.0) + costs[c.id]
    # Every target unit cost at which some family's number of groups changes.
    targets = sorted({f.total / g for f in fams.values() for g in range(1, len(f.categories) + 1) if f.total > 0},
                     reverse=True) or [1.0]
    tried = []
    for t in targets:
        units = [u for f in fams.values()
                 for u in f.units(max(1, math.ceil(f.total / t - 1e-9)) if f.total > 0 else len(f.categories) or 1)]
        shard_of = lpt({u.id: u.cost for u in units}, count)
        loads = [0.0] * count
        for u in units:
            loads[shard_of[u.id] - 1] += u.cost
        tried.append((max(loads), count - len(set(shard_of.values())), units, shard_of))
    best = min(x[0] for x in tried)
    _, _, units, shard_of = min((x for x in tried if x[0] <= best * (1 + CLOSE) + 1e-9),
                                key=lambda x: (x[1], len(x[2]), x[0]))
    return Plan(count, tuple(units), shard_of, family_of, seconds, basis,
                upper_bound=seconds and not any(durations.get(c.id, 0) > 0 for c in cells))


def select(matrix: Matrix, cells: Sequence[Cell], durations: Mapping[str, float], shard: int,
           count: int, throughputs: Mapping[str, float] | None = None) -> list[str]:
    """The ids of the units shard ``shard`` of ``count`` runs."""
    return [u.id for u in plan(matrix, cells, durations, count, throughputs).units_of(shard)]


@dataclass
class Shard:
    """One run's shard: its plan, which test (by parameter id) is in which unit, and what the
    plugin's deselection found."""

    index: int
    plan: Plan
    unit_of_test: Mapping[str, str]   # parameter id → unit id
    offered: int | None = None        # tests selected before the shard's deselection (None: not collected here)
    deselected: int = 0

    @property
    def label(self) -> str:
        return f"{self.index}/{self.plan.count}"

    def keeps(self, param_id: str | None) -> bool:
        """Whether this shard runs a test; tests in no unit run in shard 1."""
        unit = self.unit_of_test.get(param_id) if param_id is not None else None
        return self.index == 1 if unit is None else self.plan.shard_of[unit] == self.index

    def why_empty(self) -> str | None:
        """Why this shard has nothing to run (when nothing was selected), or None when the selection
        was empty before the shard took its part (nothing to do with sharding)."""
        p = self.plan
        if not p.units_of(self.index):
            fams = len({u.family for u in p.units})
            return (f"shard {self.label} is empty: the matrix splits into {len(p.units)} unit(s) "
                    f"({fams} famil{'y' if fams == 1 else 'ies'} × category groups), fewer than "
                    f"{p.count} shards; nothing to run here")
        if self.offered:
            return (f"shard {self.label} is empty: none of the {self.offered} selected tests is in its units "
                    f"({', '.join(u.id for u in p.units_of(self.index))})")
        return None

    def start_record(self, matrix: Matrix, environment: Mapping[str, Any], update_baselines: bool) -> dict[str, Any]:
        """The ``shard`` record a run writes at its start: what it runs, and what every shard of one
        merge must share (matrix, its file's digest, vLLM version, profile, the plan's digest)."""
        mine = self.plan.units_of(self.index)
        env = {k: environment.get(k) for k in ("vllm_version", "vllm_distribution", "device", "profile")}
        return {"shard": self.index, "of": self.plan.count, "plan": self.plan.digest(), "basis": self.plan.basis,
                "units": [u.id for u in mine], "cells": [c for u in mine for c in u.cells],
                "estimate": self.plan.loads()[self.index - 1], "estimate_seconds": self.plan.seconds,
                "matrix": matrix.name, "matrix_sha256": hashlib.sha256(matrix.path.read_bytes()).hexdigest(),
                "update_baselines": update_baselines, **env}

    def end_record(self, exitstatus: int, failed: int, empty: str | None) -> dict[str, Any]:
        """The ``shard_end`` record: pytest's exit status (0 for an empty shard) and failed tests."""
        return {"shard": self.index, "of": self.plan.count, "exitstatus": int(exitstatus), "failed": failed,
                "empty": empty}
