"""``python -m specguard merge SHARD_DIR... --out DIR``: the shards of one sharded run as one run.

    python -m specguard merge shards/shard-1 shards/shard-2 shards/shard-3 --out merged

A shard folder is what one ``pytest --shard K/N --results-dir DIR --benchmark-json DIR/benchmark.json``
leaves in DIR:

- ``cells.jsonl``: the records (``--results-dir``), with the shard's ``shard`` record (what it runs,
  the plan's digest, matrix, vLLM version, profile) written at its start and ``shard_end`` (pytest's
  exit status) at its end. Records of earlier runs in the same file are left out: the shard's run
  is the one of its last ``shard`` record.
- ``benchmark.json``: pytest-benchmark's file; absent when the shard measured nothing (pytest-benchmark
  writes none then). A cell recorded without an entry there gets one from its record.
- ``lossless.json``: the lossless reports, when the shard ran lossless tests.

``--out`` receives one ``benchmark.json`` (pytest-benchmark's layout, every shard's entries), one
``cells.jsonl`` (every shard's run's records, shard 1 first), ``lossless.json`` when any shard had
one, ``shards.md`` (a line per shard) and the report in ``report/`` (``python -m specguard report``
on the merged file); with ``$GITHUB_STEP_SUMMARY`` set, the report and the shard table are appended
to it. Refused (exit 2, naming the file and the field): shards of different matrices, matrix files,
vLLM versions, profiles or plans, the same shard twice, a cell or lossless case in two shards.
Exit 1 when a cell is REGRESSED (unless its shard ran with ``--update-baselines``), a shard's pytest
failed, a shard did not finish, or one of the N shards is missing; else 0.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specguard.config.errors import InputError
from specguard.files import write_json_atomic, write_text_atomic
from specguard.store.benchjson import LOSSLESS_FILE, LOSSLESS_VERSION, benchmark_json, load_benchmark, load_lossless
from specguard.store.results import read_records

RESULTS_FILE = "cells.jsonl"
BENCH_FILE = "benchmark.json"
# Fields every shard of one merge shares; each names what differs.
SAME = ("matrix", "matrix_sha256", "vllm_version", "profile", "of", "plan")


@dataclass
class ShardRun:
    folder: Path
    start: dict[str, Any]                   # its `shard` record
    end: dict[str, Any] | None              # its `shard_end` record; None: the run did not finish
    records: list[dict[str, Any]]           # every record of its run
    benchmarks: list[dict[str, Any]] = field(default_factory=list)
    bench_top: dict[str, Any] | None = None  # the benchmark file's other fields
    lossless: list[dict[str, Any]] = field(default_factory=list)

    @property
    def results(self) -> Path:
        return self.folder / RESULTS_FILE

    @property
    def label(self) -> str:
        return f"{self.start['shard']}/{self.start['of']}"

    @property
    def cells(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == "cell"]


def read_shard(folder: Path) -> ShardRun:
    """One shard folder's last run (see the module's docstring for the layout)."""
    folder = Path(folder)
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise InputError(path, None, "no such file: expected the --results-dir of a `pytest --shard K/N` run")
    records = read_records(path)
    starts = [r for r in records if r.get("kind") == "shard"]
    if not starts:
        raise InputError(path, "shard", "no shard record: this folder is not from a `pytest --shard K/N` run")
    start = starts[-1]
    for key in ("run", "shard", "of", *SAME):
        if key not in start:
            raise InputError(path, f"shard.{key}", "missing from the shard record (written by an older specguard?)")
    mine = [r for r in records if r.get("run") == start["run"]]
    end = next((r for r in mine if r.get("kind") == "shard_end"), None)
    run = ShardRun(folder, start, end, mine)
    for r in run.cells:
        for key in ("vllm_version", "profile"):
            if r.get(key) != start[key]:
                raise InputError(path, f"cell {r.get('cell')}.{key}",
                                 f"{r.get(key)!r}, but the shard record says {start[key]!r}")
    _read_benchmark(run)
    lossless = folder / LOSSLESS_FILE
    if lossless.is_file():
        load_lossless(lossless)   # validates, naming the file and the field
        run.lossless = list(json.loads(lossless.read_text(encoding="utf-8"))["reports"])
    return run


def _read_benchmark(run: ShardRun) -> None:
    """The shard's benchmark entries, checked against its run's records; cells recorded without an
    entry get one from their record (as the xdist controller writes them)."""
    path = run.folder / BENCH_FILE
    recorded = {r["cell"] for r in run.cells}
    have: set[str] = set()
    if path.is_file():
        load_benchmark(path)   # validates every entry, naming the file and the field
        raw = json.loads(path.read_text(encoding="utf-8"))
        for i, entry in enumerate(raw["benchmarks"]):
            info = entry.get("extra_info") or {}
            cell = info.get("cell")
            if cell is not None:
                if cell not in recorded:
                    raise InputError(path, f"benchmarks[{i}].extra_info.cell",
                                     f"{cell!r} is not among the cells that the shard's run (run {run.start['run']}) "
                                     f"recorded in {run.results}: a file left from another run?")
                for key in ("vllm_version", "profile"):
                    if info.get(key) != run.start[key]:
                        raise InputError(path, f"benchmarks[{i}].extra_info.{key}",
                                         f"{info.get(key)!r}, but the shard record in {run.results} says "
                                         f"{run.start[key]!r}")
                have.add(cell)
            run.benchmarks.append(entry)
        run.bench_top = {k: v for k, v in raw.items() if k != "benchmarks"}
    missing = [r for r in run.cells if r["cell"] not in have]
    if missing:
        run.benchmarks += benchmark_json(missing, run.start["run"])["benchmarks"]


def check_shards(shards: Sequence[ShardRun]) -> None:
    """Refuse shards that are not parts of one run's plan, or that measured the same cell."""
    first = shards[0]
    for s in shards[1:]:
        for key in SAME:
            if s.start[key] != first.start[key]:
                raise InputError(s.results, f"shard.{key}",
                                 f"{s.start[key]!r}, but {first.results} has {first.start[key]!r}: the shards of "
                                 "one merge come from one matrix file, vLLM version, profile and plan")
    seen: dict[Any, ShardRun] = {}
    for s in shards:
        if s.start["shard"] in seen:
            raise InputError(s.results, "shard.shard", f"shard {s.label} again (also {seen[s.start['shard']].results})")
        seen[s.start["shard"]] = s
    owner: dict[str, ShardRun] = {}
    for s in shards:
        for r in s.cells:
            if r["cell"] in owner:
                where = "twice in this run" if owner[r["cell"]] is s else f"in {owner[r['cell']].results} too"
                raise InputError(s.results, f"cell {r['cell']}", f"measured {where}: a cell belongs to one shard")
            owner[r["cell"]] = s
    cases: dict[str, ShardRun] = {}
    for s in shards:
        for rep in s.lossless:
            other = cases.setdefault(rep["case"], s)
            if other is not s:
                raise InputError(s.folder / LOSSLESS_FILE, f"reports[case={rep['case']}]",
                                 f"also in {other.folder / LOSSLESS_FILE}: a lossless case belongs to one shard")


def problems(shards: Sequence[ShardRun]) -> list[str]:
    """Why the merged run fails; empty when it passes."""
    out = []
    count = shards[0].start["of"]
    missing = sorted(set(range(1, count + 1)) - {s.start["shard"] for s in shards})
    if missing:
        out.append(f"shard(s) {', '.join(f'{k}/{count}' for k in missing)} missing: their cells are not in the merge")
    for s in sorted(shards, key=lambda s: s.start["shard"]):
        if s.end is None:
            out.append(f"shard {s.label} ({s.folder}) did not finish: no shard_end record (cancelled or killed?)")
        elif s.end.get("exitstatus") != 0:
            out.append(f"shard {s.label} ({s.folder}): pytest exit status {s.end.get('exitstatus')}, "
                       f"{s.end.get('failed', 0)} failed test(s)")
        if not s.start.get("update_baselines"):
            out += [f"shard {s.label}: {r['cell']} REGRESSED" for r in s.cells if r.get("verdict") == "REGRESSED"]
    return out


def shard_table(shards: Sequence[ShardRun]) -> str:
    lines = ["## Shards", "", "| shard | folder | units | cells | pytest exit | verdicts |", "|---|---|---|---|---|---|"]
    for s in sorted(shards, key=lambda s: s.start["shard"]):
        verdicts: dict[str, int] = {}
        for r in s.cells:
            verdicts[r.get("verdict") or "no baseline"] = verdicts.get(r.get("verdict") or "no baseline", 0) + 1
        exit_text = "did not finish" if s.end is None else str(s.end.get("exitstatus")) + \
            (" (empty)" if s.end.get("empty") else "")
        lines.append(f"| {s.label} | `{s.folder}` | {', '.join(s.start['units']) or '-'} | {len(s.cells)} | "
                     f"{exit_text} | {', '.join(f'{n} {v}' for v, n in sorted(verdicts.items())) or '-'} |")
    return "\n".join(lines) + "\n"


def merge(folders: Sequence[Path], out: Path) -> tuple[list[ShardRun], list[str]]:
    """Read, check and write the merged files into ``out``; (the shards, why the run fails)."""
    shards = sorted((read_shard(Path(f)) for f in folders), key=lambda s: s.start["shard"])
    check_shards(shards)
    top = next((s.bench_top for s in shards if s.bench_top is not None), None)
    data = dict(top) if top is not None else {k: v for k, v in benchmark_json([], "").items() if k != "benchmarks"}
    data["benchmarks"] = [b for s in shards for b in s.benchmarks]
    data["specguard_shards"] = [{"shard": s.start["shard"], "of": s.start["of"], "folder": str(s.folder),
                                 "run": s.start["run"], "cells": len(s.cells)} for s in shards]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / BENCH_FILE, data, allow_nan=True)
    write_text_atomic(out / RESULTS_FILE, "".join(json.dumps(r, sort_keys=True, default=str) + "\n"
                                                  for s in shards for r in s.records))
    reports = [rep for s in shards for rep in s.lossless]
    if reports:
        first = shards[0].start
        write_json_atomic(out / LOSSLESS_FILE, {"version": LOSSLESS_VERSION, "matrix": first["matrix"],
                                                "vllm_version": first["vllm_version"], "profile": first["profile"],
                                                "reports": reports})
    write_text_atomic(out / "shards.md", shard_table(shards))
    return shards, problems(shards)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("merge", help="One benchmark JSON, cells.jsonl, report and exit status from the "
                                     "folders of a `pytest --shard K/N` run's shards.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, metavar="SHARD_DIR",
                   help="A shard's --results-dir, with its --benchmark-json file inside as benchmark.json.")
    p.add_argument("--out", type=Path, metavar="DIR", required=True, help="Folder for the merged files.")
    p.add_argument("--title", metavar="T", default="specguard report (merged shards)",
                   help="Report title. Default: %(default)r")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="Write the Markdown only, no PNGs.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    from specguard.report.build import write_report

    shards, failing = merge(args.folders, args.out)
    summary = os.environ.get("GITHUB_STEP_SUMMARY") or None
    md = write_report([args.out / BENCH_FILE], args.out / "report", title=args.title, step_summary=summary,
                      plots=args.plots)
    table = (args.out / "shards.md").read_text(encoding="utf-8")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(table + "".join(f"\n- **{p}**" for p in failing) + "\n")
    cells = sum(len(s.cells) for s in shards)
    echo(f"specguard merge: {len(shards)} shard(s), {cells} cells; report written to {md}")
    for p in failing:
        echo(f"specguard merge: {p}")
    return 1 if failing else 0
