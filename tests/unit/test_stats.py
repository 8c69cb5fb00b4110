"""specguard.judge.stats: exact known values, edge cases that raise, Hypothesis properties."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.judge.stats import (
    UNSTABLE_CV,
    Interval,
    Summary,
    mean_ci,
    percentile,
    ratio_ci,
    stability_warning,
    summarize,
)

# Bounded so that sums cannot overflow and examples stay fast.
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=1, max_size=30)
positive_samples = st.lists(positive, min_size=1, max_size=20)
confidences = st.sampled_from([0.8, 0.9, 0.95, 0.99])
PROPS = settings(max_examples=60, deadline=None)


# --- percentile -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 25, 1.75),
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([4, 1, 3, 2], 75, 3.25),
        ([10, 20], 90, 19.0),
        ([7.5], 33, 7.5),
    ],
)
def test_percentile_known_values(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize("q", [-0.1, 100.5, math.nan, math.inf])
def test_percentile_rejects_q_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="q must be a percentage"):
        percentile([1, 2, 3], q)


@pytest.mark.parametrize("values", [[], [1.0, math.nan], [math.inf]])
def test_percentile_rejects_empty_and_non_finite(values: list[float]) -> None:
    with pytest.raises(ValueError):
        percentile(values, 50)


# --- summarize --------------------------------------------------------------------------------

def test_summarize_known_values() -> None:
    s = summarize([2, 4, 4, 4, 5, 5, 7, 9])
    assert (s.n, s.mean, s.median, s.min, s.max) == (8, 5.0, 4.5, 2.0, 9.0)
    assert s.stdev == pytest.approx(2.138089935299395, rel=1e-12)  # sqrt(32 / 7)
    assert s.cv == pytest.approx(2.138089935299395 / 5, rel=1e-12)


def test_summarize_single_value_has_zero_spread() -> None:
    assert summarize([7.5]) == Summary(n=1, mean=7.5, median=7.5, stdev=0.0, cv=0.0, min=7.5, max=7.5)


def test_summarize_zero_mean() -> None:
    assert summarize([0.0, 0.0, 0.0]).cv == 0.0
    s = summarize([-1.0, 1.0])
    assert s.mean == 0.0 and s.stdev == pytest.approx(math.sqrt(2)) and s.cv == math.inf


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "empty"),
        ([1.0, math.nan], r"values\[1\] is nan"),
        ([1.0, 2.0, -math.inf], r"values\[2\] is -inf"),
        ([[1.0, 2.0]], "flat sequence"),
    ],
)
def test_summarize_rejects_bad_input(values: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarize(values)


@PROPS
@given(samples)
def test_summary_is_ordered(values: list[float]) -> None:
    s = summarize(values)
    assert s.min <= s.median <= s.max
    assert s.min <= s.mean <= s.max
    assert s.stdev >= 0 and s.cv >= 0 and s.n == len(values)


@PROPS
@given(st.data(), samples)
def test_summary_is_invariant_under_shuffling(data: st.DataObject, values: list[float]) -> None:
    shuffled = data.draw(st.permutations(values))
    assert summarize(shuffled) == summarize(values)


@PROPS
@given(finite, st.integers(min_value=1, max_value=20))
def test_identical_samples_have_no_spread(value: float, n: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning (division by zero) would fail here
        s = summarize([value] * n)
        interval = mean_ci([value] * n)
    assert s.stdev == 0.0 and s.cv == 0.0 and s.mean == value
    assert interval.low == interval.high == interval.estimate == value
    assert interval.method == ("single" if n == 1 else "constant")


# --- Interval ---------------------------------------------------------------------------------

def test_interval_contains_is_inclusive() -> None:
    interval = Interval(low=1.0, high=2.0, estimate=1.5, confidence=0.95, method="test")
    assert interval.contains(1.0) and interval.contains(2.0) and interval.contains(1.5)
    assert not interval.contains(0.999) and not interval.contains(2.001)


@pytest.mark.parametrize(
    ("low", "high", "estimate", "confidence"),
    [
        (2.0, 1.0, 1.5, 0.95),  # low > high
        (1.0, 2.0, 2.5, 0.95),  # estimate outside
        (math.nan, 2.0, 1.5, 0.95),
        (1.0, math.inf, 1.5, 0.95),
        (1.0, 2.0, 1.5, 1.0),
        (1.0, 2.0, 1.5, 0.0),
    ],
)
def test_interval_rejects_inconsistent_fields(low: float, high: float, estimate: float,
                                              confidence: float) -> None:
    with pytest.raises(ValueError):
        Interval(low=low, high=high, estimate=estimate, confidence=confidence, method="test")


# --- mean_ci ----------------------------------------------------------------------------------

def test_mean_ci_single_value_is_degenerate() -> None:
    assert mean_ci([5.0]) == Interval(5.0, 5.0, 5.0, 0.95, "single")


def test_mean_ci_bootstrap_is_reproducible_and_within_the_data() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    first, second = mean_ci(values, seed=7, method="bootstrap"), mean_ci(values, seed=7, method="bootstrap")
    assert first == second
    assert first.method == "bootstrap-percentile" and first.estimate == 4.0
    assert 1.0 <= first.low < 4.0 < first.high <= 10.0


def test_mean_ci_higher_confidence_is_wider() -> None:
    values = [101.0, 97.5, 99.0, 103.2, 98.8, 100.4]
    narrow, wide = mean_ci(values, 0.80), mean_ci(values, 0.99)
    assert wide.low <= narrow.low <= narrow.high <= wide.high
    assert wide.confidence == 0.99


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.5])
def test_mean_ci_rejects_bad_confidence(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence)


def test_mean_ci_rejects_empty() -> None:
    with pytest.raises(ValueError, match="samples: empty"):
        mean_ci([])


@PROPS
@given(samples, confidences)
def test_mean_ci_contains_its_estimate(values: list[float], confidence: float) -> None:
    interval = mean_ci(values, confidence)
    assert interval.low <= interval.estimate <= interval.high
    assert interval.contains(interval.estimate)
    boot = mean_ci(values, confidence, method="bootstrap")
    assert boot.contains(boot.estimate)
    assert min(values) <= boot.low and boot.high <= max(values)


def test_mean_ci_student_t_known_value() -> None:
    # mean 2, sample sd 1, n 3: 2 ± t(0.975, 2) * 1 / sqrt(3) = 2 ± 4.302653 / 1.732051
    interval = mean_ci([1.0, 2.0, 3.0])
    assert interval.method == "student-t"
    assert interval.low == pytest.approx(2 - 2.4841377, rel=1e-6)
    assert interval.high == pytest.approx(2 + 2.4841377, rel=1e-6)


@PROPS
@given(st.data(), samples)
def test_mean_ci_is_invariant_under_shuffling(data: st.DataObject, values: list[float]) -> None:
    shuffled = data.draw(st.permutations(values))
    assert mean_ci(shuffled) == mean_ci(values)


@PROPS
@given(st.lists(finite, min_size=2, max_size=20), st.floats(min_value=1e-3, max_value=1e3))
def test_mean_ci_scales_with_the_samples(values: list[float], c: float) -> None:
    base, scaled = mean_ci(values), mean_ci([c * v for v in values])
    # Rounding can differ by a few ulps of the largest value.
    tol = 1e-9 * c * max(abs(v) for v in values) + 1e-300
    assert scaled.low == pytest.approx(c * base.low, rel=1e-9, abs=tol)
    assert scaled.high == pytest.approx(c * base.high, rel=1e-9, abs=tol)
    assert scaled.estimate == pytest.approx(c * base.estimate, rel=1e-9, abs=tol)


# --- ratio_ci ---------------------------------------------------------------------------------

def test_ratio_ci_degenerate_cases() -> None:
    assert ratio_ci([6.0], [2.0]) == Interval(3.0, 3.0, 3.0, 0.95, "single")
    assert ratio_ci([6.0, 6.0], [2.0, 2.0, 2.0]) == Interval(3.0, 3.0, 3.0, 0.95, "constant")


def test_ratio_ci_speculative_over_plain_throughput() -> None:
    spec = [310.0, 305.0, 322.0, 298.0, 315.0]  # tokens/s with drafts
    plain = [100.0, 102.0, 99.0, 101.0]  # tokens/s without
    interval = ratio_ci(spec, plain, seed=3, method="bootstrap")
    assert interval.estimate == pytest.approx(310.0 / 100.5)
    assert interval.method == "bootstrap-percentile"
    assert 298.0 / 102.0 <= interval.low < interval.estimate < interval.high <= 322.0 / 99.0
    assert ratio_ci(spec, plain, seed=3, method="bootstrap") == interval
    welch = ratio_ci(spec, plain)
    assert welch.method == "welch-t-log" and welch.low < welch.estimate < welch.high
    # Wider than the bootstrap on five and four rounds: the point of using t with few rounds.
    assert welch.low < interval.low and welch.high > interval.high


def test_ratio_ci_holds_a_constant_side_fixed() -> None:
    only_num = ratio_ci([2.0, 4.0], [2.0], method="bootstrap")
    assert only_num.estimate == 1.5 and 1.0 <= only_num.low <= only_num.high <= 2.0
    only_den = ratio_ci([6.0], [2.0, 3.0], method="bootstrap")
    assert only_den.estimate == 2.4 and 2.0 <= only_den.low <= only_den.high <= 3.0
    for iv in (ratio_ci([2.0, 4.0], [2.0]), ratio_ci([6.0], [2.0, 3.0])):
        assert iv.method == "welch-t-log" and iv.contains(iv.estimate)


@pytest.mark.parametrize(
    ("denominator", "message"),
    [([0.0, 0.0], "mean is 0.0"), ([-1.0, -2.0], "positive mean"), ([0.0, 5.0], "every value")],
)
def test_ratio_ci_rejects_non_positive_denominator(denominator: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ratio_ci([1.0, 2.0], denominator)


@PROPS
@given(positive_samples, positive_samples, confidences)
def test_ratio_ci_contains_its_estimate(num: list[float], den: list[float], confidence: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interval = ratio_ci(num, den, confidence)
        boot = ratio_ci(num, den, confidence, method="bootstrap")
    assert interval.low <= interval.estimate <= interval.high
    assert boot.low <= boot.estimate <= boot.high
    # The bootstrap never leaves the range of the data's ratios; Student's t may, by design.
    assert min(num) / max(den) * (1 - 1e-12) <= boot.low
    assert boot.high <= max(num) / min(den) * (1 + 1e-12)


@PROPS
@given(st.data(), positive_samples, positive_samples)
def test_ratio_ci_is_invariant_under_shuffling(data: st.DataObject, num: list[float],
                                               den: list[float]) -> None:
    shuffled = data.draw(st.permutations(num)), data.draw(st.permutations(den))
    assert ratio_ci(*shuffled) == ratio_ci(num, den)


@PROPS
@given(positive, st.integers(1, 10), positive, st.integers(1, 10))
def test_ratio_ci_identical_samples_are_degenerate(a: float, n: int, b: float, m: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interval = ratio_ci([a] * n, [b] * m)
    assert interval.low == interval.high == interval.estimate == a / b


# --- stability_warning ------------------------------------------------------------------------

def _summary(cv: float, mean: float = 100.0) -> Summary:
    return Summary(n=5, mean=mean, median=mean, stdev=cv * abs(mean) if math.isfinite(cv) else 3.0,
                   cv=cv, min=mean - 20, max=mean + 20)


def test_stability_warning_text() -> None:
    assert stability_warning(_summary(0.12), "output_throughput") == (
        "output_throughput: the standard deviation is 12% of the mean; the result may be unstable")


def test_stability_warning_threshold() -> None:
    assert UNSTABLE_CV == 0.10
    assert stability_warning(_summary(0.10), "x") is None
    assert stability_warning(_summary(0.0), "x") is None
    assert stability_warning(summarize([100.0, 100.0]), "x") is None


def test_stability_warning_zero_mean() -> None:
    assert stability_warning(_summary(math.inf, mean=0.0), "delta") == (
        "delta: the mean is 0 but the standard deviation is 3; the result may be unstable")


def test_stability_warning_from_real_rounds() -> None:
    message = stability_warning(summarize([80.0, 100.0, 120.0]), "speedup")
    assert message == "speedup: the standard deviation is 20% of the mean; the result may be unstable"


@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=40).filter(lambda v: max(v) > min(v)),
       st.sampled_from([0.5, 0.9, 0.95, 0.975, 0.99, 0.9875]))
def test_t_interval_is_scipys_one_sample_t_interval(values: list[float], confidence: float) -> None:
    """The direct formula mean_ci and paired_ratio_ci use gives scipy's ttest_1samp interval."""
    import numpy as np
    from scipy import stats as scipy_stats

    from specguard.judge.stats import _t_interval
    arr = np.sort(np.asarray(values))
    want = scipy_stats.ttest_1samp(arr, 0.0).confidence_interval(confidence_level=confidence)
    low, high = _t_interval(arr, confidence)
    scale = max(1.0, float(np.max(np.abs(arr))))
    assert abs(low - want.low) <= 1e-9 * scale and abs(high - want.high) <= 1e-9 * scale
