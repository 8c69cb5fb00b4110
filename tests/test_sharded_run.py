"""--shard K/N and ``python -m specguard merge`` against real servers, as cheaply as it gets: the
outer session's live plain and n-gram servers (the tiny CPU matrix's), measured through
``--vllm-url`` (no inner run starts a server) by three inner pytests, ``--shard 1/3``, ``2/3`` and
``3/3``, and by one unsharded inner pytest, all four at once; then the shards are merged.

The inner matrix has the outer matrix's two server configs (copied field by field), two
categories (coding, math), c=1, 8 tokens, 2 prompts, one round (one pair), no warm-up: one family
× two categories is two units, so one of the three shards is empty and must exit 0 saying so.
There is no baseline file, so verdicts come from the servers' own floors (min_speedup) only; how
many differ between the merged and the unsharded run (one pair each, so noise) goes into the
outer record, not into an assertion.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _live import ROOT, inner_pytest, live_ngram_pair, write_live_matrix

from specguard.config.matrix import Matrix, ServerConfig, load_matrix
from specguard.plugin import shard as sharding
from specguard.serving.server import vllm_distribution
from specguard.store.benchjson import load_benchmark
from specguard.store.results import read_records

SHARDS = 3
pytestmark = [
    pytest.mark.shard,
    pytest.mark.skipif(vllm_distribution() is None, reason="needs vLLM (pip install 'specguard[cpu]')"),
]


def write_inner_matrix(tmp: Path, outer: Matrix, plain: ServerConfig, spec: ServerConfig) -> Path:
    return write_live_matrix(tmp / "shard-demo.toml", "shard-demo", outer.marker,
                             "tests/test_sharded_run.py: the outer session's plain and n-gram servers, two categories",
                             [plain, spec], ["coding", "math"])


def structure(markdown: str) -> list[str]:
    """A report's headings (but the title) and its tables' header rows: what it shows, not the numbers."""
    lines = markdown.splitlines()
    out = [line for line in lines if line.startswith("##")]
    out += [lines[i - 1] for i, line in enumerate(lines) if i and re.fullmatch(r"\|[-:| ]+\|", line)]
    return out


def test_sharded_runs_merge_into_the_unsharded_run(specguard, vllm_servers, tmp_path: Path) -> None:
    plain, spec, plain_server, spec_server = live_ngram_pair(specguard, vllm_servers)
    urls = {plain.name: plain_server.base_url, spec.name: spec_server.base_url}
    matrix = write_inner_matrix(tmp_path, specguard.matrix, plain, spec)
    inner = load_matrix(matrix)
    plan = sharding.plan(inner, inner.cells(["coding", "math"]), {}, SHARDS)
    empty = [k for k in range(1, SHARDS + 1) if not plan.units_of(k)]

    # The shards run at once, as on separate CI machines (and the unsharded run beside them): each
    # inner pytest mostly waits for the servers, and nothing here judges their timings.
    args = {f"shard-{k}": ("--shard", f"{k}/{SHARDS}") for k in range(1, SHARDS + 1)} | {"whole": ()}
    with ThreadPoolExecutor(len(args)) as ex:
        futures = {name: ex.submit(inner_pytest, tmp_path, name, matrix, urls, specguard.api_key, *extra)
                   for name, extra in args.items()}
    runs: dict[str, tuple[int, str, float]] = {name: f.result() for name, f in futures.items()}
    for name, (code, out, _) in runs.items():
        assert code in (0, 1), f"inner {name} exited {code}:\n{out[-4000:]}"   # 1: a verdict failed, not a crash
        started = [r["name"] for r in read_records(tmp_path / name / "cells.jsonl") if r["kind"] == "server"]
        assert not started, f"inner {name} started {started}:\n{out[-3000:]}"
    for k in empty:
        code, out, _ = runs[f"shard-{k}"]
        assert code == 0 and f"shard {k}/{SHARDS} is empty" in out and "exit status 0" in out, out[-3000:]

    merged = tmp_path / "merged"
    done = subprocess.run([sys.executable, "-m", "specguard", "merge",
                           *[str(tmp_path / f"shard-{k}") for k in range(1, SHARDS + 1)],
                           "--out", str(merged), "--title", "shard demo", "--no-plots"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env={k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"})
    whole_report = subprocess.run([sys.executable, "-m", "specguard", "report", str(tmp_path / "whole" / "benchmark.json"),
                                   "--out", str(tmp_path / "whole" / "report"), "--title", "shard demo", "--no-plots"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                                  env={k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"})
    assert whole_report.returncode == 0, whole_report.stdout + whole_report.stderr

    records = read_records(merged / "cells.jsonl")
    regressed = [r["cell"] for r in records if r.get("kind") == "cell" and r.get("verdict") == "REGRESSED"]
    shard_failed = [n for n, (code, _, _) in runs.items() if n.startswith("shard") and code != 0]
    assert done.returncode == (1 if regressed or shard_failed else 0), done.stdout + done.stderr

    got = {c.cell: c for c in load_benchmark(merged / "benchmark.json").cells}
    want = {c.cell: c for c in load_benchmark(tmp_path / "whole" / "benchmark.json").cells}
    assert set(got) == set(want) == {c.id for c in inner.cells(["coding", "math"])}
    assert structure((merged / "report" / "report.md").read_text()) == \
        structure((tmp_path / "whole" / "report" / "report.md").read_text())
    differ = sorted(c for c in got if got[c].verdict != want[c].verdict)
    specguard.record("shard_check", {
        "matrix": inner.name, "shards": SHARDS, "units": {u.id: plan.shard_of[u.id] for u in plan.units},
        "empty_shards": empty, "cells": len(got), "verdicts_differ": len(differ), "differing": differ,
        "verdicts": {c: [got[c].verdict, want[c].verdict] for c in sorted(got)},
        "exit": {n: code for n, (code, _, _) in runs.items()} | {"merge": done.returncode},
        "seconds": {n: round(s, 1) for n, (_, _, s) in runs.items()}})
