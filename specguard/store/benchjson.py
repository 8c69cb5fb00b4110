"""Reading what a run wrote: pytest-benchmark JSON (cells in ``extra_info``) and ``lossless.json``.

    run = load_benchmark(Path("results/benchmark.json"))
    run.cells[0].speedup, run.lossless          # lossless: None when no lossless.json sits beside it

Every problem is an InputError naming the file and the field, e.g.
``results/benchmark.json: benchmarks[2].extra_info.speedup_ci: expected [low, high] or null, got 'x'``.
Entries without ``extra_info.cell`` (benchmarks that are not specguard cells) are skipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specguard.config.errors import InputError

LOSSLESS_FILE = "lossless.json"
LOSSLESS_VERSION = 1
VERDICTS = ("OK", "REGRESSED", "IMPROVED", "UNKNOWN")


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


class _Fields:
    """Typed access to one JSON object; a wrong type raises InputError naming ``where.key``."""

    def __init__(self, raw: Any, path: Path, where: str) -> None:
        if not isinstance(raw, dict):
            raise InputError(path, where, f"expected an object, got {_short(raw)}")
        self.raw, self.path, self.where = raw, path, where

    def _fail(self, key: str, expected: str) -> InputError:
        got = _short(self.raw[key]) if key in self.raw else "nothing (missing)"
        return InputError(self.path, f"{self.where}.{key}", f"expected {expected}, got {got}")

    def text(self, key: str, *, required: bool = False) -> str | None:
        v = self.raw.get(key)
        if (v is None and not required) or (isinstance(v, str) and v):
            return v
        raise self._fail(key, "a non-empty string")

    def number(self, key: str, *, required: bool = False) -> float | None:
        v = self.raw.get(key)
        if v is None and not required:
            return None
        if isinstance(v, (int, float)) and _finite(v):
            return float(v)
        raise self._fail(key, "a finite number" + ("" if required else " or null"))

    def integer(self, key: str, *, minimum: int = 0, required: bool = False) -> int | None:
        v = self.raw.get(key)
        if v is None and not required:
            return None
        if isinstance(v, int) and not isinstance(v, bool) and v >= minimum:
            return v
        raise self._fail(key, f"an integer >= {minimum}")

    def nums(self, key: str) -> tuple[float, ...]:
        v = self.raw.get(key)
        if v is None:
            return ()
        if isinstance(v, list) and all(_finite(x) for x in v):
            return tuple(float(x) for x in v)
        raise self._fail(key, "a list of finite numbers or null")

    def ci(self, key: str) -> tuple[float, float] | None:
        v = self.raw.get(key)
        if v is None:
            return None
        if isinstance(v, list) and len(v) == 2 and all(_finite(x) for x in v) and v[0] <= v[1]:
            return float(v[0]), float(v[1])
        raise self._fail(key, "[low, high] with low <= high, or null")

    def strs(self, key: str) -> tuple[str, ...]:
        v = self.raw.get(key)
        if v is None:
            return ()
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return tuple(v)
        raise self._fail(key, "a list of strings")

    def verdict(self, key: str) -> str | None:
        v = self.raw.get(key)
        if v is None or v in VERDICTS:
            return v
        raise self._fail(key, f"one of {', '.join(VERDICTS)}")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_cell(raw: dict[str, Any], path: Path, where: str) -> CellResult:
    f = _Fields(raw, path, where)
    verdicts = raw.get("verdicts") or {}
    if not isinstance(verdicts, dict) or not all(v in VERDICTS for v in verdicts.values()):
        raise f._fail("verdicts", f"an object of metric: {'/'.join(VERDICTS)}")
    return CellResult(
        cell=f.text("cell", required=True) or "", server=f.text("server", required=True) or "",
        model=f.text("model", required=True) or "", method=f.text("method", required=True) or "",
        concurrency=f.integer("concurrency", minimum=1, required=True) or 1,
        category=f.text("category", required=True) or "",
        output_throughput=f.number("output_throughput", required=True) or 0.0,
        k=f.integer("num_speculative_tokens", minimum=1), rounds=f.integer("rounds") or 0,
        output_throughput_ci=f.ci("output_throughput_ci"),
        speedup=f.number("speedup"), speedup_ci=f.ci("speedup_ci"),
        acceptance_length=f.number("acceptance_length"), acceptance_length_ci=f.ci("acceptance_length_ci"),
        acceptance_rate=f.number("acceptance_rate"), per_position=f.nums("per_position_acceptance"),
        drafts=f.number("drafts"), round_throughputs=f.nums("round_throughputs"),
        baseline_round_throughputs=f.nums("baseline_round_throughputs"),
        round_acceptance_lengths=f.nums("round_acceptance_lengths"),
        verdict=f.verdict("verdict"), verdicts=dict(verdicts), warnings=f.strs("warnings"),
        device=f.text("device"), profile=f.text("profile"), vllm_version=f.text("vllm_version"),
        server_memory_bytes=f.number("server_memory_bytes"), kv_cache_tokens=f.number("kv_cache_tokens"))


def load_benchmark(path: Path) -> BenchRun:
    """The cells of one ``--benchmark-json`` file, and the ``lossless.json`` beside it if any."""
    path = Path(path)
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise InputError(path, None, f"expected a pytest-benchmark JSON object at the top, got {_short(raw)}")
    benchmarks = raw.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise InputError(path, "benchmarks", "expected a list (is this a file written by --benchmark-json?)")
    cells, skipped = [], 0
    for i, entry in enumerate(benchmarks):
        if not isinstance(entry, dict):
            raise InputError(path, f"benchmarks[{i}]", f"expected an object, got {_short(entry)}")
        info = entry.get("extra_info")
        if not isinstance(info, dict) or "cell" not in info:
            skipped += 1
            continue
        cells.append(parse_cell(info, path, f"benchmarks[{i}].extra_info"))
    commit: dict[str, Any] = raw["commit_info"] if isinstance(raw.get("commit_info"), dict) else {}
    commit_id = commit.get("id") if isinstance(commit.get("id"), str) else None
    if commit_id and commit.get("dirty"):
        commit_id = f"{commit_id[:12]} (dirty)"
    elif commit_id:
        commit_id = commit_id[:12]
    lossless_path = path.parent / LOSSLESS_FILE
    lossless = load_lossless(lossless_path) if lossless_path.is_file() else None
    when = raw.get("datetime") if isinstance(raw.get("datetime"), str) else None
    return BenchRun(path, when, commit_id, tuple(cells), skipped, lossless)


def load_lossless(path: Path) -> tuple[LosslessEntry, ...]:
    """``{"version": 1, "reports": [LosslessReport.to_json(), ...]}``."""
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise InputError(path, None, f"expected a JSON object at the top, got {_short(raw)}")
    if raw.get("version") != LOSSLESS_VERSION:
        raise InputError(path, "version", f"unsupported version {raw.get('version')!r} "
                                          f"(this report reads {LOSSLESS_VERSION})")
    reports = raw.get("reports")
    if not isinstance(reports, list):
        raise InputError(path, "reports", f"expected a list, got {_short(reports)}")
    out = []
    for i, r in enumerate(reports):
        f = _Fields(r, path, f"reports[{i}]")
        divs = r.get("divergences") or []
        if not isinstance(divs, list):
            raise f._fail("divergences", "a list")
        for j, d in enumerate(divs):
            g = _Fields(d, path, f"reports[{i}].divergences[{j}]")
            g.text("prompt_id", required=True), g.integer("index", required=True), g.number("margin")
            g.integer("base_token", minimum=-1, required=True), g.integer("spec_token", minimum=-1, required=True)
        out.append(LosslessEntry(
            case=f.text("case", required=True) or "", server=f.text("server", required=True) or "",
            reference=f.text("reference") or "-", concurrency=f.integer("concurrency", minimum=1, required=True) or 1,
            mode=f.text("mode") or "-", compared=f.integer("compared", required=True) or 0,
            identical=f.integer("identical", required=True) or 0, near_ties=f.integer("near_ties") or 0,
            real=f.integer("real_divergences") or 0, divergences=tuple(divs)))
    return tuple(out)
