"""Stored baselines: ``baselines/<profile>/<matrix>.json``, versioned and self-describing.

A profile names the hardware (``h100-80gb``, ``cpu-amd-epyc-7763-2c``); the vLLM version a
baseline was measured with is recorded inside, so a run on a newer vLLM is compared with the
figures of the older one: that is the regression the suite exists to catch.

Files are only written when asked (``--update-baselines``), atomically (write, fsync, rename);
cells not measured in the run keep their stored figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (Field, ValidationError,
                      ValidationInfo, create_model, field_validator)
from pydantic_core import PydanticCustomError

from specguard.files import write_json_atomic
from specguard.config.errors import InputError, from_validation
from specguard.config.schema import Closed, Float, Int, Name, Str, expect, must_be, reword

VERSION = 1
SCALAR_METRICS = ("output_throughput", "speedup", "acceptance_length", "acceptance_rate", "step_cost")
LIST_METRICS = ("per_position_acceptance",)


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


# --- the baseline file's schema --------------------------------------------------------------------

class MetricSchema(Closed):
    """``{"value": 41.5, "ci_low": 40.0, "ci_high": 43.0, "rounds": [...], "aggregation": .., "note": ..}``"""

    not_object = "expected an object with 'value'"
    value: Annotated[Float, Field(gt=0), expect("a finite number > 0")]
    ci_high: Annotated[Float | None, expect("a finite number")] = None   # before ci_low, checked against it
    ci_low: Annotated[Float | None, expect("a finite number")] = None
    rounds: Annotated[list[Any], expect("a list")] = []
    aggregation: Annotated[Str | None, expect("a string")] = None
    note: Annotated[Str | None, expect("a string")] = None

    @field_validator("ci_low")
    @classmethod
    def _not_above_ci_high(cls, low: float | None, info: ValidationInfo) -> float | None:
        high = info.data.get("ci_high")
        if low is not None and high is not None and low > high:
            raise PydanticCustomError("specguard", f"expected at most ci_high {high}")
        return low

    def baseline(self) -> MetricBaseline:
        rounds = tuple(tuple(r) if isinstance(r, list) else r for r in self.rounds)
        return MetricBaseline(self.value, self.ci_low, self.ci_high, rounds, self.aggregation, self.note)


class _ListMetric(MetricSchema):
    value: Annotated[   # type: ignore[assignment]
        tuple[Annotated[Float, Field(ge=0)], ...], Field(min_length=1),
        expect("a non-empty list of finite numbers >= 0")]


class _MetricNames(Closed):
    unknown_key = "unknown metric (known: {allowed})"


# An absent metric is None; an explicit null is validated, and refused, as a metric.
_Metrics = create_model(   # type: ignore[call-overload]
    "_Metrics", __base__=_MetricNames,
    **{m: (MetricSchema, None) for m in SCALAR_METRICS}, **{m: (_ListMetric, None) for m in LIST_METRICS})


class _Cell(Closed):
    server: Annotated[Str, expect("a string")]
    concurrency: Annotated[Int, Field(ge=1), expect("a positive integer")]
    category: Annotated[Str, expect("a string")]
    metrics: _Metrics   # type: ignore[valid-type]
    aggregation: Any = None   # allowed, not kept
    note: Annotated[Str | None, expect("a string")] = None

    def baseline(self) -> CellBaseline:
        metrics = {name: m.baseline() for name in SCALAR_METRICS + LIST_METRICS
                   if (m := getattr(self.metrics, name)) is not None}
        return CellBaseline(self.server, self.concurrency, self.category, metrics, self.note)


class _Baseline(Closed):
    not_object = "expected a JSON object at the top"
    version: Annotated[Literal[1], reword(f"unsupported version (this suite reads {VERSION})")] \
        = Field(None, validate_default=True)   # Literal[VERSION]; absent: "got None"
    matrix: Annotated[Name, expect("a non-empty string")]
    profile: Annotated[Name, expect("a non-empty string")]
    created: Any = ""
    environment: Annotated[dict[str, Any], expect("an object")] = {}
    provenance: Annotated[dict[str, Any], expect("an object")] = {}
    cells: Annotated[dict[str, _Cell], must_be(lambda c: isinstance(c, dict), "an object keyed by cell id")] \
        = {}
    aggregates: Annotated[dict[str, Any], expect("an object")] = {}   # read by judge.aggregate


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
    try:
        bf = _Baseline.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(path, exc) from None
    return BaselineFile(path=path, matrix=bf.matrix, profile=bf.profile, created=str(bf.created),
                        environment=bf.environment, provenance=bf.provenance,
                        cells={cid: c.baseline() for cid, c in bf.cells.items()}, aggregates=bf.aggregates)


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
