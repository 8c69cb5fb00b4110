"""Aggregates per (server, concurrency) over all categories: the figures studies publish
(e.g. the Gemma 4 study's "MTP 125.3 tok/s, 3.11x" is a mean over 11 categories)."""

import pytest

from specguard.judge.aggregate import aggregate, aggregate_speedup, judge_aggregate
from specguard.plugin.outcome import baseline_version, settle


def _measured(specguard, server, concurrency):
    cells = [c for c in specguard.cells() if c.server == server and c.concurrency == concurrency]
    missing = [c.id for c in cells if c.id not in specguard.measurements]
    return [specguard.measurements[c.id] for c in cells if c.id in specguard.measurements], missing


def test_aggregate(aggregate_case, specguard):
    case, s = aggregate_case, specguard
    stored = s.stored_aggregates.get(case.id)
    if stored is None:
        pytest.skip(f"{case.id}: no stored aggregate in the {s.profile} baseline of {s.matrix.name}")
    if set(s.categories) != set(stored.categories):
        pytest.skip(f"{case.id}: this run covers {len(s.categories)} of the {len(stored.categories)} categories "
                    f"the stored {stored.aggregation!r} covers; an aggregate compares only over all of them")
    cells, missing = _measured(s, case.server, case.concurrency)
    if missing:
        pytest.skip(f"{case.id}: cells not measured in this session: {', '.join(missing)}")
    measured = aggregate(cells)
    speedup = None
    base = s.matrix.baseline_of(case.server)
    if base is not None and "speedup" in stored.metrics:
        base_cells, base_missing = _measured(s, base, case.concurrency)
        if base_missing or not base_cells:
            pytest.skip(f"{case.id}: plain-server cells not measured: {', '.join(base_missing)}")
        speedup = aggregate_speedup(measured, aggregate(base_cells))
    checks = judge_aggregate(stored, measured, s.matrix.tolerances, speedup)
    if not checks:
        pytest.skip(f"{case.id}: no tolerance in the matrix for {', '.join(stored.metrics)}")
    header = (f"{case.id} [{stored.aggregation}, {len(stored.categories)} categories, {measured.rounds} rounds] "
              f"vs baseline from vLLM {baseline_version(s)}:")
    settle(s, case.id, header, list(checks.values()))
