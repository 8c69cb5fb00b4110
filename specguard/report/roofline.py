"""Speed of light for decoding at c=1: every token reads every weight once from memory.

    roofline tok/s = memory bandwidth (bytes/s) / weight bytes

A plain server at c=1 can approach it but never pass it; a speculative one can (one weight read
yields several tokens). Weight bytes come from the model folder, never from a download; the
bandwidth from the table below, matched in the device string, or from ``--bandwidth GPU=TB/s``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

# Peak memory bandwidth per GPU, TB/s (vendors' datasheets). Order matters: first match wins.
BANDWIDTH_TB_S: tuple[tuple[str, str, float], ...] = (
    (r"\bh100\b.*\bpcie\b", "H100 PCIe", 2.0),
    (r"\bh100\b.*\bnvl\b", "H100 NVL", 3.9),
    (r"\bh100\b", "H100 SXM", 3.35),
    (r"\bh200\b", "H200", 4.8),
    (r"\ba100\b.*\b80\s*gb", "A100 80GB", 2.0),
    (r"\ba100\b", "A100 40GB", 1.555),
    (r"\bl40s\b", "L40S", 0.86),
    (r"\bb200\b", "B200", 8.0),
)


@dataclass(frozen=True)
class Bandwidth:
    tb_s: float
    source: str   # "table: H100 SXM" or "--bandwidth h100=3.0"


def parse_bandwidth(text: str) -> tuple[str, float]:
    """``"H100=3.35"`` → ``("h100", 3.35)``; raises ValueError with a fix on anything else."""
    key, sep, value = text.partition("=")
    try:
        tb_s = float(value)
    except ValueError:
        tb_s = math.nan
    if not sep or not key.strip() or not (math.isfinite(tb_s) and tb_s > 0):
        raise ValueError(f"--bandwidth: could not parse {text!r}. Expected GPU=TB/s with a positive "
                         f"number, such as 'H100=3.35' or 'cpu=0.02'.")
    return key.strip().lower(), tb_s


def is_cpu(device: str, profile: str | None) -> bool:
    if profile:
        return profile.startswith("cpu-")
    return re.search(r"\(\d+ cores\)$", device) is not None


def bandwidth_for(device: str | None, profile: str | None,
                  overrides: dict[str, float] | None = None) -> Bandwidth | None:
    """The device's memory bandwidth: an override whose key is in the device string (``cpu`` for
    any CPU device) first, then the table; None for an unknown device or a CPU without override."""
    if not device:
        return None
    low = device.lower()
    cpu = is_cpu(device, profile)
    for key, tb_s in (overrides or {}).items():
        if (key == "cpu" and cpu) or re.search(rf"(?<![a-z0-9]){re.escape(key)}(?![a-z0-9])", low):
            return Bandwidth(tb_s, f"--bandwidth {key}={tb_s:g}")
    if cpu:
        return None
    for pattern, name, tb_s in BANDWIDTH_TB_S:
        if re.search(pattern, low):
            return Bandwidth(tb_s, f"table: {name}")
    return None


def model_folder(model: str) -> Path | None:
    """A local folder for ``model`` without downloading: a path, a cached ``builtin:`` model, or a
    Hugging Face repo id found in the local hub cache; None when none is on disk."""
    from specguard.serving.model import BUILTIN_PREFIX, BUILTINS, cache_root

    if model.startswith(BUILTIN_PREFIX):
        name = model[len(BUILTIN_PREFIX):]
        folder = cache_root() / "models" / name
        return folder if name in BUILTINS and folder.is_dir() else None
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache"
                                                                          / "huggingface")) / "hub")
        snapshots = hub / f"models--{model.replace('/', '--')}" / "snapshots"
        found = sorted((p for p in snapshots.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None
    return None


def weight_bytes(folder: Path) -> int | None:
    """The index's ``metadata.total_size`` when there is one, else the sizes of ``*.safetensors``."""
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            total = json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(total, int) and not isinstance(total, bool) and total > 0:
            return total
    sizes = [p.stat().st_size for p in folder.glob("*.safetensors") if p.is_file()]
    return sum(sizes) if sizes and sum(sizes) > 0 else None


def roofline_tok_s(bandwidth: Bandwidth, weights: int) -> float:
    return bandwidth.tb_s * 1e12 / weights
