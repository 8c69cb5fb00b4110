"""specguard.report.build / upgrade.ab / report.roofline / store.benchjson: the report on a real run and
on synthetic runs with known figures, its plots, malformed inputs, the step summary and the A/B comparison."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.__main__ import main
from specguard.upgrade.ab import ab_report
from specguard.store.benchjson import load_benchmark
from specguard.config.errors import InputError
from specguard.report.build import order_categories, write_report
from specguard.report.roofline import bandwidth_for, model_folder, parse_bandwidth, weight_bytes

SAMPLE = Path(__file__).parent / "data" / "sample-benchmark.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
H100 = "1x NVIDIA H100 80GB HBM3"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes"
    height, width = imread(path).shape[:2]
    assert width >= 600 and height >= 300


# --- synthetic runs built from the sample's structure -------------------------------------------

def _templates() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    raw = json.loads(SAMPLE.read_text())
    plain = next(b for b in raw["benchmarks"] if b["extra_info"]["method"] == "none")
    spec = next(b for b in raw["benchmarks"] if b["extra_info"]["method"] != "none")
    return raw, plain, spec


def bench_entry(server: str, method: str, k: int | None, c: int, category: str, rounds: list[float],
                base_rounds: list[float] | None = None, model: str = "org/model", **extra: Any) -> dict[str, Any]:
    """One benchmark entry shaped like the sample's, with figures computed from ``rounds``."""
    _, plain, spec = _templates()
    entry = copy.deepcopy(spec if base_rounds else plain)
    cell = f"syn-{server}-c{c}-{category}"
    tput = sum(rounds) / len(rounds)
    info = entry["extra_info"]
    info.update(cell=cell, server=server, method=method, num_speculative_tokens=k, concurrency=c,
                category=category, model=model, rounds=len(rounds), round_throughputs=rounds,
                output_throughput=tput, output_throughput_ci=[min(rounds), max(rounds)],
                device=H100, profile="h100-80gb", vllm_version="0.25.0", warnings=[])
    if base_rounds:
        base = sum(base_rounds) / len(base_rounds)
        info.update(baseline_round_throughputs=base_rounds, speedup=tput / base,
                    speedup_ci=[min(rounds) / base, max(rounds) / base])
    info.update(extra)
    entry.update(name=f"test_throughput[{cell}]", param=cell)
    return entry


def write_bench(path: Path, entries: list[dict[str, Any]], **top: Any) -> Path:
    raw, _, _ = _templates()
    raw.update(benchmarks=entries, **top)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw, indent=1))
    return path


# Plain: 335 tok/s at c=1 in every category (10% of a 1 GB model's H100 roofline of 3350 tok/s).
SPEEDUPS = {"ngram4": {"coding": 2.0, "math": 1.8, "writing": 1.2, "roleplay": 1.1, "qa": 1.5},
            "eagle3": {"coding": 3.0, "math": 2.5, "writing": 2.0, "roleplay": 1.5, "qa": 2.0}}
PLAIN = {1: 335.0, 8: 2000.0}


def synthetic(tmp_path: Path) -> tuple[Path, Path]:
    """Three servers × five categories × c in (1, 8); a model folder whose index says 1 GB."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "model-00001-of-00001.safetensors").write_bytes(b"\0" * 64)
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 10**9},
                                                                    "weight_map": {}}))
    entries = []
    for c, base in PLAIN.items():
        base_rounds = [base * 0.99, base, base * 1.01]
        for cat in SPEEDUPS["ngram4"]:
            entries.append(bench_entry("baseline", "none", None, c, cat, base_rounds, model=str(model),
                                       server_memory_bytes=2 * 2**30, kv_cache_tokens=123456))
        for server, k, method in (("ngram4", 4, "ngram"), ("eagle3", 3, "eagle3")):
            for cat, s in SPEEDUPS[server].items():
                extra: dict[str, Any] = {"acceptance_length": 1 + s, "drafts": 100.0 if cat == "coding" else 300.0,
                                         "per_position_acceptance": ([0.9, 0.6, 0.3, 0.1] if k == 4 else [0.8, 0.5, 0.3]),
                                         "verdict": "OK", "verdicts": {"speedup": "OK"}}
                if (server, c, cat) == ("eagle3", 1, "writing"):
                    extra.update(verdict="REGRESSED", verdicts={"speedup": "REGRESSED", "acceptance_length": "OK"})
                if (server, c, cat) == ("ngram4", 8, "math"):
                    extra.update(verdict="UNKNOWN", verdicts={"speedup": "UNKNOWN"},
                                 warnings=[("syn-ngram4-c8-math output_throughput: the standard deviation is "
                                           "12% of the mean; the result may be unstable")])
                if cat == "coding":
                    extra["per_position_acceptance"] = [1.0, 1.0, 1.0, 1.0][:k]
                entries.append(bench_entry(server, method, k, c, cat, [base * s] * 3, base_rounds,
                                           model=str(model), **extra))
    return write_bench(tmp_path / "run" / "benchmark.json", entries), model


# --- the sample run -----------------------------------------------------------------------------

def test_sample_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "report", SAMPLE, "--out", tmp_path, "--title", "Nightly tiny-cpu")
    assert rc == 0, err
    assert f"report written to {tmp_path / 'report.md'}" in out
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Nightly tiny-cpu\n")
    assert "vLLM 0.32.0 on AMD EPYC (2 cores)" in md
    assert "| category | tok/s | speedup [95% CI] | accept len | of roofline | verdict |" in md
    assert "| coding | 12.5 | - | - | - | no baseline |" in md                      # plain, c=1
    assert "| coding | 17.0 | 1.36 [1.23, 1.45] | 3.18 | - | no baseline |" in md  # ngram4, c=1
    assert "| coding | 31.8 | 0.89 [0.82, 0.97] | 3.18 | no baseline |" in md      # ngram4, c=4
    assert "| ngram4 (ngram, k=4) | c=1 | 0.65 | 0.59 | 0.53 | 0.41 |" in md
    assert "mean of category throughputs" in md and "Nothing regressed" in md
    assert "![speedup by category](speedup_by_category.png)" in md
    for name in ("speedup_by_category.png", "acceptance_by_position.png"):
        assert_png(tmp_path / name)


def test_default_out_dir_is_next_to_the_first_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "results" / "benchmark.json"
    src.parent.mkdir()
    src.write_bytes(SAMPLE.read_bytes())
    assert run_cli(capsys, "report", src, "--no-plots")[0] == 0
    assert (tmp_path / "results" / "specguard-report" / "report.md").is_file()


def test_cpu_roofline_needs_a_bandwidth_override(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The builtin model resolves only from the cache; a sparse 0.5 GB file stands in for it.
    monkeypatch.setenv("SPECGUARD_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    with open(folder / "model.safetensors", "wb") as f:
        f.truncate(500_000_000)
    assert run_cli(capsys, "report", SAMPLE, "--out", tmp_path / "a", "--no-plots")[0] == 0
    row = "| `builtin:smollm2-135m-instruct` | AMD EPYC (2 cores) | 0.500 GB | - | - | 12.5 | - |"
    assert row in (tmp_path / "a" / "report.md").read_text()
    assert run_cli(capsys, "report", SAMPLE, "--out", tmp_path / "b", "--bandwidth", "cpu=0.02",
                   "--no-plots")[0] == 0
    md = (tmp_path / "b" / "report.md").read_text()
    # 0.02 TB/s / 0.5 GB = 40 tok/s; 12.49 / 40 = 31.2%
    assert "| 0.500 GB | 0.02 TB/s (--bandwidth cpu=0.02) | 40.0 | 12.5 | 31.2% |" in md
    assert "| coding | 12.5 | - | - | 31.2% | no baseline |" in md


def test_builtin_model_not_cached_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECGUARD_CACHE", str(tmp_path / "empty"))
    assert model_folder("builtin:smollm2-135m-instruct") is None
    assert not (tmp_path / "empty").exists()   # looked, never fetched


# --- synthetic runs with known figures ----------------------------------------------------------

def test_synthetic_report_tables(tmp_path: Path) -> None:
    bench, model = synthetic(tmp_path)
    md = write_report([bench], tmp_path / "out").read_text()
    # Categories sit in their groups: coding, math | writing, roleplay | the rest.
    assert "| server | c | coding | math | writing | roleplay | qa | coding/math/stem (mean) | " \
           "writing/roleplay (mean) | mean |" in md
    # Ratio of means: eagle3 c=1 coding/math (3.0 + 2.5) / 2 = 2.75; writing/roleplay 1.75; all 11/5.
    assert "| eagle3 (eagle3, k=3) | c=1 | 3.00 | 2.50 | 2.00 | 1.50 | 2.00 | 2.75 | 1.75 | 2.20 |" in md
    assert "| ngram4 (ngram, k=4) | c=8 | 2.00 | 1.80 | 1.20 | 1.10 | 1.50 | 1.90 | 1.15 | 1.52 |" in md
    # Per-cell table: tok/s, speedup with CI, acceptance length, roofline share (1005 / 3350 = 30%), verdict.
    assert "| coding | 1005.0 |" not in md and "| coding | 1005 | 3.00 [3.00, 3.00] | 4.00 | 30.0% | OK |" in md
    assert "| writing | 670.0 | 2.00 [2.00, 2.00] | 3.00 | 20.0% | **REGRESSED (speedup)** |" in md
    assert "| *coding/math/stem* | 921.2 | 2.75 | 3.75 | 27.5% |  |" in md
    assert "| **mean of 5** | 737.0 | 2.20 | 3.20 | 22.0% | REGRESSED |" in md
    assert "| coding | 335.0 | - | - | 10.0% | OK |" not in md   # plain cells carry no verdict here
    assert "| coding | 335.0 | - | - | 10.0% | no baseline |" in md
    # Roofline: 3.35 TB/s / 1 GB = 3350 tok/s; plain c=1 335 tok/s = 10%.
    assert (f"| `{model}` | {H100} | 1.000 GB | 3.35 TB/s (table: H100 SXM) | 3350 | 335.0 | 10.0% |") in md
    # Memory per server config, "-" where the input has none.
    assert f"| baseline (plain) | `{model}` | {H100} | 2.00 GiB | 123,456 |" in md
    assert f"| ngram4 (ngram, k=4) | `{model}` | {H100} | - | - |" in md
    # Pooled acceptance, weighted by drafts: coding 100 drafts at 1.0, four categories 300 at 0.8.
    assert "| eagle3 (eagle3, k=3) | c=1 | 0.82 | 0.54 | 0.35 | - |" in md
    for name in ("speedup_by_category.png", "acceptance_by_position.png"):
        assert_png(tmp_path / "out" / name)


def test_what_regressed_is_at_the_top(tmp_path: Path) -> None:
    bench, _ = synthetic(tmp_path)
    md = write_report([bench], tmp_path / "out", plots=False).read_text()
    top = md[md.index("## What regressed"):md.index("## Speedup by category")]
    assert top.index("**REGRESSED** `syn-eagle3-c1-writing`: speedup REGRESSED") < top.index(
        "**UNKNOWN** `syn-ngram4-c8-math`: speedup UNKNOWN")
    assert "- syn-ngram4-c8-math output_throughput: the standard deviation is 12% of the mean" in top


def test_bandwidth_override_beats_the_table(tmp_path: Path) -> None:
    bench, _ = synthetic(tmp_path)
    md = write_report([bench], tmp_path / "out", bandwidth={"h100": 2.5}, plots=False).read_text()
    assert "| 2.5 TB/s (--bandwidth h100=2.5) | 2500 | 335.0 | 13.4% |" in md


def test_several_inputs_and_skipped_entries(tmp_path: Path) -> None:
    bench, _ = synthetic(tmp_path)
    raw = json.loads(SAMPLE.read_text())
    raw["benchmarks"] += [{"name": "test_other", "stats": {}}, {"name": "x", "extra_info": {"note": 1}}]
    other = tmp_path / "cpu.json"
    other.write_text(json.dumps(raw))
    md = write_report([bench, other], tmp_path / "out", plots=False).read_text()
    assert f"`{other}` (4 cells, 2 entries without a cell skipped)" in md
    assert "vLLM 0.25.0, 0.32.0" in md
    assert "smollm2-135m-instruct on AMD EPYC (2 cores): ngram4 (ngram, k=4), c=4" in md


def test_no_cells(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "benchmark.json", [{"name": "test_unit", "stats": {}}])
    md = write_report([bench], tmp_path / "out").read_text()
    assert "(0 cells, 1 entry without a cell skipped)" in md and "No specguard cells in the input" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md"]


def test_order_categories() -> None:
    assert order_categories(["qa", "writing", "stem", "coding", "rag", "roleplay", "math"]) == \
        ["coding", "math", "stem", "writing", "roleplay", "qa", "rag"]


# --- roofline -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("device", "profile", "expected"), [
    (H100, "h100-80gb", 3.35), ("NVIDIA H100 PCIe", None, 2.0), ("1x NVIDIA H200", "h200", 4.8),
    ("NVIDIA A100-SXM4-80GB", None, 2.0), ("NVIDIA L40S", None, 0.86), ("NVIDIA B200", None, 8.0),
    ("NVIDIA GH200 480GB", None, None), ("AMD EPYC (2 cores)", "cpu-amd-epyc-2c", None), (None, None, None),
])
def test_bandwidth_table(device: str | None, profile: str | None, expected: float | None) -> None:
    bw = bandwidth_for(device, profile)
    assert (bw.tb_s if bw else None) == expected


def test_weight_bytes_sparse_file_and_index(tmp_path: Path) -> None:
    with open(tmp_path / "model.safetensors", "wb") as f:
        f.truncate(10**9)
    assert weight_bytes(tmp_path) == 10**9
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {"total_size": 123}}')
    assert weight_bytes(tmp_path) == 123
    assert weight_bytes(tmp_path / "nowhere") is None


@pytest.mark.parametrize("bad", ["H100", "H100=", "=3", "H100=abc", "H100=-1", "H100=nan"])
def test_bad_bandwidth(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="Expected GPU=TB/s"):
        parse_bandwidth(bad)
    with pytest.raises(SystemExit) as exc:
        main(["report", str(SAMPLE), "--bandwidth", bad])
    assert exc.value.code == 2
    assert f"argument --bandwidth: could not parse {bad!r}" in capsys.readouterr().err


# --- malformed input ----------------------------------------------------------------------------

def _sample_with(mutate: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(SAMPLE.read_text())
    mutate(raw)
    return raw


@pytest.mark.parametrize(("text", "where"), [
    ("{not json", "not valid JSON"),
    ("[]", "expected a pytest-benchmark JSON object"),
    ('{"benchmarks": 3}', "benchmarks: expected a list"),
    ('{"benchmarks": ["x"]}', "benchmarks[0]: expected an object, got 'x'"),
    (json.dumps(_sample_with(lambda r: r["benchmarks"][1]["extra_info"].update(concurrency="4"))),
     "benchmarks[1].extra_info.concurrency: expected an integer >= 1, got '4'"),
    (json.dumps(_sample_with(lambda r: r["benchmarks"][2]["extra_info"].update(speedup_ci=[2, 1]))),
     "benchmarks[2].extra_info.speedup_ci: expected [low, high] with low <= high, or null, got [2, 1]"),
    (json.dumps(_sample_with(lambda r: r["benchmarks"][0]["extra_info"].update(output_throughput=float("nan")))),
     "benchmarks[0].extra_info.output_throughput: expected a finite number, got nan"),
    (json.dumps(_sample_with(lambda r: r["benchmarks"][3]["extra_info"].pop("category"))),
     "benchmarks[3].extra_info.category: Field required"),
    (json.dumps(_sample_with(lambda r: r["benchmarks"][3]["extra_info"].update(verdict="BAD"))),
     "benchmarks[3].extra_info.verdict: expected one of OK, REGRESSED, IMPROVED, UNKNOWN, got 'BAD'"),
])
def test_malformed_input_names_file_and_field(text: str, where: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    rc, _, err = run_cli(capsys, "report", SAMPLE, bad, "--out", tmp_path / "out")
    assert rc == 2
    assert err.startswith(f"specguard report: error: {bad}: ") and where in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()   # nothing half-written


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(capsys, "report", tmp_path / "missing.json")
    assert rc == 2 and f"{tmp_path / 'missing.json'}: no such file" in err


_KEYS = ["cell", "server", "model", "method", "concurrency", "category", "output_throughput", "speedup",
         "speedup_ci", "per_position_acceptance", "drafts", "warnings", "verdict", "verdicts",
         "num_speculative_tokens", "round_throughputs", "server_memory_bytes"]
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                 max_size=2), max_leaves=5)


@settings(max_examples=30, deadline=None)
@given(index=st.integers(0, 3), key=st.sampled_from(_KEYS), value=_JSON)
def test_any_field_value_loads_or_names_the_field(tmp_path_factory: pytest.TempPathFactory, index: int,
                                                  key: str, value: Any) -> None:
    raw = json.loads(SAMPLE.read_text())
    raw["benchmarks"][index]["extra_info"][key] = value
    path = tmp_path_factory.mktemp("fuzz") / "bench.json"
    path.write_text(json.dumps(raw))
    try:
        run = load_benchmark(path)
    except InputError as exc:
        assert str(exc).startswith(f"{path}: benchmarks[{index}].extra_info.{key}: expected ")
    else:
        assert len(run.cells) == 4


# --- step summary and lossless ------------------------------------------------------------------

def test_github_step_summary_is_appended(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("## earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for _ in range(2):
        assert run_cli(capsys, "report", SAMPLE, "--out", tmp_path / "out", "--no-plots")[0] == 0
    text = summary.read_text()
    assert text.startswith("## earlier step\n# specguard report\n")
    assert text.count("# specguard report\n") == 2
    assert "| coding | 17.0 | 1.36 [1.23, 1.45] |" in text
    assert "![" not in text   # images do not render from a step summary; the artifact has them


def test_no_step_summary_without_the_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "report", SAMPLE, "--out", "out", "--no-plots")[0] == 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "report.md"]


def _lossless_report(server: str, c: int, divergences: list[dict[str, Any]], compared: int = 12) -> dict[str, Any]:
    near = sum(d["kind"] == "near-tie" for d in divergences)
    return {"case": f"syn-{server}-c{c}-lossless", "server": server, "reference": "baseline", "concurrency": c,
            "mode": "strict", "near_tie_margin": 0.05, "compared": compared,
            "identical": compared - len(divergences), "near_ties": near,
            "real_divergences": len(divergences) - near, "exact_match_rate": 1 - len(divergences) / compared,
            "divergences": divergences}


def test_lossless_tables(tmp_path: Path) -> None:
    bench, _ = synthetic(tmp_path)
    div = [{"prompt_id": "coding-3", "index": 17, "base_token": 1234, "spec_token": 987, "margin": 0.0123,
            "kind": "near-tie", "base_top": [[1234, -0.5], [987, -0.5123]], "spec_top": [[987, -0.5]]},
           {"prompt_id": "math-1", "index": 40, "base_token": -1, "spec_token": 55, "margin": None,
            "kind": "real", "base_top": [], "spec_top": []}]
    (bench.parent / "lossless.json").write_text(json.dumps(
        {"version": 1, "reports": [_lossless_report("ngram4", 1, []), _lossless_report("ngram4", 8, div)]}))
    md = write_report([bench], tmp_path / "out", plots=False).read_text()
    assert "| ngram4 | baseline | 1 | strict | 12 | 12 | 0 | 0 |" in md
    assert "| ngram4 | baseline | 8 | strict | 12 | 10 | 1 | **1** |" in md
    assert "| ngram4 | 8 | coding-3 | 17 | 1234 | 987 | 0.0123 | near-tie |" in md
    assert "| ngram4 | 8 | math-1 | 40 | <end> | 55 | - | real |" in md


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    """pytest-benchmark and the suite add keys over time; the report reads the ones it knows and keeps the rest of
    a divergence as written."""
    raw = json.loads(SAMPLE.read_text())
    raw["new_top_key"] = {"x": 1}
    raw["benchmarks"][0]["new_entry_key"] = 1
    raw["benchmarks"][0]["extra_info"]["new_figure"] = [1, "a"]
    bench = tmp_path / "run" / "benchmark.json"
    bench.parent.mkdir()
    bench.write_text(json.dumps(raw))
    div = {"prompt_id": "coding-3", "index": 17, "base_token": 1234, "spec_token": 987, "margin": 0.0123,
           "kind": "near-tie", "base_top": [[1234, -0.5]], "spec_top": [], "new_div_key": True}
    report = {**_lossless_report("ngram4", 1, [div]), "new_report_key": "x"}
    (bench.parent / "lossless.json").write_text(json.dumps({"version": 1, "reports": [report], "new": 1}))
    run = load_benchmark(bench)
    assert run.cells == load_benchmark(SAMPLE).cells
    assert run.lossless is not None and len(run.lossless) == 1
    assert run.lossless[0].divergences == (div,)


def test_malformed_lossless_names_the_file(tmp_path: Path) -> None:
    bench, _ = synthetic(tmp_path)
    lossless = bench.parent / "lossless.json"
    lossless.write_text(json.dumps({"version": 2, "reports": []}))
    with pytest.raises(InputError, match=re.escape(f"{lossless}: version: unsupported version (this report reads 1), got 2")):
        write_report([bench], tmp_path / "out", plots=False)
    lossless.write_text(json.dumps({"version": 1, "reports": [{**_lossless_report("x", 1, []), "compared": "12"}]}))
    with pytest.raises(InputError, match=r"reports\[0\]\.compared: expected an integer >= 0, got '12'"):
        write_report([bench], tmp_path / "out", plots=False)


# --- A/B ----------------------------------------------------------------------------------------

def _ab_inputs(tmp_path: Path) -> tuple[Path, Path]:
    base = [99.0, 100.0, 101.0]

    def spec(cell: str, rounds: list[float], acc: list[float], **kw: Any) -> dict[str, Any]:
        e = bench_entry("ngram4", "ngram", 4, 1, cell, rounds, base, acceptance_length=sum(acc) / len(acc),
                        round_acceptance_lengths=acc, acceptance_length_ci=[min(acc), max(acc)], **kw)
        return e

    old = [spec("down", base, [3.0, 3.0, 3.0]), spec("same", base, [3.0, 3.1, 3.2]),
           spec("up", base, [3.0, 3.0, 3.0]), spec("straddle", base, [3.0, 3.0, 3.0]),
           spec("gone", base, [3.0, 3.0, 3.0])]
    new = [spec("down", [79.0, 80.0, 81.0], [3.0, 3.0, 3.0], vllm_version="0.26.0"),   # ×0.80: REGRESSED
           spec("same", [104.0, 105.0, 106.0], [3.0, 3.1, 3.2], vllm_version="0.26.0"),  # ×1.05: OK
           spec("up", [119.0, 120.0, 121.0], [3.6, 3.6, 3.6], vllm_version="0.26.0"),    # ×1.20: IMPROVED
           spec("straddle", [85.0, 90.0, 95.0], [2.4, 2.4, 2.4], vllm_version="0.26.0"),  # ×0.90: UNKNOWN
           spec("fresh", base, [3.0, 3.0, 3.0], vllm_version="0.26.0")]
    return (write_bench(tmp_path / "old.json", old, datetime="2026-11-01T00:00:00"),
            write_bench(tmp_path / "new.json", new, datetime="2026-11-02T00:00:00"))


def test_ab_ratios_and_verdicts(tmp_path: Path) -> None:
    old, new = _ab_inputs(tmp_path)
    result = ab_report(old, new, tmp_path / "ab")
    got = {(c.cell.split("-")[-1], c.metric): c for c in result.comparisons}
    expected = {"down": (0.8, "REGRESSED"), "same": (1.05, "OK"), "up": (1.2, "IMPROVED"),
                "straddle": (0.9, "UNKNOWN")}
    for cell, (ratio, verdict) in expected.items():
        for metric in ("output_throughput", "speedup"):   # the plain rounds are the same in both runs
            c = got[(cell, metric)]
            assert c.interval.estimate == pytest.approx(ratio) and c.verdict.value == verdict, (cell, metric)
            assert c.interval.low <= ratio <= c.interval.high and c.method == "ratio_ci of rounds"
    # Constant acceptance rounds in both: a degenerate interval, judged as a point.
    assert got[("up", "acceptance_length")].interval.estimate == pytest.approx(1.2)
    assert got[("up", "acceptance_length")].verdict.value == "IMPROVED"
    assert got[("straddle", "acceptance_length")].verdict.value == "REGRESSED"   # 2.4 / 3.0 = 0.8
    assert got[("same", "acceptance_length")].verdict.value == "OK"
    assert result.only_old == ["syn-ngram4-c1-gone"] and result.only_new == ["syn-ngram4-c1-fresh"]

    data = json.loads((tmp_path / "ab" / "ab.json").read_text())
    assert data["version"] == 1 and data["tolerance"] == 0.1
    assert data["old"]["vllm_version"] == "0.25.0" and data["new"]["vllm_version"] == "0.26.0"
    down = next(c for c in data["comparisons"] if c["cell"] == "syn-ngram4-c1-down"
                and c["metric"] == "output_throughput")
    assert down["old"] == 100.0 and down["new"] == 80.0 and down["ratio"] == pytest.approx(0.8)
    assert down["verdict"] == "REGRESSED" and down["ci_high"] < 0.9

    md = (tmp_path / "ab" / "ab.md").read_text()
    assert md.startswith("# specguard A/B: vLLM 0.25.0 → 0.26.0\n")
    assert f"| device | {H100} | {H100} |" in md
    assert "| datetime | 2026-11-01T00:00:00 | 2026-11-02T00:00:00 |" in md
    assert "- **REGRESSED** `syn-ngram4-c1-down` output_throughput: 100 → 80 (×0.800" in md
    assert "| syn-ngram4-c1-up | 100 | 120 | 1.200 |" in md
    assert "Cells only in the old file (not compared): `syn-ngram4-c1-gone`" in md


def test_ab_fallbacks_without_rounds(tmp_path: Path) -> None:
    one = bench_entry("ngram4", "ngram", 4, 1, "coding", [100.0], [50.0])
    ci = bench_entry("ngram4", "ngram", 4, 1, "coding", [92.0], [50.0], output_throughput_ci=[80.0, 95.0])
    old, new = write_bench(tmp_path / "o.json", [one]), write_bench(tmp_path / "n.json", [ci])
    got = {c.metric: c for c in ab_report(old, new, tmp_path / "ab").comparisons}
    tput = got["output_throughput"]
    assert (tput.method, tput.interval.low, tput.interval.high) == ("new CI / old", 0.8, 0.95)
    assert tput.verdict.value == "UNKNOWN"
    assert got["speedup"].method == "new CI / old"   # one round each: no per-round speedups to resample


def test_ab_cli_exit_status_and_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _ab_inputs(tmp_path)
    rc, out, _ = run_cli(capsys, "ab", old, new, "--out", tmp_path / "a")
    assert rc == 1 and "regressed" in out
    rc, _, _ = run_cli(capsys, "ab", old, new, "--out", tmp_path / "b", "--tolerance", "0.25")
    assert rc == 0
    assert "0.25 tolerance" not in (tmp_path / "b" / "ab.md").read_text()
    assert "with a 25% tolerance" in (tmp_path / "b" / "ab.md").read_text()
    with pytest.raises(SystemExit):
        main(["ab", str(old), str(new), "--tolerance", "1.5"])
    assert "could not parse '1.5'. Expected a fraction in [0, 1)" in capsys.readouterr().err


# --- the command line ---------------------------------------------------------------------------

def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(capsys)
    assert rc == 2 and err.startswith("usage: python -m specguard") and "report" in err and "ab" in err


def test_report_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--bandwidth GPU=TB/s" in out and "--out DIR" in out and "--title T" in out


def test_module_entry_point(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "specguard", "report", "--help"], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parents[2], env={**os.environ, "MPLBACKEND": "Agg"}, timeout=60)
    assert done.returncode == 0 and "RESULTS.json" in done.stdout


def test_a_cell_judged_on_advisory_figures_only_says_so() -> None:
    from specguard.report.build import verdict_text
    from specguard.store.benchjson import CellResult
    plain = CellResult("tiny-baseline-c1-coding", "baseline", "m", "none", 1, "coding", 6.5,
                       advisory={"output_throughput": "REGRESSED"})
    assert verdict_text(plain) == "not judged (advisory: output_throughput REGRESSED)"
    assert verdict_text(CellResult("c", "s", "m", "none", 1, "coding", 6.5)) == "no baseline"
