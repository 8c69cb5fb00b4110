"""Draft acceptance of each speculative cell: mean acceptance length, rate and per-position rates."""

import pytest

from specguard.plugin.outcome import assert_checks


@pytest.mark.specguard_cells("speculative")
def test_acceptance(cell, measured, specguard):
    length = measured.interval("acceptance_length")
    if length is None:
        # The counters exist (a config without them fails while measuring) but no round drafted.
        assert cell.server.min_acceptance_length is None, (
            f"{cell.id}: no drafts in {len(measured.samples)} rounds, but server {cell.server.name} "
            f"must reach a mean acceptance length of {cell.server.min_acceptance_length}")
        pytest.skip(f"{cell.id}: the server made no drafts in {len(measured.samples)} rounds "
                    f"({(cell.server.spec or {}).get('method')} found nothing to propose); acceptance is undefined")
    k = cell.server.num_speculative_tokens
    if k is not None:
        assert 1.0 <= length.estimate <= k + 1, f"{cell.id}: acceptance length {length.estimate} outside [1, {k + 1}]"
    floor = cell.server.min_acceptance_length
    if floor is not None:
        assert length.estimate >= floor, (
            f"{cell.id}: mean acceptance length {length.estimate:.2f} is below the matrix's floor {floor} "
            f"for server {cell.server.name} (rounds: {[round(a.length, 3) for a in measured.acceptances]})")
    assert_checks(specguard, measured, ["acceptance_length", "acceptance_rate", "acceptance_pos"])
