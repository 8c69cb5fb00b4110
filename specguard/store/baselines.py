"""Stored baselines: ``baselines/<profile>/<matrix>.json``, versioned and self-describing.

A profile names the hardware (``h100-80gb``, ``cpu-amd-epyc-7763-2c``); the vLLM version a
baseline was measured with is recorded inside, so a run on a newer vLLM is compared with the
figures of the older one: that is the regression the suite exists to catch.

Files are only written when asked (``--update-baselines``), atomically (write, fsync, rename);
cells not measured in the run keep their stored figures.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specguard.files import write_json_atomic
from specguard.config.errors import InputError

VERSION = 1
SCALAR_METRICS = ("output_throughput", "speedup", "acceptance_length", "acceptance_rate", "step_cost")
LIST_METRICS = ("per_position_acceptance",)
_CELL_KEYS = {"server", "concurrency", "category", "metrics", "aggregation", "note"}
_METRIC_KEYS = {"value", "ci_low", "ci_high", "rounds", "aggregation", "note"}
_TOP_KEYS = {"version", "matrix", "profile", "created", "environment", "provenance", "cells", "aggregates"}


@dataclass(frozen=True)
class MetricBaseline:
    value: float | tuple[float, ...]
    ci_low: float | None = None
    ci_high: float | None = None
    rounds: tuple[Any, ...] = ()
    aggregation: str | None = None   # e.g. "mean of category throughputs" for published aggregates
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": list(self.value) if isinstance(self.value, tuple) else self.value}
        for key in ("ci_low", "ci_high", "aggregation", "note"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.rounds:
            out["rounds"] = [list(r) if isinstance(r, tuple) else r for r in self.rounds]
        return out


@dataclass(frozen=True)
class CellBaseline:
    server: str
    concurrency: int
    category: str
    metrics: dict[str, MetricBaseline]
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server": self.server, "concurrency": self.concurrency, "category": self.category,
                               "metrics": {k: v.to_json() for k, v in sorted(self.metrics.items())}}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class BaselineFile:
    path: Path
    matrix: str
    profile: str
    created: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    cells: dict[str, CellBaseline] = field(default_factory=dict)
    aggregates: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": VERSION, "matrix": self.matrix, "profile": self.profile,
                               "created": self.created, "environment": self.environment,
                               "cells": {k: v.to_json() for k, v in sorted(self.cells.items())}}
        if self.provenance:
            out["provenance"] = self.provenance
        if self.aggregates:
            out["aggregates"] = self.aggregates
        return out


def baseline_path(root: Path, profile: str, matrix: str) -> Path:
    return root / profile / f"{matrix}.json"


def load_baseline(path: Path) -> BaselineFile | None:
    """The stored file, or None when there is none; any malformation raises InputError."""
    p = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(p, None, f"cannot read: {exc}") from None
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InputError(p, None, f"not valid JSON: {exc}") from None
    return parse_baseline(raw, path)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in a baseline")


def parse_baseline(raw: Any, path: Path) -> BaselineFile:
    p = str(path)
    if not isinstance(raw, dict):
        raise InputError(p, None, "expected a JSON object at the top")
    for key in raw:
        if key not in _TOP_KEYS:
            raise InputError(p, key, f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    if raw.get("version") != VERSION:
        raise InputError(p, "version", f"unsupported version {raw.get('version')!r} (this suite reads {VERSION})")
    for key in ("matrix", "profile"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise InputError(p, key, f"expected a non-empty string, got {raw.get(key)!r}")
    for key in ("environment", "provenance", "aggregates"):
        if not isinstance(raw.get(key, {}), dict):
            raise InputError(p, key, "expected an object")
    cells_raw = raw.get("cells", {})
    if not isinstance(cells_raw, dict):
        raise InputError(p, "cells", "expected an object keyed by cell id")
    cells = {cid: _parse_cell(c, p, f"cells.{cid}") for cid, c in cells_raw.items()}
    return BaselineFile(path=path, matrix=raw["matrix"], profile=raw["profile"], created=str(raw.get("created", "")),
                        environment=raw.get("environment", {}), provenance=raw.get("provenance", {}),
                        cells=cells, aggregates=raw.get("aggregates", {}))


def _parse_cell(raw: Any, p: str, where: str) -> CellBaseline:
    if not isinstance(raw, dict):
        raise InputError(p, where, "expected an object")
    for key in raw:
        if key not in _CELL_KEYS:
            raise InputError(p, f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_CELL_KEYS))})")
    if not isinstance(raw.get("server"), str):
        raise InputError(p, f"{where}.server", f"expected a string, got {raw.get('server')!r}")
    conc = raw.get("concurrency")
    if isinstance(conc, bool) or not isinstance(conc, int) or conc < 1:
        raise InputError(p, f"{where}.concurrency", f"expected a positive integer, got {conc!r}")
    if not isinstance(raw.get("category"), str):
        raise InputError(p, f"{where}.category", f"expected a string, got {raw.get('category')!r}")
    metrics_raw = raw.get("metrics")
    if not isinstance(metrics_raw, dict):
        raise InputError(p, f"{where}.metrics", "expected an object")
    metrics = {}
    for name, m in metrics_raw.items():
        if name not in SCALAR_METRICS + LIST_METRICS:
            raise InputError(p, f"{where}.metrics.{name}",
                             f"unknown metric (known: {', '.join(SCALAR_METRICS + LIST_METRICS)})")
        metrics[name] = _parse_metric(m, name in LIST_METRICS, p, f"{where}.metrics.{name}")
    if raw.get("note") is not None and not isinstance(raw["note"], str):
        raise InputError(p, f"{where}.note", f"expected a string, got {raw['note']!r}")
    return CellBaseline(raw["server"], conc, raw["category"], metrics, raw.get("note"))


def _parse_metric(raw: Any, is_list: bool, p: str, where: str) -> MetricBaseline:
    if not isinstance(raw, dict):
        raise InputError(p, where, "expected an object with 'value'")
    for key in raw:
        if key not in _METRIC_KEYS:
            raise InputError(p, f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_METRIC_KEYS))})")
    value = raw.get("value")
    if is_list:
        if not isinstance(value, list) or not value or not all(_finite(v) and v >= 0 for v in value):
            raise InputError(p, f"{where}.value", f"expected a non-empty list of finite numbers >= 0, got {value!r}")
        value = tuple(float(v) for v in value)
    elif not _finite(value) or value <= 0:
        raise InputError(p, f"{where}.value", f"expected a finite number > 0, got {value!r}")
    lo, hi = raw.get("ci_low"), raw.get("ci_high")
    for key, v in (("ci_low", lo), ("ci_high", hi)):
        if v is not None and not _finite(v):
            raise InputError(p, f"{where}.{key}", f"expected a finite number, got {v!r}")
    if lo is not None and hi is not None and lo > hi:
        raise InputError(p, f"{where}.ci_low", f"ci_low {lo} is above ci_high {hi}")
    rounds = raw.get("rounds", [])
    if not isinstance(rounds, list):
        raise InputError(p, f"{where}.rounds", "expected a list")
    for key in ("aggregation", "note"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise InputError(p, f"{where}.{key}", "expected a string")
    return MetricBaseline(value=value if is_list else float(value), ci_low=lo, ci_high=hi,
                          rounds=tuple(tuple(r) if isinstance(r, list) else r for r in rounds),
                          aggregation=raw.get("aggregation"), note=raw.get("note"))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def write_baseline(bf: BaselineFile) -> None:
    """Write atomically: a crash leaves either the old file or the new one, never half of one."""
    write_json_atomic(bf.path, bf.to_json(), default=None)


# --- hardware profile --------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def gpu_profile(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` → ``h100-80gb``; ``NVIDIA H200`` → ``h200``;
    ``NVIDIA GeForce RTX 4090`` → ``rtx-4090``; ``NVIDIA H100 PCIe`` → ``h100-pcie``.

    Vendor words and the memory technology (HBM3, HBM3e) are dropped: they never tell two
    products apart that the rest of the name does not.
    """
    words = [w for w in re.split(r"[\s_]+", name)
             if w and w.lower() not in ("nvidia", "tesla", "geforce") and not re.fullmatch(r"hbm\d*e?", w.lower())]
    return _slug("-".join(words)) or "gpu-unknown"


def cpu_profile(model_name: str, cores: int) -> str:
    cleaned = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core", " ", model_name, flags=re.I)
    return f"cpu-{_slug(cleaned) or 'unknown'}-{cores}c"


def nvidia_smi(field: str) -> list[str]:
    """One ``--query-gpu`` field per GPU from nvidia-smi (empty on a machine without one)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run([smi, f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def detect_devices() -> list[str]:
    """GPU names from nvidia-smi (empty on a machine without one)."""
    return nvidia_smi("name")


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def detect_profile(use_gpu: bool) -> str:
    gpus = detect_devices() if use_gpu else []
    if gpus:
        return gpu_profile(gpus[0])
    return cpu_profile(cpu_model_name(), len(os.sched_getaffinity(0)))


def device_description(use_gpu: bool) -> str:
    gpus = detect_devices() if use_gpu else []
    if gpus:
        return f"{len(gpus)}x {gpus[0]}"
    return f"{cpu_model_name()} ({len(os.sched_getaffinity(0))} cores)"
