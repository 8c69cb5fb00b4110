"""Speedup of each speculative cell over its plain server (same concurrency, same prompts, same session)."""

import pytest

from specguard.plugin.outcome import assert_checks


@pytest.mark.specguard_cells("speculative")
def test_speedup(cell, measured, specguard):
    why = specguard.one_url(cell.server)
    if why:
        pytest.skip(why)
    speedup = measured.interval("speedup")
    assert speedup is not None, f"{cell.id}: no plain-server measurement to compare with"
    assert_checks(specguard, measured, ["speedup", "min_speedup"])
