"""Tolerances: how far a metric may move from its baseline, and which way is worse."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from specguard.config.errors import InputError

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Tolerance:
    """``rel`` is a fraction (0.05 = 5 %); ``direction`` says which way is better.

    For a higher-is-better metric the floor is ``baseline * (1 - rel)``; for a
    lower-is-better one the ceiling is ``baseline * (1 + rel)``.
    """

    rel: float
    direction: Direction = "higher"

    def __post_init__(self) -> None:
        if not (isinstance(self.rel, (int, float)) and math.isfinite(self.rel) and 0 <= self.rel < 1):
            raise ValueError(f"tolerance must be a finite fraction in [0, 1), got {self.rel!r}")
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {self.direction!r}")

    def bound(self, baseline: float) -> float:
        """The worst value still within tolerance of ``baseline``."""
        return baseline * (1 - self.rel) if self.direction == "higher" else baseline * (1 + self.rel)

    @classmethod
    def parse(cls, raw: Any, *, path: str | None, field: str) -> "Tolerance":
        """Parse ``{rel = 0.05, direction = "higher"}`` or a bare number (higher is better)."""
        if isinstance(raw, bool):
            raise InputError(path, field, f"expected a number or a table, got {raw!r}")
        if isinstance(raw, (int, float)):
            raw = {"rel": raw}
        if not isinstance(raw, dict):
            raise InputError(path, field, f"expected a number or a table, got {raw!r}")
        unknown = set(raw) - {"rel", "direction"}
        if unknown:
            raise InputError(path, f"{field}.{sorted(unknown)[0]}", "unknown key (allowed: rel, direction)")
        if "rel" not in raw:
            raise InputError(path, f"{field}.rel", "missing")
        rel, direction = raw["rel"], raw.get("direction", "higher")
        if isinstance(rel, bool) or not isinstance(rel, (int, float)) or not math.isfinite(rel) or not 0 <= rel < 1:
            raise InputError(path, f"{field}.rel", f"expected a fraction in [0, 1) such as 0.05, got {rel!r}")
        if direction not in ("higher", "lower"):
            raise InputError(path, f"{field}.direction", f"expected 'higher' or 'lower', got {direction!r}")
        return cls(rel=float(rel), direction=direction)
