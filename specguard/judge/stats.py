"""Statistics over benchmark rounds: summaries, confidence intervals, a rank test.

Intervals default to Student's t (``method="t"``): a mean's interval from the one-sample t,
a ratio of two servers' means from Welch's t on log throughputs (the ratio of geometric means,
exponentiated back). With the 3-8 rounds a cell has, the percentile bootstrap
(``method="bootstrap"``) is too narrow: a nominal 95% interval covered the true mean 74% of the
time at n=3 and 86% at n=5 in simulation, which turns noise into false REGRESSED verdicts.

Every function sorts its samples first, so results do not depend on the order the
rounds ran in (floating-point sums are order dependent, and a seeded bootstrap
resamples by index). Edge cases raise instead of returning 0: an empty sample,
NaN or inf, a confidence outside (0, 1), a ratio over a non-positive mean.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

UNSTABLE_CV = 0.10
N_RESAMPLES = 9999
# "percentile", not scipy's default "BCa": BCa needs a jackknife that fails or warns
# (DegenerateDataWarning, NaN bounds) on the 3-10 rounds we have and on near-constant
# data, and "basic" can leave the data's range (a negative throughput). The percentile
# interval always lies within [min, max] of the bootstrap statistics. Its price: with
# very few rounds it is narrower than its nominal confidence.
BOOTSTRAP_METHOD = "percentile"

Floats = np.ndarray[Any, np.dtype[np.float64]]


def _sorted_finite(values: Sequence[float], name: str = "values") -> Floats:
    """``values`` as a sorted 1-D float array; raises on empty, NaN or inf."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a flat sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty; at least one value is needed")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {float(arr[bad[0]])!r}; expected finite numbers")
    return np.sort(arr)


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError(f"confidence must be in (0, 1) such as 0.95, got {confidence!r}")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation as numpy's default.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    if not (isinstance(q, (int, float)) and 0 <= q <= 100):
        raise ValueError(f"q must be a percentage in [0, 100], got {q!r}")
    return float(np.percentile(_sorted_finite(values), q, method="linear"))


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    median: float
    stdev: float  # sample standard deviation (ddof=1); 0.0 when n == 1
    cv: float  # stdev / |mean|; 0.0 when n == 1 or all zero; inf when mean == 0 < stdev
    min: float
    max: float


def _mean(arr: Floats) -> float:
    # Clamped: a rounded sum can put the mean of near-equal values just outside [min, max].
    return min(max(float(np.mean(arr)), float(arr[0])), float(arr[-1]))


def summarize(values: Sequence[float]) -> Summary:
    """Summary statistics of ``values``; raises ValueError on empty input, NaN or inf."""
    arr = _sorted_finite(values)
    lo, hi = float(arr[0]), float(arr[-1])
    if lo == hi:  # constant (or single): exact, no arithmetic that could round
        return Summary(n=arr.size, mean=lo, median=lo, stdev=0.0, cv=0.0, min=lo, max=hi)
    mean = _mean(arr)
    stdev = float(np.std(arr, ddof=1))
    if mean == 0:
        cv = math.inf if stdev > 0 else 0.0
    else:
        cv = stdev / abs(mean)
    return Summary(n=arr.size, mean=mean, median=float(np.median(arr)), stdev=stdev, cv=cv, min=lo, max=hi)


@dataclass(frozen=True)
class Interval:
    """A confidence interval around ``estimate``; ``low <= estimate <= high`` always."""

    low: float
    high: float
    estimate: float
    confidence: float
    method: str  # "single", "constant", "student-t", "welch-t-log", "paired-t-log" or "bootstrap-percentile"

    def __post_init__(self) -> None:
        for field in ("low", "high", "estimate"):
            if not math.isfinite(getattr(self, field)):
                raise ValueError(f"Interval.{field} must be finite, got {getattr(self, field)!r}")
        if not self.low <= self.estimate <= self.high:
            raise ValueError(f"Interval needs low <= estimate <= high, got {self.low!r}, "
                             f"{self.estimate!r}, {self.high!r}")
        _check_confidence(self.confidence)

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def _bootstrap(data: tuple[Floats, ...], statistic: Callable[..., Any], confidence: float,
               seed: int) -> tuple[float, float]:
    kwargs: dict[str, Any] = {}
    # scipy >= 1.15 spells the generator ``rng``; older releases ``random_state``.
    key = "rng" if "rng" in inspect.signature(_scipy_stats.bootstrap).parameters else "random_state"
    kwargs[key] = np.random.default_rng(seed)
    res = _scipy_stats.bootstrap(data, statistic, n_resamples=N_RESAMPLES, vectorized=True,
                                 paired=False, confidence_level=confidence,
                                 method=BOOTSTRAP_METHOD, **kwargs)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"bootstrap gave a non-finite interval [{low}, {high}]")
    return low, high


@functools.lru_cache(maxsize=512)
def _t_quantile(p: float, df: int) -> float:
    return float(_scipy_stats.t.ppf(p, df))


def _t_interval(values: Floats, confidence: float) -> tuple[float, float]:
    """Student's t interval for the mean of ``values`` (at least two, not all equal): what
    ``scipy.stats.ttest_1samp(values, 0).confidence_interval(confidence)`` gives, without its
    per-call overhead (~8 ms against ~0.1 ms on 2 cores), which the gate's power replays pay
    thousands of times."""
    n = int(values.size)
    centre = float(np.mean(values))
    half = _t_quantile((1 + confidence) / 2, n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return centre - half, centre + half


def _interval(low: float, high: float, estimate: float, confidence: float, method: str) -> Interval:
    # The percentile interval is not centred on the estimate: with skewed tiny samples,
    # or by rounding when the data are nearly constant, it can miss it. Clamp so the
    # interval always contains the point estimate.
    return Interval(low=min(low, estimate), high=max(high, estimate), estimate=estimate,
                    confidence=confidence, method=method)


METHODS = ("t", "bootstrap")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def mean_ci(samples: Sequence[float], confidence: float = 0.95, *, seed: int = 0, method: str = "t") -> Interval:
    """Interval for the mean of ``samples``: Student's t, or a seeded bootstrap."""
    _check_confidence(confidence)
    _check_method(method)
    arr = _sorted_finite(samples, "samples")
    estimate = _mean(arr)
    if arr.size == 1:
        return Interval(estimate, estimate, estimate, confidence, "single")
    if arr[0] == arr[-1]:
        return Interval(estimate, estimate, estimate, confidence, "constant")
    if method == "t":
        low, high = _t_interval(arr, confidence)
        return _interval(low, high, estimate, confidence, "student-t")
    low, high = _bootstrap((arr,), lambda x, axis: np.mean(x, axis=axis), confidence, seed)
    # A resample's mean lies in [min, max] exactly, though its rounded sum may not.
    low, high = max(low, float(arr[0])), min(high, float(arr[-1]))
    return _interval(low, high, estimate, confidence, f"bootstrap-{BOOTSTRAP_METHOD}")


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], confidence: float = 0.95,
             *, seed: int = 0, method: str = "t") -> Interval:
    """Interval for the ratio of two independent samples' means: of the geometric means with
    ``method="t"`` (Welch's t on logs; the estimate is the same quantity), of the arithmetic means
    with the bootstrap.

    A sample that does not vary (one round, or identical rounds) is held fixed and only
    the other varies; when neither varies the interval is degenerate.
    """
    _check_confidence(confidence)
    _check_method(method)
    num = _sorted_finite(numerator, "numerator")
    den = _sorted_finite(denominator, "denominator")
    num_mean, den_mean = _mean(num), _mean(den)
    if den_mean <= 0:
        raise ValueError(f"denominator: mean is {den_mean!r}; a ratio needs a positive mean")
    if den[0] <= 0:
        # A resample made of these values could have mean 0 (division by zero) or flip sign.
        raise ValueError(f"denominator: contains {float(den[0])!r}; every value must be positive")
    estimate = num_mean / den_mean
    num_varies, den_varies = bool(num[0] != num[-1]), bool(den[0] != den[-1])
    if not (num_varies or den_varies):
        method = "single" if num.size == den.size == 1 else "constant"
        return Interval(estimate, estimate, estimate, confidence, method)
    # Logs need positive throughputs; a round with none (0 tok/s) falls back to the bootstrap.
    if method == "t" and num[0] > 0:
        # The interval is of the ratio of geometric means; so is the estimate (not the ratio of
        # arithmetic means, which can even fall outside it).
        estimate = math.exp(float(np.mean(np.log(num))) - float(np.mean(np.log(den))))
        if num_varies and den_varies:
            ci = _scipy_stats.ttest_ind(np.log(num), np.log(den), equal_var=False).confidence_interval(confidence)
            low, high = math.exp(float(ci.low)), math.exp(float(ci.high))
        elif num_varies:
            ci = _scipy_stats.ttest_1samp(np.log(num), 0.0).confidence_interval(confidence)
            low, high = math.exp(float(ci.low)) / den_mean, math.exp(float(ci.high)) / den_mean
        else:
            ci = _scipy_stats.ttest_1samp(np.log(den), 0.0).confidence_interval(confidence)
            low, high = num_mean / math.exp(float(ci.high)), num_mean / math.exp(float(ci.low))
        return _interval(low, high, estimate, confidence, "welch-t-log")
    if num_varies and den_varies:
        low, high = _bootstrap(
            (num, den), lambda x, y, axis: np.mean(x, axis=axis) / np.mean(y, axis=axis), confidence, seed)
    elif num_varies:
        low, high = _bootstrap((num,), lambda x, axis: np.mean(x, axis=axis) / den_mean, confidence, seed)
    else:
        low, high = _bootstrap((den,), lambda y, axis: num_mean / np.mean(y, axis=axis), confidence, seed)
    return _interval(low, high, estimate, confidence, f"bootstrap-{BOOTSTRAP_METHOD}")


def paired_ratio_ci(numerator: Sequence[float], denominator: Sequence[float], confidence: float = 0.95) -> Interval:
    """Interval for the geometric mean of the paired ratios ``numerator[i] / denominator[i]``.

    Pair i is one round of each server run back to back, so drift over minutes cancels in its
    ratio. Estimate and interval are of the same quantity: exp(mean(log ratio)) with a one-sample
    t interval on the log ratios over pairs, exponentiated back.

    >>> paired_ratio_ci([2.0, 2.0], [1.0, 1.0]).estimate
    2.0
    """
    _check_confidence(confidence)
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"paired samples need equal lengths, got {num.shape} and {den.shape}")
    _sorted_finite(num, "numerator"), _sorted_finite(den, "denominator")
    if (num <= 0).any() or (den <= 0).any():
        raise ValueError("paired ratios need positive values on both sides")
    logs = _sorted_finite(np.log(num) - np.log(den), "log ratios")
    centre = _mean(logs)
    estimate = math.exp(centre)
    if logs.size == 1:
        return Interval(estimate, estimate, estimate, confidence, "single")
    if logs[0] == logs[-1]:
        return Interval(estimate, estimate, estimate, confidence, "constant")
    low, high = _t_interval(logs, confidence)
    return _interval(math.exp(low), math.exp(high), estimate, confidence, "paired-t-log")


def stability_warning(summary: Summary, name: str) -> str | None:
    """pyperf-style warning when the rounds vary by more than ``UNSTABLE_CV`` of the mean."""
    if summary.cv <= UNSTABLE_CV:
        return None
    if math.isinf(summary.cv):
        return (f"{name}: the mean is 0 but the standard deviation is {summary.stdev:.3g}; "
                "the result may be unstable")
    return f"{name}: the standard deviation is {summary.cv:.0%} of the mean; the result may be unstable"
