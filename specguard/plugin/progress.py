"""What the run is doing, for a person at the terminal: a line at the start (how many cells and
servers, and how long the last run of this matrix took here), then a progress bar (tqdm) over the
cells with the current cell and its requests, and tqdm's own estimate of the time left.

The bar goes to the real standard error (pytest captures ``sys.stderr``) and only when it is a
terminal: a CI log gets the start line and pytest's own output, not a redrawn bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TextIO

from tqdm import tqdm


def plan_line(cells: int, speculative: int, servers: int, last_run_s: float | None) -> str:
    """E.g. ``specguard: 6 cells (4 speculative) on 3 servers; the last run here took about 9 min``."""
    text = f"specguard: {cells} cells ({speculative} speculative) on {servers} server{'s' * (servers != 1)}"
    if last_run_s is not None:
        text += f"; the last run of this matrix here took about {max(1, round(last_run_s / 60))} min"
    return text


def last_run_seconds(records: Iterable[dict[str, Any]], current_run: str) -> float | None:
    """Wall time of the latest earlier run in a results JSONL: from its first record to its last."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for r in records:
        run, stamp = r.get("run"), r.get("time")
        if not isinstance(run, str) or not isinstance(stamp, str) or run == current_run:
            continue
        try:
            t = datetime.fromisoformat(stamp)
        except ValueError:
            continue
        lo, hi = spans.get(run, (t, t))
        spans[run] = (min(lo, t), max(hi, t))
    if not spans:
        return None
    lo, hi = max(spans.values(), key=lambda span: span[1])
    return (hi - lo).total_seconds()


class Progress:
    """A bar over the run's cells; ``requests(cell_id)`` gives a round's per-request callback."""

    def __init__(self, total_cells: int, stream: TextIO | None = None) -> None:
        stream = stream if stream is not None else sys.__stderr__
        self.bar = tqdm(total=total_cells, unit="cell", file=stream, leave=False, dynamic_ncols=True,
                        disable=None if stream is not None else True)

    def requests(self, cell_id: str) -> Callable[[int, int], None]:
        def show(done: int, total: int) -> None:
            self.bar.set_postfix_str(f"{cell_id}: {done}/{total} requests")
        return show

    def cell_done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
