"""Verdicts: compare a confidence interval with a baseline and its tolerance.

Only an interval that lies wholly past the bound is a regression; one that straddles
it is UNKNOWN (collect more rounds), as in Chromium's SAME / DIFFERENT / UNKNOWN.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import Enum

from specguard.judge.stats import Interval
from specguard.config.tolerance import Tolerance


class Verdict(str, Enum):
    OK = "OK"
    REGRESSED = "REGRESSED"
    IMPROVED = "IMPROVED"
    UNKNOWN = "UNKNOWN"

    def __str__(self) -> str:
        return self.value


def _check_baseline(baseline: float) -> None:
    if isinstance(baseline, bool) or not isinstance(baseline, numbers.Real) \
            or not math.isfinite(baseline) or baseline <= 0:
        raise ValueError(f"baseline must be a positive finite number, got {baseline!r}")


def _mirror(baseline: float, tolerance: Tolerance) -> float:
    """The bound on the better side: past it the metric has improved."""
    return baseline * (1 + tolerance.rel) if tolerance.direction == "higher" else baseline * (1 - tolerance.rel)


def judge(interval: Interval, baseline: float, tolerance: Tolerance) -> Verdict:
    """REGRESSED / IMPROVED when the interval lies wholly past a bound, OK when wholly
    within tolerance, UNKNOWN when it straddles the bound."""
    _check_baseline(baseline)
    bound, mirror = tolerance.bound(baseline), _mirror(baseline, tolerance)
    if tolerance.direction == "higher":
        if interval.high < bound:
            return Verdict.REGRESSED
        if interval.low > mirror:
            return Verdict.IMPROVED
        return Verdict.OK if interval.low >= bound else Verdict.UNKNOWN
    if interval.low > bound:
        return Verdict.REGRESSED
    if interval.high < mirror:
        return Verdict.IMPROVED
    return Verdict.OK if interval.high <= bound else Verdict.UNKNOWN


def _fmt(x: float, digits: int = 3) -> str:
    """``digits`` significant digits, trailing zeros kept (3.00), no exponent for |x| >= 1."""
    text = f"{x:#.{digits}g}"
    if "e" in text and abs(x) >= 1:
        return f"{x:.0f}"  # 1234.5 -> "1234", not "1.23e+03"
    return text.rstrip(".") if "e" not in text else text


def _digits(*values: float) -> int:
    """Fewest significant digits (>= 3) at which distinct values print distinctly."""
    for digits in range(3, 17):
        if len({_fmt(v, digits) for v in values}) == len(set(values)):
            return digits
    return 17


@dataclass(frozen=True)
class Check:
    metric: str
    verdict: Verdict
    interval: Interval
    baseline: float              # the stored value, or the floor for kind "floor"
    tolerance: Tolerance
    kind: str = "baseline"       # "baseline": against a stored figure; "floor": a same-run minimum
    against: str | None = None   # the profile whose baseline file held the stored figure
    advisory: bool = False       # reported only: a machine-bound figure against another machine's file

    @classmethod
    def of(cls, metric: str, interval: Interval, baseline: float, tolerance: Tolerance) -> Check:
        """Judge ``interval`` and keep everything the messages need; an advisory tolerance makes an
        advisory check."""
        return cls(metric, judge(interval, baseline, tolerance), interval, baseline, tolerance,
                   advisory=tolerance.advisory)

    def _texts(self, *, improved: bool = False, estimate: bool = False) -> tuple[str, str]:
        """The interval and the bound it is compared with, printed with the same digits
        (more than 3 where 3 would print distinct numbers alike)."""
        iv, rel = self.interval, self.tolerance.rel
        higher = self.tolerance.direction == "higher"
        value = _mirror(self.baseline, self.tolerance) if improved else self.tolerance.bound(self.baseline)
        sign = "+" if higher == improved else "−"
        d = _digits(iv.low, iv.high, value, *((iv.estimate,) if estimate else ()))
        ci = f"{iv.confidence * 100:g}% CI [{_fmt(iv.low, d)}, {_fmt(iv.high, d)}]"
        if estimate:
            ci += f" (estimate {_fmt(iv.estimate, d)}, {iv.method})"
        bound = f"{_fmt(value, d)} = baseline {_fmt(self.baseline, d)} × (1 {sign} {rel:g})"
        return ci, bound

    def fails(self) -> str | None:
        """None unless REGRESSED; then why, e.g.
        ``speedup: 95% CI [2.71, 2.85] lies below 2.95 = baseline 3.11 × (1 − 0.05)``."""
        if self.verdict is not Verdict.REGRESSED:
            return None
        if self.kind == "floor":
            return f"no longer pays: {self._floor_text()}"
        ci, bound = self._texts()
        side = "below" if self.tolerance.direction == "higher" else "above"
        return f"{self.metric}: {ci} lies {side} {bound}"

    def _floor_text(self) -> str:
        iv = self.interval
        d = _digits(iv.low, iv.high, iv.estimate, self.baseline)
        rel = {Verdict.REGRESSED: "<", Verdict.OK: "≥"}.get(self.verdict, "straddles")
        return (f"speedup {_fmt(iv.estimate, d)}× [{_fmt(iv.low, d)}, {_fmt(iv.high, d)}] {rel} "
                f"{_fmt(self.baseline, d)} (min_speedup)")

    def describe(self) -> str:
        """One line for any verdict, for reports and UNKNOWN outcomes, e.g.
        ``speedup: UNKNOWN: 95% CI [2.90, 3.00] (estimate 2.96, bootstrap-percentile)
        straddles 2.95 = baseline 3.11 × (1 − 0.05); more rounds are needed to decide``."""
        if self.kind == "floor":
            return f"{self.metric}: {self.verdict.value}: {self._floor_text()}"
        higher = self.tolerance.direction == "higher"
        improved = self.verdict is Verdict.IMPROVED
        ci, bound = self._texts(improved=improved, estimate=True)
        worse, better = ("below", "above") if higher else ("above", "below")
        where = {
            Verdict.REGRESSED: f"lies {worse} {bound}",
            Verdict.IMPROVED: f"lies {better} {bound}",
            Verdict.OK: f"lies at or {better} {bound}",
            Verdict.UNKNOWN: f"straddles {bound}; more rounds are needed to decide",
        }[self.verdict]
        why = ("reported, never judged in this matrix" if self.tolerance.advisory
               else "machine-bound figure from another machine")
        source = "" if self.against is None else f" (baseline of {self.against}" + (
            f", advisory: {why})" if self.advisory else ")")
        return f"{self.metric}: {self.verdict.value}: {ci} {where}{source}"


def more_rounds_needed(verdict: Verdict, rounds_done: int, max_rounds: int) -> bool:
    """True only when the verdict is UNKNOWN and fewer than ``max_rounds`` rounds ran."""
    if rounds_done < 0 or max_rounds < 0:
        raise ValueError(f"rounds must be >= 0, got rounds_done={rounds_done!r}, max_rounds={max_rounds!r}")
    return verdict is Verdict.UNKNOWN and rounds_done < max_rounds
