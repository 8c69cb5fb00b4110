"""Which stored figures judge a cell, and how: the portability rules and the "still pays" floor.

- Figures that depend on model, method, prompts and vLLM but not on the machine (acceptance
  length, acceptance rate, per-position acceptance under greedy decoding) are judged against the
  machine's own profile when it has the cell, else against the matrix's ``reference_profile``.
- Figures that depend on the machine (speedup, absolute throughput) decide a verdict only against
  the machine's own profile. Against the reference on another machine they are an advisory
  comparison: computed and reported, never a failure, never a reason for more rounds.
- A tolerance marked ``advisory`` never decides, even against the machine's own profile: a CPU
  profile names a CPU model, and VMs reporting one model decoded 30-40% apart.
- ``min_speedup`` is a same-run floor: it needs no baseline and holds on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from specguard.store.baselines import CellBaseline
from specguard.judge.stats import Interval
from specguard.config.tolerance import Tolerance
from specguard.judge.verdict import Check, Verdict, judge

PORTABLE = ("acceptance_length", "acceptance_rate", "per_position_acceptance")
FLOOR = "min_speedup"


@dataclass(frozen=True)
class Against:
    """The stored cell a measurement is judged with, and where it came from."""

    cell: CellBaseline
    profile: str
    own: bool            # the machine's own profile (False: the matrix's reference profile)


def choose(own: CellBaseline | None, own_profile: str, reference: CellBaseline | None,
           reference_profile: str | None) -> Against | None:
    """The machine's own stored cell when there is one, else the reference's, else None."""
    if own is not None:
        return Against(own, own_profile, True)
    if reference is not None and reference_profile is not None:
        return Against(reference, reference_profile, False)
    return None


def floor_check(interval: Interval, floor: float) -> Check:
    """REGRESSED when the speedup's interval lies wholly below ``floor``; OK wholly at or above it;
    UNKNOWN when it straddles. A floor is never IMPROVED."""
    if interval.high < floor:
        verdict = Verdict.REGRESSED
    elif interval.low >= floor:
        verdict = Verdict.OK
    else:
        verdict = Verdict.UNKNOWN
    return Check(FLOOR, verdict, interval, floor, Tolerance(0.0), kind="floor")


def judge_metrics(interval_of: Callable[[str], Interval | None], per_position: Callable[[int], Interval | None],
                  against: Against | None, tolerances: dict[str, Tolerance],
                  floor: float | None) -> dict[str, Check]:
    """A Check per metric that has a tolerance, a stored value and a measurement, plus the floor.

    ``interval_of(metric)`` gives the measured interval; ``per_position(i)`` the interval of the
    acceptance rate at draft position i (0-based)."""
    checks: dict[str, Check] = {}
    if against is not None:
        stored = against.cell.metrics
        for metric, tol in tolerances.items():
            if metric == "per_position_acceptance":
                continue
            iv, base = interval_of(metric), stored.get(metric)
            if iv is None or base is None or not isinstance(base.value, float):
                continue
            advisory = tol.advisory or (not against.own and metric not in PORTABLE)
            checks[metric] = Check(metric, judge(iv, base.value, tol), iv, base.value, tol,
                                   against=against.profile, advisory=advisory)
        tol = tolerances.get("per_position_acceptance")
        base = stored.get("per_position_acceptance")
        if tol is not None and base is not None and isinstance(base.value, tuple):
            for i, stored_rate in enumerate(base.value):
                # Deep positions accept rarely; a relative band on a rate near 0 is noise, not signal.
                if stored_rate < 0.05:
                    continue
                iv = per_position(i)
                if iv is not None:
                    name = f"acceptance_pos{i + 1}"
                    checks[name] = Check(name, judge(iv, stored_rate, tol), iv, stored_rate, tol,
                                         against=against.profile)
    speedup = interval_of("speedup")
    if floor is not None and speedup is not None:
        checks[FLOOR] = floor_check(speedup, floor)
    return checks


def deciding(checks: dict[str, Check]) -> list[Check]:
    """The checks that decide the cell's outcome (advisory ones only inform)."""
    return [c for c in checks.values() if not c.advisory]


def explain(acceptance_length: float | None, step_cost: float | None,
            stored_length: float | None, stored_step_cost: float | None,
            tokens_per_step: float | None = None) -> str | None:
    """Which side of ``speedup ≈ tokens per step ÷ step cost`` moved (tokens per step is the
    acceptance length where every step drafts), e.g. ``acceptance length 3.18 → 3.17, step cost
    2.40 → 3.10: a speculative step got more expensive (drafting or verification got slower)``."""
    if acceptance_length is None or step_cost is None:
        return None
    per_step = acceptance_length if tokens_per_step is None else tokens_per_step
    now = (f"speedup ≈ {'acceptance length' if tokens_per_step is None else 'tokens per step'} {per_step:.2f} "
           f"÷ step cost {step_cost:.2f}")
    if stored_length is None or stored_step_cost is None:
        return now
    length_change = acceptance_length / stored_length          # < 1: fewer tokens per step
    cost_change = stored_step_cost / step_cost                  # < 1: each step costs more
    moved = ("fewer drafted tokens are accepted" if length_change < cost_change
             else "a speculative step got more expensive (drafting or verification got slower)")
    if abs(length_change - 1) < 0.02 and abs(cost_change - 1) < 0.02:
        moved = "neither side moved by 2% or more"
    return (f"acceptance length {stored_length:.2f} → {acceptance_length:.2f}, "
            f"step cost {stored_step_cost:.2f} → {step_cost:.2f}: {moved}")
