"""Reading what a run wrote: pytest-benchmark JSON (cells in ``extra_info``) and ``lossless.json``.

    run = load_benchmark(Path("results/benchmark.json"))
    run.cells[0].speedup, run.lossless          # lossless: None when no lossless.json sits beside it

Every problem is an InputError naming the file and the field, e.g.
``results/benchmark.json: benchmarks[2].extra_info.speedup_ci: expected [low, high] with low <= high, or null,
got 'x'``. Entries without ``extra_info.cell`` (benchmarks that are not specguard cells) are skipped;
keys the suite does not read are ignored.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError

from specguard.files import write_json_atomic
from specguard.config.schema import Float, Int, Name, Schema, Str, expect, must_be, reword
from specguard.config.errors import InputError, from_validation

LOSSLESS_FILE = "lossless.json"
LOSSLESS_VERSION = 1
Verdict = Literal["OK", "REGRESSED", "IMPROVED", "UNKNOWN"]
VERDICTS: tuple[str, ...] = get_args(Verdict)


@dataclass(frozen=True)
class CellResult:
    """One cell's figures, as ``CellMeasurement.extra_info`` wrote them."""

    cell: str
    server: str
    model: str
    method: str
    concurrency: int
    category: str
    output_throughput: float
    k: int | None = None
    rounds: int = 0
    output_throughput_ci: tuple[float, float] | None = None
    speedup: float | None = None
    speedup_ci: tuple[float, float] | None = None
    acceptance_length: float | None = None
    acceptance_length_ci: tuple[float, float] | None = None
    acceptance_rate: float | None = None
    per_position: tuple[float, ...] = ()
    drafts: float | None = None
    round_throughputs: tuple[float, ...] = ()
    baseline_round_throughputs: tuple[float, ...] = ()
    round_acceptance_lengths: tuple[float, ...] = ()
    verdict: str | None = None
    verdicts: Mapping[str, str] = field(default_factory=dict)
    advisory: Mapping[str, str] = field(default_factory=dict)   # compared, not deciding
    warnings: tuple[str, ...] = ()
    device: str | None = None
    profile: str | None = None
    vllm_version: str | None = None
    server_memory_bytes: float | None = None
    kv_cache_tokens: float | None = None

    @property
    def speculative(self) -> bool:
        return self.method != "none"

    @property
    def base_throughput(self) -> float | None:
        """The plain server's tok/s this cell's speedup was computed against (same c and category)."""
        if self.baseline_round_throughputs:
            return sum(self.baseline_round_throughputs) / len(self.baseline_round_throughputs)
        if self.speedup:
            return self.output_throughput / self.speedup
        return None


@dataclass(frozen=True)
class LosslessEntry:
    case: str
    server: str
    reference: str
    concurrency: int
    mode: str
    compared: int
    identical: int
    near_ties: int
    real: int
    divergences: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class BenchRun:
    path: Path
    datetime: str | None
    commit: str | None
    cells: tuple[CellResult, ...]
    skipped: int                                 # entries without extra_info.cell
    lossless: tuple[LosslessEntry, ...] | None   # None: no lossless.json beside the file

    def values(self, attr: str) -> list[str]:
        """Distinct non-empty values of a cell attribute, in first-seen order."""
        return list(dict.fromkeys(str(v) for c in self.cells if (v := getattr(c, attr)) not in (None, "")))


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(path, None, f"not valid JSON: {exc}") from None


# --- the schema: pydantic models, turned into the dataclasses above -------------------------------

# In ``Annotated[T, A, B]`` the before validator B runs before A: the null and falsy defaults come last.
def _null_is(default: Any) -> BeforeValidator:
    return BeforeValidator(lambda v: default if v is None else v)


def _falsy_is(empty: Any) -> BeforeValidator:
    return BeforeValidator(lambda v: v or empty)


def _ordered(ci: tuple[float, float]) -> tuple[float, float]:
    if ci[0] > ci[1]:
        raise ValueError("low above high")
    return ci


_Text = Annotated[Name, expect("a non-empty string")]
_Number = Annotated[Float | None, expect("a finite number or null")]
_Numbers = Annotated[tuple[Float, ...], expect("a list of finite numbers or null"), _null_is(())]
_Interval = Annotated[tuple[Float, Float], AfterValidator(_ordered),
                      expect("[low, high] with low <= high, or null")]
_Positive = Annotated[Int, Field(ge=1), expect("an integer >= 1")]
_Count = Annotated[Int, Field(ge=0), expect("an integer >= 0")]
_Token = Annotated[Int, Field(ge=-1), expect("an integer >= -1")]   # -1: the sequence had ended


class _CellInfo(Schema):
    """``extra_info`` of one cell, as ``CellMeasurement.extra_info`` writes it; the fields of CellResult."""

    cell: _Text
    server: _Text
    model: _Text
    method: _Text
    concurrency: _Positive
    category: _Text
    output_throughput: Annotated[Float, expect("a finite number")]
    k: Annotated[_Positive | None, Field(alias="num_speculative_tokens")] = None
    rounds: Annotated[_Count, _null_is(0)] = 0
    output_throughput_ci: _Interval | None = None
    speedup: _Number = None
    speedup_ci: _Interval | None = None
    acceptance_length: _Number = None
    acceptance_length_ci: _Interval | None = None
    acceptance_rate: _Number = None
    per_position: Annotated[_Numbers, Field(alias="per_position_acceptance")] = ()
    drafts: _Number = None
    round_throughputs: _Numbers = ()
    baseline_round_throughputs: _Numbers = ()
    round_acceptance_lengths: _Numbers = ()
    verdict: Annotated[Verdict, expect(f"one of {', '.join(VERDICTS)}")] | None = None
    verdicts: Annotated[dict[str, Verdict], expect(f"an object of metric: {'/'.join(VERDICTS)}"),
                        _falsy_is({})] = Field(default_factory=dict)
    advisory: Annotated[dict[str, Verdict], expect(f"an object of metric: {'/'.join(VERDICTS)}"),
                        _falsy_is({})] = Field(default_factory=dict)
    warnings: Annotated[tuple[Str, ...], expect("a list of strings"), _null_is(())] = ()
    device: _Text | None = None
    profile: _Text | None = None
    vllm_version: _Text | None = None
    server_memory_bytes: _Number = None
    kv_cache_tokens: _Number = None


def _a_cell(info: Any) -> Any:
    return info if isinstance(info, dict) and "cell" in info else None


class _Benchmark(Schema):
    extra_info: Annotated[_CellInfo | None, BeforeValidator(_a_cell)] = None   # None: not a specguard cell


class _BenchmarkFile(Schema):
    not_object = "expected a pytest-benchmark JSON object at the top"
    benchmarks: Annotated[list[_Benchmark], must_be(lambda b: isinstance(b, list),
                                                    "a list (is this a file written by --benchmark-json?)")] \
        = Field(None, validate_default=True)
    commit_info: Any = None
    datetime: Any = None


class _Divergence(Schema):
    model_config = ConfigDict(extra="allow")   # kind, base_top, spec_top: kept as they are
    prompt_id: _Text
    index: _Count
    margin: _Number = None
    base_token: _Token
    spec_token: _Token


class _Report(Schema):
    """``LosslessReport.to_json()``; the fields are LosslessEntry's."""

    case: _Text
    server: _Text
    reference: Annotated[_Text, _null_is("-")] = "-"
    concurrency: _Positive
    mode: Annotated[_Text, _null_is("-")] = "-"
    compared: _Count
    identical: _Count
    near_ties: Annotated[_Count, _null_is(0)] = 0
    real: Annotated[_Count, _null_is(0), Field(alias="real_divergences")] = 0
    divergences: Annotated[list[_Divergence], must_be(lambda d: isinstance(d, list), "a list"),
                           _falsy_is([])] = Field(default_factory=list)


class _LosslessFile(Schema):
    not_object = "expected a JSON object at the top"
    version: Annotated[Literal[1], reword(f"unsupported version (this report reads {LOSSLESS_VERSION})")] \
        = Field(None, validate_default=True)
    reports: Annotated[list[_Report], must_be(lambda r: isinstance(r, list), "a list")] \
        = Field(None, validate_default=True)


def parse_cell(raw: dict[str, Any], path: Path, where: str) -> CellResult:
    try:
        return CellResult(**dict(_CellInfo.model_validate(raw)))
    except ValidationError as exc:
        raise from_validation(path, exc, prefix=where) from None


def load_benchmark(path: Path) -> BenchRun:
    """The cells of one ``--benchmark-json`` file, and the ``lossless.json`` beside it if any."""
    path = Path(path)
    try:
        run = _BenchmarkFile.model_validate(_read_json(path))
    except ValidationError as exc:
        raise from_validation(path, exc) from None
    cells = tuple(CellResult(**dict(b.extra_info)) for b in run.benchmarks if b.extra_info is not None)
    commit: dict[str, Any] = run.commit_info if isinstance(run.commit_info, dict) else {}
    commit_id = commit.get("id") if isinstance(commit.get("id"), str) else None
    if commit_id and commit.get("dirty"):
        commit_id = f"{commit_id[:12]} (dirty)"
    elif commit_id:
        commit_id = commit_id[:12]
    lossless_path = path.parent / LOSSLESS_FILE
    lossless = load_lossless(lossless_path) if lossless_path.is_file() else None
    when = run.datetime if isinstance(run.datetime, str) else None
    return BenchRun(path, when, commit_id, cells, len(run.benchmarks) - len(cells), lossless)


def load_lossless(path: Path) -> tuple[LosslessEntry, ...]:
    """``{"version": 1, "reports": [LosslessReport.to_json(), ...]}``."""
    try:
        reports = _LosslessFile.model_validate(_read_json(path)).reports
    except ValidationError as exc:
        raise from_validation(path, exc) from None
    return tuple(LosslessEntry(**{**dict(r), "divergences": tuple(d.model_dump() for d in r.divergences)})
                 for r in reports)


# --- writing: pytest-benchmark's layout from the suite's records --------------------------------

def benchmark_json(records: list[dict[str, Any]], run: str) -> dict[str, Any]:
    """pytest-benchmark's JSON layout from this run's cell records."""
    benches = []
    for rec in records:
        if rec.get("run") != run or rec.get("kind") != "cell":
            continue
        durations = [d for d in rec.get("round_durations_s", []) if d > 0] or [0.0]
        stats = {"min": min(durations), "max": max(durations), "mean": statistics.fmean(durations),
                 "median": statistics.median(durations),
                 "stddev": statistics.stdev(durations) if len(durations) > 1 else 0.0,
                 "rounds": len(durations), "iterations": 1, "data": durations}
        name = f"test_throughput[{rec['cell']}]"
        benches.append({"group": None, "name": name, "fullname": f"tests/test_throughput.py::{name}",
                        "params": {"cell": rec["cell"]}, "param": rec["cell"], "options": {"merged_from": "xdist"},
                        "stats": stats, "extra_info": {k: v for k, v in rec.items() if k not in ("kind", "time")}})
    return {"machine_info": {"node": platform.node(), "processor": platform.processor(),
                             "machine": platform.machine(), "python_version": platform.python_version()},
            "commit_info": {}, "benchmarks": benches,
            "datetime": datetime.now(timezone.utc).isoformat(), "version": "specguard-merged-1"}


def write_merged(path: Path, records: list[dict[str, Any]], run: str) -> int:
    data = benchmark_json(records, run)
    write_json_atomic(path, data, allow_nan=True)   # as pytest-benchmark writes its own file
    return len(data["benchmarks"])
