"""pytest-xdist: two workers, each server family (a plain server and the speculative servers compared
with it) on one worker, the families in parallel, the results merged by the controller.

An inner ``pytest -n 2 --dist loadgroup`` runs a matrix of two families, ``fa`` and ``fb``, each a
plain server and an n-gram server copied field by field from the outer matrix's, and all four
measured through ``--vllm-url`` on the outer session's live plain and n-gram servers: the inner run
starts no server, so the check costs seconds, not four start-ups. One category, c=1, 8 tokens, one
pair, no floors and no baseline file (nothing to judge: the inner run must exit 0). What it checks
is the xdist path itself: the suite's scheduler keeps each family on one worker (so a speedup
divides rounds measured by the same worker), the two families go to different workers, and the
controller's ``--benchmark-json`` (pytest-benchmark is off under xdist) and the shared
``cells.jsonl`` hold every cell. Which cores or GPUs each worker's own servers get is
``device_env``'s job, unit-tested in ``tests/unit/test_distributed_env.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from _live import inner_pytest, live_ngram_pair, write_live_matrix

from specguard.config.matrix import ServerConfig
from specguard.serving.server import vllm_distribution
from specguard.store.benchjson import load_benchmark
from specguard.store.results import read_records

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(vllm_distribution() is None, reason="needs vLLM (pip install 'specguard[cpu]')"),
]
FAMILIES = ("fa", "fb")


def write_families(tmp: Path, marker: str, plain: ServerConfig, spec: ServerConfig) -> Path:
    servers = []
    for fam in FAMILIES:
        servers.append(dataclasses.replace(plain, name=fam, min_speedup=()))
        servers.append(dataclasses.replace(spec, name=f"{fam}-ngram4", baseline=fam, min_speedup=()))
    return write_live_matrix(tmp / "families.toml", "live-families", marker,
                             "tests/test_distributed.py: two families on the outer session's live servers",
                             servers, ["coding"])


def test_two_workers_keep_each_family_together_and_merge(specguard, vllm_servers, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    plain, spec, plain_server, spec_server = live_ngram_pair(specguard, vllm_servers)
    urls = {}
    for fam in FAMILIES:
        urls[fam], urls[f"{fam}-ngram4"] = plain_server.base_url, spec_server.base_url
    matrix = write_families(tmp_path, specguard.matrix.marker, plain, spec)

    code, out, seconds = inner_pytest(tmp_path, "xdist", matrix, urls, specguard.api_key,
                                      "-n", "2", "--dist", "loadgroup")
    assert code == 0, out[-6000:]

    servers = [f"{fam}{suffix}" for fam in FAMILIES for suffix in ("", "-ngram4")]
    cells = {c.cell: c for c in load_benchmark(tmp_path / "xdist" / "benchmark.json").cells}
    assert set(cells) == {f"live-{s}-c1-coding" for s in servers}, out[-3000:]
    records = [r for r in read_records(tmp_path / "xdist" / "cells.jsonl") if r["kind"] == "cell"]
    assert {r["cell"] for r in records} == set(cells), records
    assert all(r["output_throughput"] > 0 for r in records), records
    for fam in FAMILIES:   # the plain rounds of the pair were measured on the same worker
        assert next(r for r in records if r["server"] == f"{fam}-ngram4")["speedup"], fam
    workers: dict[str, set[int]] = {}
    for r in records:
        workers.setdefault(r["server"].removesuffix("-ngram4"), set()).add(r["worker"])
    assert all(len(w) == 1 for w in workers.values()), workers          # one worker per family
    assert workers["fa"] != workers["fb"], workers                      # the families ran in parallel
    started = [r["name"] for r in read_records(tmp_path / "xdist" / "cells.jsonl") if r["kind"] == "server"]
    assert not started, f"the inner run started {started}"
    assert len({r["run"] for r in records}) == 1, "the workers' records carry one run id"
    specguard.record("xdist_check", {"cells": len(cells), "workers": {f: sorted(w) for f, w in workers.items()},
                                     "seconds": round(seconds, 1)})
