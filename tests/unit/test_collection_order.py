"""What a session collects and in which order, from a real collection of a shipped matrix: the
selection (categories, --concurrency, -k) decides the cells, and the aggregate and gate cases
follow the cells; an aggregate runs after the plain cells its speedup divides by."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "fixtures" / "matrices" / "ref-gpu-31b.toml"             # pairing "interleaved"
SEQUENTIAL = ROOT / "fixtures" / "matrices" / "gemma4-h100.toml"       # pairing "sequential"
TINY = ROOT / "fixtures" / "matrices" / "tiny-cpu.toml"


def _collected(tmp_path: Path, *args: str, matrix: Path = MATRIX, profile: str = "h200",
               marks: str = "gpu or gate") -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPECGUARD_MATRIX", "PYTEST_ADDOPTS")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")   # collection never needs the Hub
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", marks, "--matrix", str(matrix),
         "--baseline-profile", profile, "--results-dir", str(tmp_path / "results"), "-p", "no:cacheprovider",
         "--ignore", "tests/unit", *args],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [line.split("::", 1)[1] for line in done.stdout.splitlines() if "::" in line]


def test_concurrency_selects_the_cells_the_aggregates_and_the_gate_cases(tmp_path: Path) -> None:
    items = _collected(tmp_path, "--concurrency", "1")
    assert items, "nothing collected"
    assert not [i for i in items if "-c16" in i], [i for i in items if "-c16" in i]
    assert "test_aggregate[ref31b-ngram4-c1]" in items
    assert "test_gate[ref31b-gate-rerun-ngram4-c1-summarization]" in items
    everything = _collected(tmp_path)
    assert "test_aggregate[ref31b-ngram4-c16]" in everything


def test_an_aggregate_runs_after_the_plain_cells_it_divides_by(tmp_path: Path) -> None:
    items = _collected(tmp_path, "-k", "baseline or ngram4")
    for c in (1, 16):
        spec_agg = items.index(f"test_aggregate[ref31b-ngram4-c{c}]")
        plain_cell = items.index(f"test_throughput[ref31b-baseline-c{c}-summarization]")
        spec_cell = items.index(f"test_speedup[ref31b-ngram4-c{c}-summarization]")
        assert spec_cell < plain_cell < spec_agg, items


def test_with_sequential_pairing_an_aggregate_still_follows_its_own_cells(tmp_path: Path) -> None:
    """There the plain server's cells come first, so the speculative server's cells are the later ones."""
    items = _collected(tmp_path, "--categories", "coding", matrix=SEQUENTIAL, profile="h100-80gb")
    for c in (1, 16):
        spec_agg = items.index(f"test_aggregate[gemma4-31b-mtp8-c{c}]")
        plain_cell = items.index(f"test_throughput[gemma4-31b-baseline-c{c}-coding]")
        spec_cell = items.index(f"test_speedup[gemma4-31b-mtp8-c{c}-coding]")
        assert plain_cell < spec_cell < spec_agg, items


def test_checks_on_live_servers_run_after_the_reliability_cases_and_before_the_cells(tmp_path: Path) -> None:
    """The reliability cases start servers of their own, so none of the session's is live then; the
    sharded and the xdist checks ask for the session's first pair, which the cells then go on using."""
    items = _collected(tmp_path, "--categories", "coding", "--concurrency", "1", matrix=TINY,
                       profile="cpu-amd-epyc-2c", marks="not gpu")
    names = [i.split("[", 1)[0] for i in items]
    live = [names.index("test_two_workers_keep_each_family_together_and_merge"),
            names.index("test_sharded_runs_merge_into_the_unsharded_run")]
    reliability = [i for i, n in enumerate(names) if n.startswith(("test_server_killed", "test_interrupted"))]
    cells = [i for i, n in enumerate(names) if n in ("test_throughput", "test_speedup", "test_lossless")]
    assert reliability and cells, items
    assert max(reliability) < min(live) and max(live) < min(cells), items
