"""Aggregates per (server, concurrency) over the categories a run covers: the figures studies
publish (e.g. the Gemma 4 study's "MTP 125.3 tok/s, 3.11x" is a mean over 11 categories).

The stored side comes from the baseline's cells of the same categories (the aggregate a run of
just those categories would have stored); where the baseline keeps no cells (a published study's
figures), from its ``aggregates`` entry when that covers exactly the run's categories."""

import pytest

from specguard.judge.aggregate import (PAIRED_GEOMEAN, aggregate, aggregate_speedup, aggregates_from_cells,
                                       judge_aggregate, paired_aggregate_speedup, parse_aggregates)
from specguard.plugin.outcome import baseline_version, settle, warn_advisory


def _measured(specguard, server, concurrency):
    cells = [c for c in specguard.cells() if c.server == server and c.concurrency == concurrency]
    missing = [c.id for c in cells if c.id not in specguard.measurements]
    return [specguard.measurements[c.id] for c in cells if c.id in specguard.measurements], missing


def _stored(s, case):
    """The stored aggregate over this run's categories, and where it came from."""
    if s.baseline is not None and s.baseline.cells:
        derived = aggregates_from_cells(s.baseline.cells, s.matrix, categories=s.categories)
        if case.id in derived:
            entry = parse_aggregates({case.id: derived[case.id]}, s.baseline.path, s.matrix.id_prefix)[case.id]
            if set(entry.categories) == set(s.categories):
                return entry, f"the baseline's cells of {len(entry.categories)} categories"
    stored = s.stored_aggregates.get(case.id)
    if stored is not None and set(stored.categories) == set(s.categories):
        return stored, "the baseline's aggregates"
    return None, None


def test_aggregate(aggregate_case, specguard):
    case, s = aggregate_case, specguard
    stored, source = _stored(s, case)
    if stored is None:
        pytest.skip(f"{case.id}: the {s.profile} baseline of {s.matrix.name} has no aggregate over this run's "
                    f"categories ({', '.join(s.categories)}), neither stored cells nor an entry")
    cells, missing = _measured(s, case.server, case.concurrency)
    if missing:
        pytest.skip(f"{case.id}: cells not measured in this session: {', '.join(missing)}")
    measured = aggregate(cells)
    speedup = None
    base = s.matrix.baseline_of(case.server)
    if base is not None and "speedup" in stored.metrics:
        if stored.metrics["speedup"].aggregation == PAIRED_GEOMEAN:
            speedup = paired_aggregate_speedup(cells)
        else:
            base_cells, base_missing = _measured(s, base, case.concurrency)
            if base_missing or not base_cells:
                pytest.skip(f"{case.id}: plain-server cells not measured: {', '.join(base_missing)}")
            speedup = aggregate_speedup(measured, aggregate(base_cells))
    checks = judge_aggregate(stored, measured, s.matrix.tolerances, speedup)
    assert checks, f"{case.id}: nothing to judge: no tolerance in the matrix for {', '.join(stored.metrics)}"
    header = (f"{case.id} [{stored.aggregation}, {len(stored.categories)} categories, {measured.rounds} rounds, "
              f"stored from {source}] vs baseline from vLLM {baseline_version(s)}:")
    deciding = warn_advisory(case.id, list(checks.values()))
    if not deciding:
        pytest.skip(f"{case.id}: every stored figure is advisory in {s.matrix.path.name}, reported and never judged:"
                    + "".join(f"\n{c.describe()}" for c in checks.values()))
    settle(s, case.id, header, deciding)
