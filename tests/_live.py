"""What the tests that run an inner pytest against the outer session's live servers share: the
server configs written back as TOML, the n-gram family to measure, and the inner pytest itself
(``--vllm-url NAME=URL`` per server, so no inner run starts a server; the API key travels in the
environment, never on a command line)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from specguard.config.matrix import Matrix, ServerConfig

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "fixtures" / "prompts" / "speed-sample.jsonl"


def ngram_pair(matrix: Matrix) -> tuple[ServerConfig, ServerConfig] | None:
    """The first n-gram server with performance cells and its plain server, in start order."""
    for server in matrix.server_order():
        plain = matrix.baseline_of(server)
        if server.perf and plain is not None and plain.perf and (server.spec or {}).get("method") == "ngram":
            return plain, server
    return None


def live_ngram_pair(specguard: Any, vllm_servers: Any) -> tuple[ServerConfig, ServerConfig, Any, Any]:
    """(plain config, n-gram config, plain server, n-gram server), live in the outer session; skips
    the calling test where the matrix has no such pair or one URL serves every server."""
    pair = ngram_pair(specguard.matrix)
    if pair is None:
        pytest.skip(f"matrix {specguard.matrix.name} has no n-gram server with a plain server to pair it with")
    plain, spec = pair
    if specguard.one_url(spec):
        pytest.skip(specguard.one_url(spec))
    return (plain, spec, *vllm_servers.pair(plain, spec))


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


def write_live_matrix(path: Path, name: str, marker: str, description: str, servers: list[ServerConfig],
                      categories: list[str]) -> Path:
    """A matrix of ``servers`` (every field written out) measured as cheaply as a real cell gets:
    c=1, 8 tokens, 2 prompts, one round (one pair), no warm-up (the outer servers are warm)."""
    tables = "\n".join(server_toml(s) for s in servers)
    path.write_text(f"""version = 1
name = "{name}"
id_prefix = "{name.split('-')[0]}"
marker = "{marker}"
description = {json.dumps(description)}

{tables}
[workload]
prompts = {json.dumps(str(PROMPTS))}
categories = {json.dumps(categories)}
concurrency = [1]
max_tokens = 8
num_prompts = 2
warmup_requests = 0
rounds = 1
max_rounds = 1
requests_per_concurrency = 1
request_timeout_s = 300
""")
    return path


def inner_pytest(tmp: Path, name: str, matrix: Path, urls: dict[str, str], api_key: str,
                 *extra: str) -> tuple[int, str, float]:
    """(exit status, output, seconds) of one inner pytest of the throughput and speedup tests,
    writing into tmp/name/, measuring the servers at ``urls`` (``--vllm-url NAME=URL`` each)."""
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


