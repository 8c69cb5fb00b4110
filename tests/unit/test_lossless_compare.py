"""specguard.lossless: comparing greedy outputs, near-tie vs real, reports, parsing, the case list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.lossless import (
    END,
    Divergence,
    Greedy,
    LosslessReport,
    compare,
    compare_all,
    lossless_cases,
    lossless_pairs,
    parse_choice,
)
from specguard.matrix import Matrix, load_matrix, parse_matrix

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
    base = _tied(b1, b2)
    spec = greedy([7, spec_tok, 30], [base.top[0], top((spec_tok, -0.4), (20, -0.6)), base.top[2]])
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


@PROPS
@given(prefix=tokens, b1=st.floats(-20, 0), gap=st.floats(0, 2), threshold=st.floats(0, 1))
def test_near_tie_iff_small_margin_and_top2(prefix: list[int], b1: float, gap: float,
                                            threshold: float) -> None:
    base_tops = [top((t, -0.01), (t + 1000, -5.0)) for t in prefix] + [top((100, b1), (101, b1 - gap))]
    base = greedy(prefix + [100], base_tops)
    d = compare(base, greedy(prefix + [101]), threshold)
    assert d is not None and d.index == len(prefix)
    assert d.kind == ("near-tie" if b1 - (b1 - gap) <= threshold else "real")


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
                       0.05, 3,
                       [div("near-tie", "coding-03", 17),
                        Divergence("math-01", 5, 42, END, top((42, -0.1), (43, -2.0)), (), 1.9, "real")])
    text = r.table()
    lines = text.splitlines()
    assert lines[0] == r.summary() == ("tiny-ngram4-bf16-c1-lossless: 3 prompts, 1 identical, 1 near-ties, "
                                       "1 real divergences (diagnostic, margin 0.05)")
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


def test_compare_all_matches_by_prompt_id() -> None:
    base = [greedy([1, 2], pid="a"), greedy([3, 4], pid="b"), greedy([5], pid="c")]
    spec = [greedy([3, 9], pid="b"), greedy([1, 2], pid="a")]   # other order, a subset
    r = compare_all("case", "ngram4", "baseline", 4, "strict", 0.05, base, spec)
    assert (r.compared, r.identical, r.real) == (2, 1, 1)
    assert [(d.prompt_id, d.index) for d in r.divergences] == [("b", 1)]


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
        "tiny-baseline-c1-reference", "tiny-baseline-c4-reference",
        "tiny-ngram4-c1-lossless", "tiny-ngram4-c4-lossless",
        "tiny-self4-c1-lossless", "tiny-self4-c4-lossless",
        "tiny-baseline-bf16-c1-reference", "tiny-baseline-bf16-c4-reference",
        "tiny-ngram4-bf16-c1-lossless", "tiny-ngram4-bf16-c4-lossless",
    ]
    by_id = {c.id: c for c in cases}
    assert [c.concurrency for c in cases] == [1, 4] * 5
    assert by_id["tiny-baseline-c4-reference"].reference is None
    ngram = by_id["tiny-ngram4-c4-lossless"]
    assert (ngram.server.name, ngram.reference.name if ngram.reference else None, ngram.mode) == \
        ("ngram4", "baseline", "strict")
    assert by_id["tiny-self4-c1-lossless"].mode == "strict"
    bf16 = by_id["tiny-ngram4-bf16-c1-lossless"]
    assert bf16.mode == "diagnostic" and bf16.reference == tiny.server("baseline-bf16")
    assert by_id["tiny-baseline-bf16-c1-reference"].mode == "diagnostic"
    # each reference is recorded before the cases compared with it
    ids = [c.id for c in cases]
    for c in cases:
        if c.reference is not None:
            ref_id = f"tiny-{c.reference.name}-c{c.concurrency}-reference"
            assert ids.index(ref_id) < ids.index(c.id)


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
    assert lossless_cases(m) == []   # nothing compared: no reference recorded either
    raw["servers"][1]["lossless"] = "strict"
    raw["workload"]["concurrency"] = [8, 2]
    assert [c.id for c in lossless_cases(parse_matrix(raw, Path("m.toml")))] == [
        "m-plain-c1-reference", "m-plain-c8-reference", "m-spec-c1-lossless", "m-spec-c8-lossless"]


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
