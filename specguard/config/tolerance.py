"""Tolerances: how far a metric may move from its baseline, and which way is worse."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Tolerance:
    """``rel`` is a fraction (0.05 = 5 %); ``direction`` says which way is better.

    For a higher-is-better metric the floor is ``baseline * (1 - rel)``; for a
    lower-is-better one the ceiling is ``baseline * (1 + rel)``. An ``advisory`` metric is
    compared and reported against its own profile too, but never decides a verdict (a figure that
    one profile name does not pin down, such as a CPU VM's absolute tok/s).
    """

    rel: float
    direction: Direction = "higher"
    advisory: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.rel, (int, float)) and math.isfinite(self.rel) and 0 <= self.rel < 1):
            raise ValueError(f"tolerance must be a finite fraction in [0, 1), got {self.rel!r}")
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {self.direction!r}")

    def bound(self, baseline: float) -> float:
        """The worst value still within tolerance of ``baseline``."""
        return baseline * (1 - self.rel) if self.direction == "higher" else baseline * (1 + self.rel)
