"""Markdown for reports: figures formatted one way everywhere, and tables that align them.

    table(["cell", "tok/s"], [["coding", tok(17.0076)]])   # ["| cell | tok/s |", "|---|---:|", ...]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

# A cell that holds a figure (right-aligned): 12.5, 1.36 [1.23, 1.45], [0.79, 0.81], 31.2%, 0.500 GB, **3**, -
_FIGURE = re.compile(r"^(\**-?[\d.,]+(%| GB| GiB| TB/s.*| \[.*\])?\**|\[[-\d., ]+\]|-)$")


def tok(x: float | None) -> str:
    """Tokens per second: 1 decimal below 1000, none above."""
    return "-" if x is None else (f"{x:.1f}" if x < 1000 else f"{x:.0f}")


def num(x: float | None, ci: tuple[float, float] | None = None) -> str:
    """A ratio or a length with 2 decimals, and its interval when given: ``1.36 [1.23, 1.45]``."""
    if x is None:
        return "-"
    return f"{x:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def token(t: Any) -> str:
    """A token id; -1 stands for "the output ended here" (specguard.lossless.compare.END)."""
    return "<end>" if t == -1 else str(t)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table; columns of figures (or "-") are right-aligned, text left-aligned."""
    rows = [list(r) for r in rows]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    def figures(i: int) -> bool:
        return bool(rows) and all(_FIGURE.match(r[i]) for r in rows)
    return [line(header), "|" + "|".join("---:" if figures(i) else "---" for i in range(len(header))) + "|",
            *(line(r) for r in rows), ""]
