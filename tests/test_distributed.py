"""pytest-xdist on the CPU: two workers, cells of one server config on one worker, merged results.

Runs an inner ``pytest -n 2 --dist loadgroup`` on the tiny CPU matrix (one category, one round)
and checks the merged benchmark JSON the controller writes (pytest-benchmark is off under xdist).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specguard.server import vllm_distribution

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(vllm_distribution() is None, reason="needs vLLM (pip install 'specguard[cpu]')"),
]


def test_two_workers_group_by_server_and_merge(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    bench = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", "--dist", "loadgroup",
           "-m", "cpu", "--matrix", str(ROOT / "fixtures/matrices/tiny-cpu.toml"), "--categories", "coding",
           "--rounds", "1", "--results-dir", str(tmp_path / "results"), "--baseline-dir", str(tmp_path / "none"),
           "--benchmark-json", str(bench), "-o", "addopts=",
           str(ROOT / "tests/test_throughput.py"), str(ROOT / "tests/test_speedup.py"),
           str(ROOT / "tests/test_acceptance.py")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=2400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]

    merged = json.loads(bench.read_text())["benchmarks"]
    cells = {b["extra_info"]["cell"]: b["extra_info"] for b in merged}
    expected = {f"tiny-{s}-c{c}-coding" for s in ("baseline", "ngram4", "self4") for c in (1, 4)}
    assert set(cells) == expected, out[-3000:]
    assert all(info["output_throughput"] > 0 for info in cells.values())
    for cid, info in cells.items():
        if info["server"] != "baseline":
            assert info["speedup"] and info["acceptance_length"], cid   # plain rounds reached this worker
    workers = {}
    for info in cells.values():
        workers.setdefault(info["server"], set()).add(info["worker"])
    assert all(len(w) == 1 for w in workers.values()), workers        # one worker per server config
    assert len(set().union(*workers.values())) == 2, workers           # and both workers were used

    records = [json.loads(line) for line in (tmp_path / "results" / "cells.jsonl").read_text().splitlines()]
    starts = [r for r in records if r["kind"] == "server"]
    assert sorted(r["name"] for r in starts if r["ok"]) == ["baseline", "ngram4", "self4"], starts
    assert "vLLM servers started: 3" in out
