"""specguard.judge.verdict: the verdict table for both directions, messages, Hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.judge.stats import Interval, mean_ci
from specguard.config.tolerance import Tolerance
from specguard.judge.verdict import Check, Verdict, judge, more_rounds_needed

HIGHER, LOWER = Tolerance(0.05, "higher"), Tolerance(0.05, "lower")
PROPS = settings(max_examples=200, deadline=None)


def iv(low: float, high: float, estimate: float | None = None) -> Interval:
    est = (low + high) / 2 if estimate is None else estimate
    return Interval(low=low, high=high, estimate=est, confidence=0.95, method="test")


def test_verdict_values() -> None:
    assert [v.value for v in Verdict] == ["OK", "REGRESSED", "IMPROVED", "UNKNOWN"]
    assert Verdict("UNKNOWN") is Verdict.UNKNOWN
    assert Verdict.OK == "OK" and str(Verdict.REGRESSED) == "REGRESSED"


# Baseline 100, rel 0.05. Higher is better: floor 95, mirror 105.
# Lower is better: ceiling 105, mirror 95.
@pytest.mark.parametrize(
    ("tolerance", "low", "high", "expected"),
    [
        (HIGHER, 90.0, 94.0, Verdict.REGRESSED),
        (HIGHER, 94.9, 94.99, Verdict.REGRESSED),
        (HIGHER, 90.0, 95.0, Verdict.UNKNOWN),  # touches the floor: not wholly below
        (HIGHER, 94.0, 96.0, Verdict.UNKNOWN),
        (HIGHER, 90.0, 110.0, Verdict.UNKNOWN),
        (HIGHER, 95.0, 100.0, Verdict.OK),  # at the floor counts as within
        (HIGHER, 96.0, 110.0, Verdict.OK),  # reaches past the mirror but not wholly
        (HIGHER, 105.0, 110.0, Verdict.OK),  # at the mirror is not yet an improvement
        (HIGHER, 105.5, 110.0, Verdict.IMPROVED),
        (LOWER, 106.0, 110.0, Verdict.REGRESSED),
        (LOWER, 105.01, 105.1, Verdict.REGRESSED),
        (LOWER, 105.0, 110.0, Verdict.UNKNOWN),
        (LOWER, 104.0, 106.0, Verdict.UNKNOWN),
        (LOWER, 90.0, 110.0, Verdict.UNKNOWN),
        (LOWER, 100.0, 105.0, Verdict.OK),
        (LOWER, 90.0, 104.0, Verdict.OK),
        (LOWER, 90.0, 95.0, Verdict.OK),
        (LOWER, 90.0, 94.5, Verdict.IMPROVED),
    ],
)
def test_judge_table(tolerance: Tolerance, low: float, high: float, expected: Verdict) -> None:
    assert judge(iv(low, high), 100.0, tolerance) is expected


def test_judge_issue_example_mtp_speedup() -> None:
    # An MTP baseline speedup of 3.11 with a 5 % tolerance: the floor is 2.9545.
    assert judge(mean_ci([2.9]), 3.11, HIGHER) is Verdict.REGRESSED
    assert judge(mean_ci([3.0, 3.0, 3.0]), 3.11, HIGHER) is Verdict.OK
    assert judge(iv(2.9, 3.0), 3.11, HIGHER) is Verdict.UNKNOWN


def test_judge_zero_tolerance() -> None:
    exact = Tolerance(0.0)
    assert judge(iv(100.0, 100.0), 100.0, exact) is Verdict.OK
    assert judge(iv(99.0, 99.9), 100.0, exact) is Verdict.REGRESSED
    assert judge(iv(100.1, 101.0), 100.0, exact) is Verdict.IMPROVED


@pytest.mark.parametrize("baseline", [0.0, -3.11, math.nan, math.inf, True])
def test_judge_rejects_bad_baseline(baseline: float) -> None:
    with pytest.raises(ValueError, match="baseline must be a positive finite number"):
        judge(iv(1.0, 2.0), baseline, HIGHER)


# --- Check messages ---------------------------------------------------------------------------

def test_fails_message_higher_is_better() -> None:
    check = Check.of("speedup", iv(2.71, 2.85, 2.78), 3.11, HIGHER)
    assert check.verdict is Verdict.REGRESSED
    assert check.fails() == "speedup: 95% CI [2.71, 2.85] lies below 2.95 = baseline 3.11 × (1 − 0.05)"


def test_fails_message_lower_is_better() -> None:
    check = Check.of("ttft_ms", iv(130.0, 140.0), 120.0, LOWER)
    assert check.fails() == "ttft_ms: 95% CI [130, 140] lies above 126 = baseline 120 × (1 + 0.05)"


def test_fails_message_adds_digits_where_three_would_hide_the_gap() -> None:
    check = Check.of("speedup", iv(2.951, 2.953), 3.11, HIGHER)
    assert check.fails() == "speedup: 95% CI [2.951, 2.953] lies below 2.954 = baseline 3.110 × (1 − 0.05)"


def test_fails_message_large_values_have_no_exponent() -> None:
    check = Check.of("output_throughput", iv(1000.0, 1100.0), 1234.5, Tolerance(0.1))
    assert check.fails() == (
        "output_throughput: 95% CI [1000, 1100] lies below 1111 = baseline 1234 × (1 − 0.1)")


@pytest.mark.parametrize(
    ("low", "high"), [(3.0, 3.1), (2.9, 3.0), (3.3, 3.4)], ids=["ok", "unknown", "improved"])
def test_fails_is_none_unless_regressed(low: float, high: float) -> None:
    assert Check.of("speedup", iv(low, high), 3.11, HIGHER).fails() is None


@pytest.mark.parametrize(
    ("interval", "tolerance", "expected"),
    [
        (iv(2.71, 2.85, 2.78), HIGHER,
         ("speedup: REGRESSED: 95% CI [2.71, 2.85] (estimate 2.78, test) "
          "lies below 2.95 = baseline 3.11 × (1 − 0.05)")),
        (iv(3.0, 3.1, 3.05), HIGHER,
         ("speedup: OK: 95% CI [3.00, 3.10] (estimate 3.05, test) "
          "lies at or above 2.95 = baseline 3.11 × (1 − 0.05)")),
        (iv(3.3, 3.4, 3.35), HIGHER,
         ("speedup: IMPROVED: 95% CI [3.30, 3.40] (estimate 3.35, test) "
          "lies above 3.27 = baseline 3.11 × (1 + 0.05)")),
        (iv(2.9, 3.0, 2.96), HIGHER,
         ("speedup: UNKNOWN: 95% CI [2.90, 3.00] (estimate 2.96, test) "
          "straddles 2.95 = baseline 3.11 × (1 − 0.05); more rounds are needed to decide")),
        (iv(2.5, 2.8, 2.6), LOWER,
         ("speedup: IMPROVED: 95% CI [2.50, 2.80] (estimate 2.60, test) "
          "lies below 2.95 = baseline 3.11 × (1 − 0.05)")),
        (iv(3.0, 3.2, 3.1), LOWER,
         ("speedup: OK: 95% CI [3.00, 3.20] (estimate 3.10, test) "
          "lies at or below 3.27 = baseline 3.11 × (1 + 0.05)")),
    ],
)
def test_describe(interval: Interval, tolerance: Tolerance, expected: str) -> None:
    assert Check.of("speedup", interval, 3.11, tolerance).describe() == expected


# --- more_rounds_needed -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("verdict", "done", "cap", "expected"),
    [
        (Verdict.UNKNOWN, 3, 10, True),
        (Verdict.UNKNOWN, 9, 10, True),
        (Verdict.UNKNOWN, 10, 10, False),
        (Verdict.UNKNOWN, 12, 10, False),
        (Verdict.OK, 3, 10, False),
        (Verdict.REGRESSED, 3, 10, False),
        (Verdict.IMPROVED, 3, 10, False),
    ],
)
def test_more_rounds_needed(verdict: Verdict, done: int, cap: int, expected: bool) -> None:
    assert more_rounds_needed(verdict, done, cap) is expected


def test_more_rounds_needed_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        more_rounds_needed(Verdict.UNKNOWN, -1, 10)


# --- properties -------------------------------------------------------------------------------

values = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)
tolerances = st.builds(Tolerance, st.floats(min_value=0.0, max_value=0.5), st.sampled_from(["higher", "lower"]))
RANK = {Verdict.REGRESSED: 0, Verdict.UNKNOWN: 1, Verdict.OK: 2, Verdict.IMPROVED: 3}


@PROPS
@given(values, values, values, st.floats(min_value=0.0, max_value=1e4), values, tolerances)
def test_judge_is_monotone(a: float, b: float, c: float, shift: float, baseline: float,
                           tolerance: Tolerance) -> None:
    low, mid, high = sorted((a, b, c))
    before = judge(iv(low, high, mid), baseline, tolerance)
    after = judge(iv(low + shift, high + shift, mid + shift), baseline, tolerance)
    # Raising the interval is good news for a higher-is-better metric, bad for lower.
    if tolerance.direction == "higher":
        assert RANK[after] >= RANK[before]
        assert not (before is Verdict.OK and after is Verdict.REGRESSED)
    else:
        assert RANK[after] <= RANK[before]


@PROPS
@given(values, values, tolerances)
def test_degenerate_interval_is_never_unknown(value: float, baseline: float, tolerance: Tolerance) -> None:
    verdict = judge(iv(value, value), baseline, tolerance)
    assert verdict is not Verdict.UNKNOWN
    bound = tolerance.bound(baseline)
    worse = value < bound if tolerance.direction == "higher" else value > bound
    assert (verdict is Verdict.REGRESSED) == worse


@PROPS
@given(values, values, values, values, tolerances)
def test_fails_names_the_metric_only_when_regressed(a: float, b: float, c: float, baseline: float,
                                                    tolerance: Tolerance) -> None:
    low, mid, high = sorted((a, b, c))
    check = Check.of("acceptance_rate", iv(low, high, mid), baseline, tolerance)
    message = check.fails()
    assert (message is None) == (check.verdict is not Verdict.REGRESSED)
    if message is not None:
        assert message.startswith("acceptance_rate: 95% CI [")
    assert "\n" not in check.describe() and check.describe().startswith(f"acceptance_rate: {check.verdict}")
