"""The reference study: fixtures/matrices/gemma4-h100.toml and its seeded baseline
baselines/h100-80gb/gemma4-h100.json (Jarvislabs, Gemma 4 MTP vs DFlash on 1x H100, vLLM 0.20.2rc1)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from specguard.judge.aggregate import (
    MEAN_OF_CATEGORIES,
    RATIO_OF_MEANS,
    StoredAggregate,
    aggregate,
    aggregate_id,
    aggregate_speedup,
    judge_aggregate,
    parse_aggregates,
)
from specguard.store.baselines import BaselineFile, load_baseline
from specguard.measure.load import RequestResult, RoundResult
from specguard.config.matrix import Matrix, ServerConfig, load_matrix
from specguard.measure.metrics import Acceptance
from specguard.config.prompts import SPEED_BENCH_CATEGORIES
from specguard.judge.rules import Against, judge_metrics
from specguard.judge.cell import CellMeasurement
from specguard.measure.runner import RoundSample
from specguard.serving.server import build_argv
from specguard.judge.verdict import Verdict

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "fixtures" / "matrices" / "gemma4-h100.toml"
BASELINE = ROOT / "baselines" / "h100-80gb" / "gemma4-h100.json"
LOCAL_PROMPTS = ROOT / "fixtures" / "prompts" / "speed-sample.jsonl"

# The study's serve flags. --max-model-len comes from max_model_len and --no-enable-prefix-caching
# from enable_prefix_caching = false; the suite adds both, so `args` holds the rest.
SERVE_ARGS = ["--max-num-batched-tokens", "4096", "--max-num-seqs", "16", "--gpu-memory-utilization", "0.95"]
DFLASH_ARGS = SERVE_ARGS + ["--attention-backend", "triton_attn"]
MODELS = {"31b": "google/gemma-4-31B-it", "26b-a4b": "google/gemma-4-26B-A4B-it"}
SPECS = {
    "31b-mtp8": {"method": "mtp", "model": "google/gemma-4-31B-it-assistant", "num_speculative_tokens": 8},
    "31b-dflash15": {"method": "dflash", "model": "z-lab/gemma-4-31B-it-DFlash", "num_speculative_tokens": 15,
                     "attention_backend": "flash_attn"},
    "26b-a4b-mtp8": {"method": "mtp", "model": "google/gemma-4-26B-A4B-it-assistant", "num_speculative_tokens": 8},
    "26b-a4b-dflash15": {"method": "dflash", "model": "z-lab/gemma-4-26B-A4B-it-DFlash",
                         "num_speculative_tokens": 15, "attention_backend": "flash_attn"},
}
# The study's headline figures: (server, concurrency) -> (tok/s, published speedup or None).
HEADLINE = {
    ("31b-baseline", 1): (40.3, None), ("31b-mtp8", 1): (125.3, 3.11), ("31b-dflash15", 1): (122.1, 3.03),
    ("31b-baseline", 16): (375, None), ("31b-mtp8", 16): (953, None), ("31b-dflash15", 16): (725, None),
    ("26b-a4b-baseline", 1): (177.1, None), ("26b-a4b-mtp8", 1): (264.2, 1.49),
    ("26b-a4b-dflash15", 1): (306.4, 1.73),
    ("26b-a4b-baseline", 16): (975, None), ("26b-a4b-mtp8", 16): (1808, None), ("26b-a4b-dflash15", 16): (1957, None),
}


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(MATRIX)


@pytest.fixture(scope="module")
def baseline() -> BaselineFile:
    bf = load_baseline(BASELINE)
    assert bf is not None, f"{BASELINE} is missing"
    return bf


@pytest.fixture(scope="module")
def aggregates(baseline: BaselineFile, matrix: Matrix) -> dict[str, StoredAggregate]:
    return parse_aggregates(baseline.aggregates, baseline.path, matrix.id_prefix)


# --- the matrix --------------------------------------------------------------------------------

def test_matrix_loads(matrix: Matrix) -> None:
    assert (matrix.name, matrix.id_prefix, matrix.marker) == ("gemma4-h100", "gemma4", "gpu")
    assert [s.name for s in matrix.server_order()] == [
        "31b-baseline", "31b-mtp8", "31b-dflash15", "26b-a4b-baseline", "26b-a4b-mtp8", "26b-a4b-dflash15"]


def test_132_cells_named_by_model_method_and_tokens(matrix: Matrix) -> None:
    assert matrix.workload.categories is not None
    cells = matrix.cells(list(matrix.workload.categories))
    ids = [c.id for c in cells]
    assert len(cells) == len(set(ids)) == 2 * 3 * 2 * 11 == 132
    for cid in ("gemma4-31b-baseline-c1-coding", "gemma4-31b-mtp8-c16-math", "gemma4-26b-a4b-dflash15-c1-qa",
                "gemma4-26b-a4b-mtp8-c16-roleplay", "gemma4-31b-dflash15-c1-summarization"):
        assert cid in ids
    pattern = re.compile(r"gemma4-(31b|26b-a4b)-(baseline|mtp8|dflash15)-c(1|16)-([a-z]+)")
    assert all(pattern.fullmatch(i) for i in ids)
    assert {(c.server.name, c.concurrency) for c in cells} == set(HEADLINE)


def test_every_speculative_server_is_compared_with_its_own_models_plain_server(matrix: Matrix) -> None:
    speculative = [s for s in matrix.servers if s.is_speculative]
    assert len(speculative) == 4
    for server in speculative:
        size = server.name.rsplit("-", 1)[0]
        assert server.baseline == f"{size}-baseline"     # set explicitly, not inferred
        base = matrix.baseline_of(server)
        assert base is not None and not base.is_speculative
        assert (base.model, base.dtype) == (server.model, server.dtype) == (MODELS[size], "bfloat16")
        assert server.spec == SPECS[server.name]


@pytest.mark.parametrize("name", ["31b-baseline", "31b-mtp8", "31b-dflash15",
                                  "26b-a4b-baseline", "26b-a4b-mtp8", "26b-a4b-dflash15"])
def test_serve_args_are_the_published_ones(matrix: Matrix, name: str) -> None:
    server = matrix.server(name)
    assert list(server.args) == (DFLASH_ARGS if "dflash" in name else SERVE_ARGS)
    assert (server.max_model_len, server.enable_prefix_caching, server.tensor_parallel_size) == (32768, False, 1)
    argv = build_argv(server, model=server.model, port=8000, python="python")
    flags = " ".join(argv)
    assert f"--model {MODELS[name.rsplit('-', 1)[0]]} " in flags
    assert "--dtype bfloat16 " in flags and "--max-model-len 32768 " in flags
    assert argv.count("--no-enable-prefix-caching") == 1 and "--enable-prefix-caching" not in argv
    assert " ".join(DFLASH_ARGS if "dflash" in name else SERVE_ARGS) in flags
    if server.is_speculative:
        assert json.loads(argv[argv.index("--speculative-config") + 1]) == SPECS[name]
    else:
        assert "--speculative-config" not in argv


def test_workload_is_the_studys(matrix: Matrix) -> None:
    w = matrix.workload
    assert w.prompts == "hf:nvidia/SPEED-Bench:qualitative"
    assert w.categories == SPEED_BENCH_CATEGORIES
    assert (w.concurrency, w.max_tokens, w.num_prompts, w.ignore_eos) == ((1, 16), 4096, 80, False)
    assert 2 <= w.rounds <= w.max_rounds <= 5


def test_tolerances_and_lossless(matrix: Matrix) -> None:
    tol = {k: (t.rel, t.direction) for k, t in matrix.tolerances.items()}
    assert tol == {"speedup": (0.05, "higher"), "acceptance_length": (0.05, "higher"),
                   "output_throughput": (0.10, "higher"), "per_position_acceptance": (0.10, "higher")}
    assert (matrix.lossless.near_tie_margin, matrix.lossless.min_exact_match) == (0.1, 0.6)


# --- collection --------------------------------------------------------------------------------

PERF_TESTS = ["tests/test_throughput.py", "tests/test_speedup.py", "tests/test_acceptance.py"]


def _collect(matrix_path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPECGUARD_MATRIX", "PYTEST_ADDOPTS")}
    # Offline on purpose: collection must never need the Hub.
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "--matrix", str(matrix_path),
         "--results-dir", str(tmp_path / "results"), "-p", "no:cacheprovider", *PERF_TESTS],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _count(stdout: str, test: str) -> int:
    return len(re.findall(rf"::{test}\[gemma4-[^\]]+\]$", stdout, flags=re.MULTILINE))


def test_collection_lists_132_throughput_cells_with_local_prompts(tmp_path: Path) -> None:
    """The plugin path (parametrize, markers, ordering) on this GPU-less machine, with the Hub
    source swapped for the local sample, which has all 11 categories."""
    text = MATRIX.read_text(encoding="utf-8")
    assert 'prompts = "hf:nvidia/SPEED-Bench:qualitative"' in text
    local = tmp_path / "gemma4-h100.toml"
    local.write_text(text.replace('"hf:nvidia/SPEED-Bench:qualitative"', json.dumps(str(LOCAL_PROMPTS))),
                     encoding="utf-8")
    done = _collect(local, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (_count(done.stdout, "test_throughput"), _count(done.stdout, "test_speedup"),
            _count(done.stdout, "test_acceptance")) == (132, 88, 88)


def test_collection_lists_132_throughput_cells_offline(tmp_path: Path) -> None:
    """The real matrix, Hub offline: with `workload.categories` listed, SpecguardSession loads the
    prompts on first use, so collecting never downloads hf:nvidia/SPEED-Bench."""
    done = _collect(MATRIX, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _count(done.stdout, "test_throughput") == 132


# --- the seeded baseline -----------------------------------------------------------------------

def test_baseline_loads_and_says_where_it_comes_from(baseline: BaselineFile) -> None:
    assert (baseline.matrix, baseline.profile) == ("gemma4-h100", "h100-80gb")
    assert baseline.environment["vllm_version"] == baseline.provenance["vllm_version"] == "0.20.2rc1"
    assert baseline.environment["device"] == "1x NVIDIA H100 80GB"
    for key in ("source", "url", "dataset", "definition"):
        assert baseline.provenance[key]
    assert "mean over the 11 categories" in baseline.provenance["definition"]


def test_baseline_cells_are_cells_of_the_matrix(baseline: BaselineFile, matrix: Matrix) -> None:
    assert matrix.workload.categories is not None
    ids = {c.id for c in matrix.cells(list(matrix.workload.categories))}
    assert set(baseline.cells) == {"gemma4-31b-mtp8-c1-coding", "gemma4-31b-mtp8-c1-roleplay"} <= ids
    figures = {cid: {k: m.value for k, m in c.metrics.items()} for cid, c in baseline.cells.items()}
    assert figures == {"gemma4-31b-mtp8-c1-coding": {"output_throughput": 173.0, "acceptance_length": 5.90},
                       "gemma4-31b-mtp8-c1-roleplay": {"output_throughput": 76.0, "acceptance_length": 2.62}}
    assert all(m.aggregation and m.note for c in baseline.cells.values() for m in c.metrics.values())


def test_baseline_aggregates_hold_the_headline_figures(aggregates: dict[str, StoredAggregate],
                                                       matrix: Matrix) -> None:
    assert set(aggregates) == {aggregate_id("gemma4", s, c) for s, c in HEADLINE}
    for (server, c), (tput, published_speedup) in HEADLINE.items():
        stored = aggregates[aggregate_id("gemma4", server, c)]
        assert matrix.server(server) is not None
        assert stored.aggregation == MEAN_OF_CATEGORIES
        assert stored.categories == tuple(sorted(SPEED_BENCH_CATEGORIES))
        assert stored.metrics["output_throughput"].value == tput
        assert stored.metrics["output_throughput"].aggregation == MEAN_OF_CATEGORIES
        base = matrix.baseline_of(matrix.server(server))
        if base is None:
            assert set(stored.metrics) == {"output_throughput"}
            continue
        speedup = stored.metrics["speedup"]
        assert speedup.aggregation == RATIO_OF_MEANS and speedup.note
        if published_speedup is not None:
            assert speedup.value == published_speedup
        # Published or derived, a speedup is the ratio of the two stored means, to the rounding shown.
        base_tput = aggregates[aggregate_id("gemma4", base.name, c)].metrics["output_throughput"].value
        assert isinstance(base_tput, float)
        assert speedup.value == pytest.approx(tput / base_tput, abs=0.005)


# --- judging against the seeded baseline -------------------------------------------------------

def _measured(matrix: Matrix, server: ServerConfig, concurrency: int, rates: dict[str, list[float]],
              lengths: list[float] | None = None) -> list[CellMeasurement]:
    """Cells of ``server`` whose round i ran at rates[category][i] tok/s (1000 tokens per round)."""
    out = []
    for cell in matrix.cells(list(rates)):
        if (cell.server, cell.concurrency) != (server, concurrency):
            continue
        samples = []
        for i, rate in enumerate(rates[cell.category]):
            result = RoundResult((RequestResult("p", 0, True, None, 0.1, 1000 / rate, (), 1000),), 1000 / rate,
                                 concurrency)
            acc = None if lengths is None else Acceptance(
                rate=(lengths[i] - 1) / 8, length=lengths[i], per_position=(), drafts=100.0,
                draft_tokens=800.0, accepted_tokens=100.0 * (lengths[i] - 1))
            samples.append(RoundSample(result, acc))
        out.append(CellMeasurement(cell, samples))
    return out


def _speedup_verdict(matrix: Matrix, stored: StoredAggregate, spec_rounds: list[float],
                     base_rounds: list[float]) -> tuple[Verdict, str | None]:
    """Every category runs at the same per-round rates, so the round figures are those rates."""
    cats = list(SPEED_BENCH_CATEGORIES)
    spec = aggregate(_measured(matrix, matrix.server("31b-mtp8"), 1, {c: spec_rounds for c in cats}))
    base = aggregate(_measured(matrix, matrix.server("31b-baseline"), 1, {c: base_rounds for c in cats}))
    check = judge_aggregate(stored, spec, matrix.tolerances, aggregate_speedup(spec, base))["speedup"]
    return check.verdict, check.fails()


@pytest.mark.parametrize(("speedup", "expected"), [(2.9, Verdict.REGRESSED), (3.0, Verdict.OK)])
def test_aggregate_speedup_single_values(matrix: Matrix, aggregates: dict[str, StoredAggregate], speedup: float,
                                         expected: Verdict) -> None:
    # One round each: a degenerate interval. The floor is 3.11 x (1 - 0.05) = 2.9545.
    verdict, fails = _speedup_verdict(matrix, aggregates["gemma4-31b-mtp8-c1"], [40.3 * speedup], [40.3])
    assert verdict is expected
    if expected is Verdict.REGRESSED:
        assert fails == "speedup: 95% CI [2.90, 2.90] lies below 2.95 = baseline 3.11 × (1 − 0.05)"
    else:
        assert fails is None


@pytest.mark.parametrize(("speedup", "expected"), [(2.9, Verdict.REGRESSED), (3.0, Verdict.OK)])
def test_aggregate_speedup_from_rounds(matrix: Matrix, aggregates: dict[str, StoredAggregate], speedup: float,
                                       expected: Verdict) -> None:
    base = [40.2, 40.3, 40.4]
    spec = [40.3 * speedup * f for f in (0.998, 1.0, 1.002)]
    verdict, _ = _speedup_verdict(matrix, aggregates["gemma4-31b-mtp8-c1"], spec, base)
    assert verdict is expected


def test_aggregate_speedup_that_straddles_the_floor_is_unknown(matrix: Matrix,
                                                               aggregates: dict[str, StoredAggregate]) -> None:
    verdict, fails = _speedup_verdict(matrix, aggregates["gemma4-31b-mtp8-c1"], [116.0, 122.0], [40.3, 40.3])
    assert verdict is Verdict.UNKNOWN and fails is None


def test_aggregate_throughput_against_the_headline(matrix: Matrix, aggregates: dict[str, StoredAggregate]) -> None:
    # 31B MTP c=1: coding 173, roleplay 76, the other nine making the mean 125.3 (the study's figures).
    rest = (125.3 * 11 - 173 - 76) / 9
    rates = {c: [{"coding": 173.0, "roleplay": 76.0}.get(c, rest)] for c in SPEED_BENCH_CATEGORIES}
    measured = aggregate(_measured(matrix, matrix.server("31b-mtp8"), 1, rates))
    assert measured.mean_of_categories.estimate == pytest.approx(125.3)
    check = judge_aggregate(aggregates["gemma4-31b-mtp8-c1"], measured, matrix.tolerances)["output_throughput"]
    assert check.verdict is Verdict.OK
    slow = aggregate(_measured(matrix, matrix.server("31b-mtp8"), 1, {c: [r[0] * 0.85] for c, r in rates.items()}))
    assert judge_aggregate(aggregates["gemma4-31b-mtp8-c1"], slow, matrix.tolerances)["output_throughput"].verdict \
        is Verdict.REGRESSED


@pytest.mark.parametrize(
    ("category", "rates", "lengths", "expected"),
    [
        ("coding", [172.0, 173.0, 174.0], [5.88, 5.90, 5.92], {"output_throughput": Verdict.OK,
                                                               "acceptance_length": Verdict.OK}),
        ("coding", [150.0, 151.0, 152.0], [5.30, 5.35, 5.40], {"output_throughput": Verdict.REGRESSED,
                                                               "acceptance_length": Verdict.REGRESSED}),
        ("roleplay", [75.0, 76.0, 77.0], [2.60, 2.62, 2.64], {"output_throughput": Verdict.OK,
                                                              "acceptance_length": Verdict.OK}),
        ("roleplay", [64.0, 65.0, 66.0], [2.60, 2.62, 2.64], {"output_throughput": Verdict.REGRESSED,
                                                              "acceptance_length": Verdict.OK}),
    ],
)
def test_per_category_cells_compare(matrix: Matrix, baseline: BaselineFile, category: str, rates: list[float],
                                    lengths: list[float], expected: dict[str, Verdict]) -> None:
    # Floors: coding 173 x 0.9 = 155.7 tok/s and 5.90 x 0.95 = 5.605; roleplay 68.4 and 2.489.
    (m,) = _measured(matrix, matrix.server("31b-mtp8"), 1, {category: rates}, lengths)
    checks = judge_metrics(m.interval, m.position_interval, Against(baseline.cells[m.cell.id], "h100-80gb", True),
                           matrix.tolerances, None)
    assert {k: c.verdict for k, c in checks.items()} == expected
