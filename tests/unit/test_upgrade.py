"""The paired upgrade A/B's arithmetic, on known values."""

from __future__ import annotations

from pathlib import Path

import pytest

from specguard.measure.load import RequestResult, RoundResult
from specguard.config.matrix import load_matrix
from specguard.measure.metrics import Acceptance
from specguard.measure.runner import RoundSample
from specguard.upgrade.check import CellAB, judge_all, speedup_change

ROOT = Path(__file__).resolve().parents[2]


def _sample(tok_s: float, length: float | None = None) -> RoundSample:
    req = RequestResult("p", 0, True, None, 0.1, 1.0, (0.1,), int(tok_s * 10))
    acc = None if length is None else Acceptance((length - 1) / 4, length, (), 10, 40, (length - 1) * 10)
    return RoundSample(RoundResult((req,), 10.0, 1), acc)


def _ab(cell, old: list[float], new: list[float], old_len=None, new_len=None) -> CellAB:
    return CellAB(cell, [_sample(x, old_len) for x in old], [_sample(x, new_len) for x in new])


def test_speedup_change_divides_the_plain_pairs_out() -> None:
    m = load_matrix(ROOT / "fixtures/matrices/tiny-cpu.toml")
    cells = {c.id: c for c in m.cells(["coding"])}
    # The new build is 20% faster for everything (a faster machine would look the same): no change.
    plain = _ab(cells["tiny-baseline-c1-coding"], [10, 11, 10, 9], [12, 13.2, 12, 10.8])
    spec = _ab(cells["tiny-ngram4-c1-coding"], [13, 14, 13, 12], [15.6, 16.8, 15.6, 14.4], 3.18, 3.18)
    assert speedup_change(spec, plain, 0.95).estimate == pytest.approx(1.0)
    # Now the speculative server alone loses 20% on the new build.
    slow = _ab(cells["tiny-ngram4-c1-coding"], [13, 14, 13, 12], [12.4, 13.5, 12.6, 11.4], 3.18, 2.5)
    rows = {r["cell"]: r for r in judge_all(m, {c.cell.id: c for c in (plain, slow)}, 0.10, 0.95)}
    row = rows["tiny-ngram4-c1-coding"]
    assert row["speedup_change"] == pytest.approx((12.4 / 13 * 13.5 / 14 * 12.6 / 13 * 11.4 / 12) ** 0.25 / 1.2, rel=1e-9)
    assert row["verdicts"] == {"speedup_change": "REGRESSED", "acceptance_length_change": "REGRESSED"}
    assert row["verdict"] == "REGRESSED"
    assert rows["tiny-baseline-c1-coding"]["throughput_change"] == pytest.approx(1.2)
