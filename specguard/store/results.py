"""Finished results on disk as soon as each cell finishes (JSON lines), so a crash loses nothing."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from specguard.config.errors import InputError
from specguard.serving.server import vllm_distribution


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: whatever finished is on disk before the next cell starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a results file. A torn last line (a crash mid-write) is skipped; an unreadable
    line anywhere else is corruption, and raises InputError naming the file and the line."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as exc:
            if i == len(lines):   # no newline after it: the write was cut short
                continue
            raise InputError(path, f"line {i}", f"not a JSON record ({exc}); only a torn last line is skipped") from None
    return out


def environment(device: str, profile: str) -> dict[str, Any]:
    """The figures every record carries: what was measured, on what, with which vLLM."""
    dist = vllm_distribution()
    torch_version = None
    try:
        import importlib.metadata
        torch_version = importlib.metadata.version("torch")
    except Exception:  # noqa: BLE001 - torch absent is a valid state for the report side
        pass
    from specguard.store.baselines import nvidia_smi
    drivers = nvidia_smi("driver_version") if "GPU" in device or "NVIDIA" in device else []
    return {
        "vllm_version": dist[1] if dist else None,
        "vllm_distribution": dist[0] if dist else None,
        "torch_version": torch_version,
        "device": device,
        "driver_version": drivers[0] if drivers else None,
        "profile": profile,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "argv0": Path(sys.argv[0]).name,
    }
