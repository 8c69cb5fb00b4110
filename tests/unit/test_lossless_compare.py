"""specguard.lossless.compare: comparing greedy outputs, near-tie vs real, reports, parsing, the case list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.lossless.compare import (
    END,
    LOGIT_SCALE,
    MANTISSA_BITS,
    ROUNDING,
    Divergence,
    Greedy,
    LosslessReport,
    compare,
    compare_all,
    effective_margin,
    lossless_cases,
    lossless_pairs,
    mantissa_bits,
    parse_choice,
    resolution,
)
from specguard.config.matrix import Matrix, load_matrix, parse_matrix

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "fixtures" / "matrices" / "tiny-cpu.toml"
PROPS = settings(max_examples=50, deadline=None)
MARGIN = 0.0625   # binary-exact, so "margin == threshold" is tested without rounding


def top(*pairs: tuple[int, float]) -> tuple[tuple[int, float], ...]:
    return tuple(pairs)


def greedy(ids: list[int], tops: list[tuple[tuple[int, float], ...]] | None = None,
           pid: str = "p1") -> Greedy:
    if tops is None:
        tops = [top((t, -0.01), (t + 1000, -5.0)) for t in ids]
    return Greedy(pid, tuple(ids), tuple(tops), "")


# --- compare ---------------------------------------------------------------------------------

def test_identical_is_none() -> None:
    assert compare(greedy([1, 2, 3]), greedy([1, 2, 3]), MARGIN) is None
    assert compare(greedy([]), greedy([]), MARGIN) is None


def test_first_difference_index() -> None:
    base = greedy([10, 11, 12, 13, 14])
    d = compare(base, greedy([10, 11, 99, 13, 98]), MARGIN)
    assert d is not None
    assert (d.prompt_id, d.index, d.base_token, d.spec_token) == ("p1", 2, 12, 99)
    assert d.base_top == base.top[2]


def _tied(b1: float, b2: float) -> Greedy:
    """The plain run: at index 1 its top-1 is 20 (logprob b1) and its top-2 is 21 (logprob b2)."""
    return greedy([7, 20, 30], [top((7, -0.1), (8, -3.0)), top((20, b1), (21, b2), (22, -4.0)),
                                top((30, -0.2), (31, -2.0))])


@pytest.mark.parametrize(
    ("b1", "b2", "spec_tok", "kind", "margin"),
    [
        (-0.5, -0.53125, 21, "near-tie", 0.03125),      # close, and spec took plain's top-2
        (-0.5, -0.5625, 21, "near-tie", MARGIN),         # margin exactly at the threshold
        (-0.5, -0.5, 21, "near-tie", 0.0),               # an exact tie
        (-0.5, -0.625, 21, "real", 0.125),               # took the top-2, but the gap is too large
        (-0.5, -0.53125, 22, "real", 0.03125),           # close, but spec took plain's top-3
        (-0.5, -0.53125, 99, "real", 0.03125),           # a token plain did not even rank
    ],
)
def test_near_tie_classification(b1: float, b2: float, spec_tok: int, kind: str, margin: float) -> None:
    base = _tied(b1, b2)   # the speculative run below sees 20 and its own token exactly tied
    spec = greedy([7, spec_tok, 30], [base.top[0], top((spec_tok, -0.45), (20, -0.45)), base.top[2]])
    d = compare(base, spec, MARGIN)
    assert d is not None
    assert (d.index, d.base_token, d.spec_token, d.kind, d.margin) == (1, 20, spec_tok, kind, margin)
    assert d.spec_top == spec.top[1]


def test_without_logprobs_every_difference_is_real() -> None:
    base = greedy([1, 2], [top((1, -0.1)), top((2, -0.5))])   # only the top-1 recorded
    d = compare(base, greedy([1, 3]), MARGIN)
    assert d is not None and d.margin is None and d.kind == "real"


def test_spec_ended_early() -> None:
    base = greedy([1, 2, 3, 4])
    d = compare(base, greedy([1, 2]), MARGIN)
    assert d is not None
    assert (d.index, d.base_token, d.spec_token, d.kind) == (2, 3, END, "real")
    assert d.base_top == base.top[2] and d.spec_top == ()


def test_plain_ended_early() -> None:
    d = compare(greedy([1, 2]), greedy([1, 2, 5]), MARGIN)
    assert d is not None
    assert (d.index, d.base_token, d.spec_token, d.kind) == (2, END, 5, "real")
    assert (d.margin, d.base_top) == (None, ())


def test_empty_against_nonempty() -> None:
    d = compare(greedy([]), greedy([4]), MARGIN)
    assert d is not None and (d.index, d.base_token, d.spec_token) == (0, END, 4)


# --- Hypothesis ------------------------------------------------------------------------------

tokens = st.lists(st.integers(0, 50), max_size=20)


@PROPS
@given(ids=tokens)
def test_compare_with_itself_is_none(ids: list[int]) -> None:
    g = greedy(ids)
    assert compare(g, g, MARGIN) is None
    assert compare(g, greedy(list(ids)), 0.0) is None


@PROPS
@given(a=tokens, b=tokens)
def test_compare_is_symmetric_in_the_index(a: list[int], b: list[int]) -> None:
    ab, ba = compare(greedy(a), greedy(b), MARGIN), compare(greedy(b), greedy(a), MARGIN)
    assert (ab is None) == (ba is None) == (a == b)
    if ab is not None and ba is not None:
        assert ab.index == ba.index
        assert (ab.base_token, ab.spec_token) == (ba.spec_token, ba.base_token)
        assert a[:ab.index] == b[:ab.index]


# logprobs on a grid of 2**-10: every sum below is exact, and no value falls within ROUNDING of a bound
GRID = 2.0 ** -10
DTYPES = ["float32", "float16", "bfloat16", "auto", "half", "float"]


@PROPS
@given(prefix=tokens, b1=st.integers(-20 * 1024, 0), gap=st.integers(0, 1024),
       threshold=st.integers(0, 512), dtype=st.sampled_from(DTYPES))
def test_near_tie_iff_small_margin_and_top2(prefix: list[int], b1: int, gap: int, threshold: int,
                                            dtype: str) -> None:
    """The speculative run sees the pair exactly tied: a near-tie exactly when the plain gap is
    within the effective margin."""
    lp1, lp2, t = b1 * GRID, (b1 - gap) * GRID, threshold * GRID
    same = [top((t_, -0.01), (t_ + 1000, -5.0)) for t_ in prefix]
    base = greedy(prefix + [100], same + [top((100, lp1), (101, lp2))])
    spec = greedy(prefix + [101], same + [top((101, -0.75), (100, -0.75))])
    d = compare(base, spec, t, dtype)
    assert d is not None and d.index == len(prefix)
    assert d.kind == ("near-tie" if lp1 - lp2 <= effective_margin(t, dtype) else "real")


# --- near-ties in units of the compute dtype -------------------------------------------------

def test_resolution_per_dtype() -> None:
    assert LOGIT_SCALE == 32.0
    assert resolution("bfloat16") == 0.25
    assert resolution("float16") == resolution("half") == 0.03125
    assert resolution("float32") == resolution("float") == 2.0 ** -18 == ROUNDING
    assert resolution("auto") == resolution("bfloat16")            # vLLM's auto: taken as bfloat16
    assert resolution("torch.bfloat16") == resolution(" BFloat16 ") == resolution("bf16") == 0.25
    assert resolution("float64") == resolution("nonsense") == resolution("float32")   # unknown: strict
    assert effective_margin(0.05, "float32") == 0.05
    assert effective_margin(0.05, "bfloat16") == 0.25
    assert effective_margin(0.05, "float16") == 0.05 and effective_margin(0.01, "float16") == 0.03125
    assert effective_margin(0.3, "bfloat16") == 0.3
    assert effective_margin(0.0, "float32") == 2.0 ** -18


def _at(prompt: str, index: int, plain_tok: int, spec_tok: int, plain_top: tuple[tuple[int, float], ...],
        spec_top: tuple[tuple[int, float], ...]) -> tuple[Greedy, Greedy]:
    """Two runs that agree on ``index`` tokens, then the plain run emits ``plain_tok`` and the
    speculative one ``spec_tok``, with those top-k logprobs at ``index`` (sorted best first)."""
    prefix = list(range(5000, 5000 + index))
    same = [top((t, -0.01), (t + 1000, -5.0)) for t in prefix]
    tail = top((9, -0.3), (10, -1.4))

    def best_first(pairs: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
        return tuple(sorted(pairs, key=lambda p: -p[1]))

    base = greedy(prefix + [plain_tok, 9], same + [best_first(plain_top), tail], pid=prompt)
    spec = greedy(prefix + [spec_tok, 9], same + [best_first(spec_top), tail], pid=prompt)
    return base, spec


# The bfloat16 rows reported as real on another CPU model with margin 0.05, as printed:
# prompt, index, plain token, spec token, plain top-2 / spec top-2 (the spec run: an exact tie).
BF16_ROWS = [
    ("math-01", 14, 623, 253, ((623, -1.234), (253, -1.359)), ((253, -1.312), (623, -1.312))),
    ("coding-06", 32, 7663, 2619, ((7663, -1.057), (2619, -1.307)), ((2619, -1.170), (7663, -1.170))),
    ("math-06", 43, 8358, 30, ((8358, -0.661), (30, -0.786)), ((30, -0.720), (8358, -0.720))),
]
BF16_GAPS = [0.125, 0.25, 0.125]


def _row(i: int) -> tuple[Greedy, Greedy]:
    prompt, index, plain_tok, spec_tok, plain_top, spec_top = BF16_ROWS[i]
    # the rest of a top-5, well behind the pair
    return _at(prompt, index, plain_tok, spec_tok, plain_top + ((11, -3.5), (12, -4.0), (13, -4.5)),
               spec_top + ((11, -3.4), (12, -4.1), (13, -4.4)))


def _kind(base: Greedy, spec: Greedy, margin: float, dtype: str = "float32") -> str:
    d = compare(base, spec, margin, dtype)
    assert d is not None
    return d.kind


@pytest.mark.parametrize("i", range(len(BF16_ROWS)))
def test_bf16_rows_are_near_ties_in_bfloat16(i: int) -> None:
    prompt, index, plain_tok, spec_tok = BF16_ROWS[i][:4]
    base, spec = _row(i)
    for dtype in ("bfloat16", "auto", "torch.bfloat16"):
        d = compare(base, spec, 0.05, dtype)
        assert d is not None
        assert (d.prompt_id, d.index, d.base_token, d.spec_token, d.kind) == \
            (prompt, index, plain_tok, spec_tok, "near-tie"), dtype
        assert d.margin == pytest.approx(BF16_GAPS[i])
    for dtype in ("float32", "float16", "half"):   # 0.125 / 0.25 are more than 0.05 (and 0.03125)
        assert _kind(base, spec, 0.05, dtype) == "real", dtype
    d = compare(base, spec, 0.05)
    assert d is not None and d.kind == "real"   # the default stays float32-strict


def test_bf16_rows_in_a_report() -> None:
    rows = [_row(i) for i in range(len(BF16_ROWS))]
    base, spec = [b for b, _ in rows], [s for _, s in rows]
    r = compare_all("tiny-ngram4-bf16-c4-lossless", "ngram4-bf16", "baseline-bf16", 4, "diagnostic", 0.05,
                    base, spec, "bfloat16")
    assert (r.compared, r.near_ties, r.real, r.near_tie_margin, r.dtype) == (3, 3, 0, 0.25, "bfloat16")
    assert r.failure(0.0) is None
    assert r.summary().endswith("(diagnostic, bfloat16, margin 0.25)")
    assert [line.split()[:6] for line in r.table().splitlines()[2:]] == [
        ["math-01", "14", "623", "253", "0.1250", "near-tie"],
        ["coding-06", "32", "7663", "2619", "0.2500", "near-tie"],
        ["math-06", "43", "8358", "30", "0.1250", "near-tie"]]
    raw = json.loads(json.dumps(r.to_json()))
    assert (raw["dtype"], raw["near_tie_margin"], raw["near_tie_margin_configured"]) == ("bfloat16", 0.25, 0.05)
    strict = compare_all("c", "ngram4", "baseline", 4, "strict", 0.05, base, spec)   # float32: as before
    assert (strict.real, strict.near_tie_margin, strict.dtype) == (3, 0.05, "float32")
    assert "3 real divergence(s)" in (strict.failure(0.0) or "")


# the plain run of math-01: 623 ahead of 253 by 0.125 (one bfloat16 step at logits of 16-32)
PLAIN = ((623, -1.234375), (253, -1.359375), (11, -3.5))


@pytest.mark.parametrize(
    ("spec_top", "kind", "why"),
    [
        (((253, -1.3125), (623, -1.3125)), "near-tie", "an exact tie, chosen token listed first"),
        (((623, -1.3125), (253, -1.3125)), "near-tie", "an exact tie listed in the other order"),
        (((253, -1.25), (623, -1.375)), "near-tie", "253 ahead by 0.125: the runs disagree by 0.25"),
        (((623, -1.0), (253, -1.5)), "real", "253 chosen while 0.5 behind in its own logprobs"),
        (((253, -1.0), (623, -1.5)), "real", "253 ahead by 0.5 where plain had it 0.125 behind"),
        (((253, -1.2), (623, -1.4)), "real", "ahead by 0.2 (within 0.25) but the runs disagree by 0.325"),
        (((253, -1.3125), (999, -1.4)), "real", "the plain top-1 is missing from the spec's top-k"),
        (((623, -1.3), (999, -1.4)), "real", "the spec's own token is missing from its top-k"),
        ((), "real", "no logprobs from the spec run"),
    ],
)
def test_spec_logprobs_decide_in_bfloat16(spec_top: tuple[tuple[int, float], ...], kind: str, why: str) -> None:
    base, spec = _at("math-01", 14, 623, 253, PLAIN, spec_top)
    assert _kind(base, spec, 0.05, "bfloat16") == kind, why


def test_runs_disagreeing_by_two_steps_is_real() -> None:
    """Each run sees the pair within 0.25, in opposite orders: 0.5 apart, two bfloat16 steps."""
    base, spec = _at("p", 3, 623, 253, ((623, -1.0), (253, -1.25)), ((253, -1.0), (623, -1.25)))
    assert _kind(base, spec, 0.05, "bfloat16") == "real"
    base, spec = _at("p", 3, 623, 253, ((623, -1.0), (253, -1.25)), ((253, -1.125), (623, -1.125)))
    assert _kind(base, spec, 0.05, "bfloat16") == "near-tie"


def test_plain_tie_listed_in_either_order() -> None:
    """An exact tie in the plain run may list the spec's token first; it is still the runner-up."""
    base, spec = _at("p", 2, 623, 253, ((253, -1.0), (623, -1.0), (11, -2.0)), ((253, -1.0), (623, -1.0)))
    assert base.top[2][0][0] == 253   # listed first, though the plain run emitted 623
    assert _kind(base, spec, 0.05) == "near-tie"
    # but a third token strictly ahead of the spec's choice makes it real
    base, spec = _at("p", 2, 623, 253, ((623, -1.0), (11, -1.01), (253, -1.02)), ((253, -1.0), (623, -1.0)))
    assert _kind(base, spec, 0.05) == "real"


@pytest.mark.parametrize(("b2", "kind"), [(-0.53, "near-tie"), (-0.57, "real")])
def test_float32_margin_stays_configured(b2: float, kind: str) -> None:
    """float32: a gap of 0.03 with an exact tie in the spec run is a near-tie at 0.05; 0.07 is real."""
    base, spec = _at("p", 5, 20, 21, ((20, -0.5), (21, b2), (22, -4.0)), ((21, -0.51), (20, -0.51)))
    d = compare(base, spec, 0.05, "float32")
    assert d is not None and d.kind == kind
    assert d.margin == pytest.approx(-0.5 - b2)


def test_float32_rounding_of_logprobs_at_the_bound() -> None:
    """A gap of one bfloat16 step that arrives a float32 rounding above it is still a near-tie."""
    for extra, kind in [(0.0, "near-tie"), (2.0 ** -22, "near-tie"), (2.0 ** -10, "real")]:
        base, spec = _at("p", 1, 7, 8, ((7, -1.0), (8, -1.25 - extra)), ((8, -1.1), (7, -1.1)))
        assert _kind(base, spec, 0.05, "bfloat16") == kind, extra


# --- Hypothesis: the effective margin ----------------------------------------------------------

dtype_names = st.one_of(st.sampled_from(sorted(MANTISSA_BITS) + ["auto", "AUTO", "torch.float16"]),
                        st.text(max_size=12))
margins = st.floats(0, 4, allow_nan=False)


@PROPS
@given(margin=margins, dtype=dtype_names)
def test_effective_margin_never_below_configured(margin: float, dtype: str) -> None:
    m = effective_margin(margin, dtype)
    assert m >= margin and m >= resolution(dtype) > 0
    assert m in (margin, resolution(dtype))
    r = compare_all("c", "s", "b", 1, "strict", margin, [], [], dtype)
    assert r.near_tie_margin == m and r.to_json()["near_tie_margin_configured"] == margin


@PROPS
@given(margin=margins, a=dtype_names, b=dtype_names)
def test_effective_margin_monotone_in_coarseness(margin: float, a: str, b: str) -> None:
    """Fewer mantissa bits (coarser) never gives a smaller margin."""
    fine, coarse = (a, b) if mantissa_bits(a) >= mantissa_bits(b) else (b, a)
    assert resolution(fine) <= resolution(coarse)
    assert effective_margin(margin, fine) <= effective_margin(margin, coarse)


@PROPS
@given(b1=st.integers(-12 * 1024, 0), gap=st.integers(0, 512), spec_gap=st.integers(-512, 512),
       threshold=st.integers(0, 256), a=dtype_names, b=dtype_names)
def test_near_tie_monotone_in_coarseness(b1: int, gap: int, spec_gap: int, threshold: int, a: str,
                                         b: str) -> None:
    """A near-tie in a finer dtype is a near-tie in a coarser one; a near-tie always has both runs'
    gaps, and their difference, within the effective margin."""
    lp1, lp2, sgap, t = b1 * GRID, (b1 - gap) * GRID, spec_gap * GRID, threshold * GRID
    base, spec = _at("p", 2, 100, 101, ((100, lp1), (101, lp2)), ((101, -1.0), (100, -1.0 + sgap)))
    fine, coarse = (a, b) if mantissa_bits(a) >= mantissa_bits(b) else (b, a)
    kinds = [_kind(base, spec, t, dt) for dt in (fine, coarse)]
    assert kinds != ["near-tie", "real"]
    for dt, kind in zip((fine, coarse), kinds):
        m = effective_margin(t, dt)
        if kind == "near-tie":
            assert lp1 - lp2 <= m and abs(sgap) <= m and abs((lp1 - lp2) - sgap) <= m
        if sgap == 0:
            assert kind == ("near-tie" if lp1 - lp2 <= m else "real")


# --- LosslessReport --------------------------------------------------------------------------

def div(kind: str, pid: str = "coding-03", index: int = 17) -> Divergence:
    return Divergence(pid, index, 1234, 5678, top((1234, -0.5), (5678, -0.53)),
                      top((5678, -0.4), (1234, -0.6)), 0.03 if kind == "near-tie" else 1.25, kind)


def report(mode: str, compared: int, *kinds: str) -> LosslessReport:
    return LosslessReport("tiny-ngram4-c4-lossless", "ngram4", "baseline", 4, mode, 0.05, compared,
                          [div(k, pid=f"p{i}") for i, k in enumerate(kinds)])


def test_report_counts() -> None:
    r = report("strict", 10, "near-tie", "real", "near-tie")
    assert (r.identical, r.near_ties, r.real, r.exact_rate) == (7, 2, 1, 0.7)
    assert report("strict", 0).exact_rate == 0.0


def test_strict_all_identical_passes() -> None:
    assert report("strict", 12).failure(0.9) is None


def test_strict_exact_rate_floor() -> None:
    assert report("strict", 10, "near-tie").failure(0.9) is None    # 90 % >= 90 %
    msg = report("strict", 10, "near-tie", "near-tie").failure(0.9)
    assert msg is not None
    assert msg.startswith("tiny-ngram4-c4-lossless: exact-match rate 80% is below the floor 90% "
                          "vs baseline\n")
    assert "real divergence" not in msg.splitlines()[0]


def test_strict_nothing_compared_fails() -> None:
    msg = report("strict", 0).failure(0.9)
    assert msg is not None and "exact-match rate 0%" in msg


def test_strict_real_divergence_fails_even_above_the_floor() -> None:
    msg = report("strict", 100, "real").failure(0.9)
    assert msg is not None and msg.startswith("tiny-ngram4-c4-lossless: 1 real divergence(s) vs baseline\n")


def test_strict_both_problems() -> None:
    msg = report("strict", 4, "real", "real").failure(0.9)
    assert msg is not None
    assert msg.splitlines()[0] == ("tiny-ngram4-c4-lossless: 2 real divergence(s) and exact-match rate 50% "
                                   "is below the floor 90% vs baseline")


def test_diagnostic_only_real_divergences_fail() -> None:
    assert report("diagnostic", 4, "near-tie", "near-tie", "near-tie").failure(0.9) is None
    msg = report("diagnostic", 4, "near-tie", "real").failure(0.9)
    assert msg is not None
    assert msg.splitlines()[0] == "tiny-ngram4-c4-lossless: 1 real divergence(s) vs baseline"


def test_table_text() -> None:
    r = LosslessReport("tiny-ngram4-bf16-c1-lossless", "ngram4-bf16", "baseline-bf16", 1, "diagnostic",
                       0.25, 3,
                       [div("near-tie", "coding-03", 17),
                        Divergence("math-01", 5, 42, END, top((42, -0.1), (43, -2.0)), (), 1.9, "real")],
                       dtype="bfloat16", configured_margin=0.05)
    text = r.table()
    lines = text.splitlines()
    assert lines[0] == r.summary() == ("tiny-ngram4-bf16-c1-lossless: 3 prompts, 1 identical, 1 near-ties, "
                                       "1 real divergences (diagnostic, bfloat16, margin 0.25)")
    assert "prompt" in lines[1] and "margin" in lines[1]
    near = lines[2].split()
    assert near[:6] == ["coding-03", "17", "1234", "5678", "0.0300", "near-tie"]
    assert "1234:-0.500 5678:-0.530 / 5678:-0.400 1234:-0.600" in lines[2]
    assert lines[3].split()[:6] == ["math-01", "5", "42", "<end>", "1.9000", "real"]
    assert lines[3].endswith("/ -")
    assert r.failure(0.9) == f"tiny-ngram4-bf16-c1-lossless: 1 real divergence(s) vs baseline-bf16\n{text}"


def test_table_without_margin() -> None:
    r = LosslessReport("c", "s", "b", 1, "strict", 0.05, 1, [Divergence("p", 0, 1, 2, (), (), None, "real")])
    assert r.table().splitlines()[2].split()[:6] == ["p", "0", "1", "2", "-", "real"]


def test_to_json_is_serialisable() -> None:
    r = report("strict", 5, "near-tie", "real")
    raw = json.loads(json.dumps(r.to_json()))
    assert (raw["compared"], raw["identical"], raw["near_ties"], raw["real_divergences"]) == (5, 3, 1, 1)
    assert raw["exact_match_rate"] == 0.6 and raw["divergences"][0]["kind"] == "near-tie"
    assert (raw["dtype"], raw["near_tie_margin"], raw["near_tie_margin_configured"]) == ("float32", 0.05, 0.05)


def test_compare_all_matches_by_prompt_id() -> None:
    base = [greedy([1, 2], pid="a"), greedy([3, 4], pid="b"), greedy([5], pid="c")]
    spec = [greedy([3, 9], pid="b"), greedy([1, 2], pid="a")]   # other order, a subset
    r = compare_all("case", "ngram4", "baseline", 4, "strict", 0.05, base, spec)
    assert (r.compared, r.identical, r.real) == (2, 1, 1)
    assert [(d.prompt_id, d.index) for d in r.divergences] == [("b", 1)]
    assert (r.dtype, r.near_tie_margin) == ("float32", 0.05)   # the default: float32, the configured margin


# --- parse_choice ----------------------------------------------------------------------------

def _lp(tok: int, lp: float) -> dict[str, Any]:
    return {"token": f"token_id:{tok}", "logprob": lp, "bytes": [72, 105]}


# A chat completion from vLLM with logprobs, top_logprobs=3 and return_tokens_as_token_ids.
RESPONSE = {
    "id": "chatcmpl-4f0c2b9a", "object": "chat.completion", "created": 1757921335, "model": "ngram4",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hi there", "refusal": None, "annotations": None,
                    "audio": None, "function_call": None, "tool_calls": [], "reasoning_content": None},
        "logprobs": {"content": [
            {**_lp(33, -0.0123), "top_logprobs": [_lp(33, -0.0123), _lp(13347, -4.75), _lp(9906, -6.5)]},
            # listed out of order on purpose: the parser sorts best first
            {**_lp(1535, -0.6931), "top_logprobs": [_lp(2, -1.5), _lp(1535, -0.6931), _lp(940, -0.7)]},
            {**_lp(2, -0.0), "top_logprobs": [_lp(2, -0.0), _lp(28, -9999.0)]},
        ]},
        "finish_reason": "length", "stop_reason": None,
    }],
    "usage": {"prompt_tokens": 21, "total_tokens": 24, "completion_tokens": 3, "prompt_tokens_details": None},
    "prompt_logprobs": None, "kv_transfer_params": None,
}  # fmt: skip


def test_parse_choice_realistic_response() -> None:
    g = parse_choice("coding-01", RESPONSE["choices"][0])
    assert g == Greedy("coding-01", (33, 1535, 2),
                       (top((33, -0.0123), (13347, -4.75), (9906, -6.5)),
                        top((1535, -0.6931), (940, -0.7), (2, -1.5)),
                        top((2, -0.0), (28, -9999.0))),
                       "Hi there")


def test_parse_choice_feeds_compare() -> None:
    base = parse_choice("p", RESPONSE["choices"][0])
    spec_choice = json.loads(json.dumps(RESPONSE["choices"][0]))
    spec_choice["logprobs"]["content"][1]["token"] = "token_id:940"
    d = compare(base, parse_choice("p", spec_choice), 0.05)
    assert d is not None and (d.index, d.base_token, d.spec_token, d.kind) == (1, 1535, 940, "near-tie")
    assert d.margin == pytest.approx(0.0069)


def test_parse_choice_without_logprobs() -> None:
    assert parse_choice("p", {"message": {"content": "x"}, "logprobs": None}) == Greedy("p", (), (), "x")
    assert parse_choice("p", {}) == Greedy("p", (), (), "")


@pytest.mark.parametrize("token", ["Hello", "token_id:", "token_id:abc", "33"])
def test_parse_choice_needs_token_ids(token: str) -> None:
    choice = {"message": {"content": "x"}, "logprobs": {"content": [{"token": token, "logprob": -0.1}]}}
    with pytest.raises(ValueError):
        parse_choice("p", choice)


# --- the case list on the tiny-cpu matrix ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny() -> Matrix:
    return load_matrix(TINY)


def test_lossless_cases_tiny(tiny: Matrix) -> None:
    cases = lossless_cases(tiny)
    assert [c.id for c in cases] == [
        "tiny-ngram4-c1-lossless", "tiny-ngram4-c4-lossless",
        "tiny-self4-c1-lossless", "tiny-self4-c4-lossless",
        "tiny-ngram4-bf16-c1-lossless", "tiny-ngram4-bf16-c4-lossless",
    ]
    by_id = {c.id: c for c in cases}
    assert [c.concurrency for c in cases] == [1, 4] * 3
    ngram = by_id["tiny-ngram4-c4-lossless"]
    assert (ngram.server.name, ngram.reference.name, ngram.mode) == ("ngram4", "baseline", "strict")
    assert by_id["tiny-self4-c1-lossless"].mode == "strict"
    bf16 = by_id["tiny-ngram4-bf16-c1-lossless"]
    assert bf16.mode == "diagnostic" and bf16.reference == tiny.server("baseline-bf16")


def test_lossless_off_and_single_concurrency() -> None:
    raw = {
        "version": 1, "name": "m", "marker": "gpu",
        "servers": [{"name": "plain", "model": "x"},
                    {"name": "spec", "model": "x", "speculative_config": {"method": "ngram"},
                     "lossless": "off"},
                    {"name": "orphan", "model": "y", "speculative_config": {"method": "ngram"}}],
        "workload": {"prompts": "p.jsonl", "concurrency": [1]},
    }  # fmt: skip
    m = parse_matrix(raw, Path("m.toml"))
    assert lossless_cases(m) == []   # "off", and a server without a plain server of its model
    raw["servers"][1]["lossless"] = "strict"
    raw["workload"]["concurrency"] = [8, 2]
    assert [c.id for c in lossless_cases(parse_matrix(raw, Path("m.toml")))] == [
        "m-spec-c1-lossless", "m-spec-c8-lossless"]


def test_lossless_pairs_tiny(tiny: Matrix) -> None:
    """Only ngram4 starts right after its plain server; self4 follows ngram4, bf16 is diagnostic."""
    assert tiny.lossless.hypothesis_examples > 0
    assert [(a.name, b.name) for a, b in lossless_pairs(tiny)] == [("baseline", "ngram4")]


def test_lossless_pairs_off_without_examples(tiny: Matrix) -> None:
    raw = json.loads(json.dumps(_tiny_raw()))
    raw["lossless"]["hypothesis_examples"] = 0
    assert lossless_pairs(parse_matrix(raw, TINY)) == []


def _tiny_raw() -> dict[str, Any]:
    import tomllib
    return tomllib.loads(TINY.read_text(encoding="utf-8"))
