"""Output throughput of every cell (plain and speculative), measured under pytest-benchmark."""

import pytest

from specguard.plugin.outcome import assert_checks


@pytest.mark.specguard_cells("all")
def test_throughput(cell, measured, specguard):
    assert measured.samples, f"{cell.id}: no rounds were measured"
    assert all(t > 0 for t in measured.throughputs), f"{cell.id}: a round produced no tokens"
    assert_checks(specguard, measured, ["output_throughput"])
