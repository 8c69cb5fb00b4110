"""specguard.judge.aggregate: the two category aggregates, the aggregate speedup, parsing stored aggregates,
judging; exact known values and Hypothesis properties."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.judge.aggregate import (
    MEAN_OF_CATEGORIES,
    PAIRED_GEOMEAN,
    POOLED,
    RATIO_OF_MEANS,
    aggregate,
    aggregate_id,
    aggregate_speedup,
    aggregates_from_cells,
    category_pair_speedups,
    judge_aggregate,
    paired_aggregate_speedup,
    parse_aggregates,
)
from specguard.store.baselines import CellBaseline, MetricBaseline
from specguard.config.errors import InputError
from specguard.measure.load import RequestResult, RoundResult
from specguard.config.matrix import Cell, ServerConfig, load_matrix
from specguard.judge.cell import CellMeasurement
from specguard.measure.runner import Pair, RoundSample
from specguard.config.tolerance import Tolerance
from specguard.judge.verdict import Verdict

PROPS = settings(max_examples=40, deadline=None)
PLAIN = ServerConfig(name="plain", model="m")
SPEC = ServerConfig(name="spec", model="m", speculative_config='{"method": "ngram"}', baseline="plain")


def cell_m(category: str, rounds: Sequence[tuple[int, float]], server: ServerConfig = PLAIN,
           concurrency: int = 1) -> CellMeasurement:
    """A measured cell whose round i produced rounds[i] = (output tokens, seconds)."""
    cell = Cell(f"t-{server.name}-c{concurrency}-{category}", server, concurrency, category)
    samples = [RoundSample(RoundResult((RequestResult("p", 0, True, None, 0.1, secs, (), tokens),), secs, concurrency),
                           None) for tokens, secs in rounds]
    return CellMeasurement(cell, samples)


def by_rate(category: str, rates: Sequence[float], server: ServerConfig = PLAIN) -> CellMeasurement:
    """Rounds of 1000 tokens at the given tok/s."""
    return cell_m(category, [(1000, 1000 / r) for r in rates], server)


# --- exact values ------------------------------------------------------------------------------

def test_mean_of_categories_and_pooled_differ_as_expected() -> None:
    # a: 100 tok in 1 s (100 tok/s); b: 300 tok in 10 s (30 tok/s).
    agg = aggregate([cell_m("a", [(100, 1.0)]), cell_m("b", [(300, 10.0)])])
    assert agg.mean_of_categories.estimate == 65.0          # (100 + 30) / 2
    assert agg.pooled.estimate == pytest.approx(400 / 11)   # 400 tok / 11 s, b weighs 10/11
    assert agg.mean_of_categories.method == agg.pooled.method == "single"
    assert (agg.server, agg.concurrency, agg.categories, agg.rounds) == ("plain", 1, ("a", "b"), 1)
    assert agg.throughput(MEAN_OF_CATEGORIES) is agg.mean_of_categories
    assert agg.throughput(POOLED) is agg.pooled


def test_round_figures_and_their_interval() -> None:
    agg = aggregate([by_rate("a", [100, 120]), by_rate("b", [30, 50])])
    assert agg.round_means == pytest.approx((65.0, 85.0))
    iv = agg.mean_of_categories
    # Two round figures, mean 75, sd 14.142: 75 ± t(0.975, 1) * 14.142 / sqrt(2) = 75 ± 12.706 * 10.
    assert iv.method == "student-t"
    assert (iv.low, iv.estimate, iv.high) == pytest.approx((75.0 - 127.062, 75.0, 75.0 + 127.062), rel=1e-4)


def test_extra_rounds_of_one_cell_are_not_used() -> None:
    # b ran a third round (its own verdict was UNKNOWN); the figures use the first two of each.
    agg = aggregate([by_rate("a", [100, 120]), by_rate("b", [30, 50, 1000])])
    assert agg.rounds == 2
    assert agg.mean_of_categories.estimate == pytest.approx(75.0)


def test_the_studys_headline_is_a_mean_of_categories() -> None:
    # 31B MTP c=1 published 125.3 as the mean of 11 categories; coding 173 and roleplay 76 are two of them.
    rates = [173.0, 76.0] + [(125.3 * 11 - 173 - 76) / 9] * 9
    agg = aggregate([by_rate(f"k{i}", [r]) for i, r in enumerate(rates)])
    assert agg.mean_of_categories.estimate == pytest.approx(125.3)


def test_speedup_is_the_ratio_of_means_of_categories() -> None:
    base = aggregate([by_rate("a", [40.0]), by_rate("b", [90.0])])
    spec = aggregate([by_rate("a", [200.0], SPEC), by_rate("b", [60.0], SPEC)])
    iv = aggregate_speedup(spec, base)
    # 130 / 65 = 2.0, while the mean of per-category speedups would be (5.0 + 0.667) / 2 = 2.83.
    assert (iv.low, iv.estimate, iv.high, iv.method) == (2.0, 2.0, 2.0, "single")


def test_speedup_interval_from_rounds_contains_the_estimate() -> None:
    base = aggregate([by_rate("a", [40.0, 41.0, 39.0]), by_rate("b", [90.0, 89.0, 91.0])])
    spec = aggregate([by_rate("a", [200.0, 204.0, 196.0], SPEC), by_rate("b", [60.0, 61.0, 59.0], SPEC)])
    iv = aggregate_speedup(spec, base)
    # Across rounds the estimate is the ratio of geometric means, the quantity of its interval:
    # (200·204·196)^(1/3)... over the plain rounds' — 1.99975, within 0.02% of 130 / 65.
    assert iv.estimate == pytest.approx(130 / 65, rel=2e-4) and iv.estimate != 130 / 65
    assert iv.low < iv.estimate < iv.high and iv.method == "welch-t-log"


def test_speedup_refuses_different_cells() -> None:
    base = aggregate([by_rate("a", [40.0]), by_rate("b", [90.0])])
    spec = aggregate([by_rate("a", [200.0], SPEC)])
    with pytest.raises(ValueError, match="cover different cells"):
        aggregate_speedup(spec, base)


@pytest.mark.parametrize(
    ("cells", "match"),
    [
        ([], "no cells"),
        ([by_rate("a", [1.0]), by_rate("b", [1.0], SPEC)], "aggregate one pair at a time"),
        ([by_rate("a", [1.0]), cell_m("b", [(1, 1.0)], concurrency=16)], "aggregate one pair at a time"),
        ([by_rate("a", [1.0]), by_rate("a", [2.0])], "category 'a' given twice"),
        ([by_rate("a", [1.0]), cell_m("b", [])], "needs measured rounds"),
        ([cell_m("a", [(10, 0.0)])], "positive duration"),
    ],
    ids=["empty", "two-servers", "two-concurrencies", "duplicate", "no-rounds", "zero-duration"],
)
def test_aggregate_refuses_bad_input(cells: list[CellMeasurement], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        aggregate(cells)


# --- properties --------------------------------------------------------------------------------

# Per category: 1-3 rounds of (tokens, seconds).
rounds_st = st.lists(st.tuples(st.integers(1, 100_000), st.floats(0.01, 1e4)), min_size=1, max_size=3)
categories_st = st.lists(rounds_st, min_size=1, max_size=11)


@PROPS
@given(categories_st, st.randoms(use_true_random=False))
def test_aggregate_is_invariant_under_category_order(cats: list[list[tuple[int, float]]], rnd: Any) -> None:
    cells = [cell_m(f"k{i}", r) for i, r in enumerate(cats)]
    shuffled = list(cells)
    rnd.shuffle(shuffled)
    assert aggregate(shuffled) == aggregate(cells)   # exact: same floats, same intervals


@PROPS
@given(st.lists(st.tuples(st.integers(1, 100_000), st.floats(0.01, 1e4)), min_size=1, max_size=11))
def test_pooled_is_the_time_weighted_mean(cats: list[tuple[int, float]]) -> None:
    agg = aggregate([cell_m(f"k{i}", [r]) for i, r in enumerate(cats)])
    total = math.fsum(s for _, s in cats)
    weighted = math.fsum((s / total) * (t / s) for t, s in cats)
    assert agg.pooled.estimate == pytest.approx(weighted, rel=1e-9)
    rates = [t / s for t, s in cats]
    for iv in (agg.pooled, agg.mean_of_categories):
        assert min(rates) * (1 - 1e-12) <= iv.estimate <= max(rates) * (1 + 1e-12)


@PROPS
@given(st.floats(1.0, 1e4), st.integers(1, 11))
def test_identical_categories_give_that_rate_both_ways(rate: float, k: int) -> None:
    agg = aggregate([by_rate(f"k{i}", [rate, rate]) for i in range(k)])
    assert agg.mean_of_categories.estimate == pytest.approx(rate)
    assert agg.pooled.estimate == pytest.approx(rate)


# --- stored aggregates -------------------------------------------------------------------------

CATS = ["a", "b"]


def entry(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "server": "spec", "concurrency": 1, "aggregation": MEAN_OF_CATEGORIES, "categories": CATS,
        "metrics": {"output_throughput": {"value": 130.0, "aggregation": MEAN_OF_CATEGORIES},
                    "speedup": {"value": 2.0, "aggregation": RATIO_OF_MEANS, "note": "published"}},
    }
    raw.update(over)
    return raw


def test_parse_aggregates() -> None:
    stored = parse_aggregates({"t-spec-c1": entry()}, Path("b.json"), id_prefix="t")["t-spec-c1"]
    assert (stored.server, stored.concurrency, stored.aggregation, stored.categories) == \
        ("spec", 1, MEAN_OF_CATEGORIES, ("a", "b"))
    assert stored.metrics["speedup"].value == 2.0 and stored.metrics["speedup"].note == "published"
    assert aggregate_id("t", "spec", 1) == "t-spec-c1"
    assert aggregate_id("t", "spec", 16, POOLED) == "t-spec-c16-pooled"


def _set_metric(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        raw["metrics"][name] = value
    return change


@pytest.mark.parametrize(
    ("key", "change", "field", "problem"),
    [
        ("t-spec-c1", lambda r: r.update(extra=1), "aggregates.t-spec-c1.extra", "unknown key"),
        ("t-spec-c1", lambda r: r.update(server=""), "aggregates.t-spec-c1.server", "expected a server name"),
        ("t-spec-c1", lambda r: r.update(concurrency=True), "aggregates.t-spec-c1.concurrency", "positive integer"),
        ("t-spec-c1", lambda r: r.update(aggregation="median"), "aggregates.t-spec-c1.aggregation", "'median'"),
        ("t-spec-c1", lambda r: r.update(categories=["a", "a"]), "aggregates.t-spec-c1.categories", "distinct"),
        ("t-spec-c1", lambda r: r.update(categories=[]), "aggregates.t-spec-c1.categories", "non-empty"),
        ("t-spec-c1", lambda r: r.update(note=3), "aggregates.t-spec-c1.note", "expected a string"),
        ("t-spec-c1", lambda r: r.update(metrics={}), "aggregates.t-spec-c1.metrics", "non-empty object"),
        ("t-spec-c16", lambda r: None, "aggregates.t-spec-c16", "key should be 't-spec-c1'"),
        ("t-spec-c1", _set_metric("acceptance_length", {"value": 3.0}),
         "aggregates.t-spec-c1.metrics.acceptance_length", "not an aggregate of"),
        ("t-spec-c1", _set_metric("speedup", {"value": -2.0}), "aggregates.t-spec-c1.metrics.speedup.value", "> 0"),
        ("t-spec-c1", _set_metric("speedup", {"value": 2.0, "aggregation": MEAN_OF_CATEGORIES}),
         "aggregates.t-spec-c1.metrics.speedup.aggregation", RATIO_OF_MEANS),
        ("t-spec-c1-pooled", lambda r: r.update(aggregation=POOLED, metrics={"speedup": {"value": 2.0}}),
         "aggregates.t-spec-c1-pooled.metrics.speedup", "not an aggregate of 'pooled tokens / pooled time'"),
    ],
)
def test_parse_aggregates_names_file_and_field(key: str, change: Callable[[dict[str, Any]], None], field: str,
                                               problem: str) -> None:
    raw = copy.deepcopy(entry())
    change(raw)
    with pytest.raises(InputError) as info:
        parse_aggregates({key: raw}, Path("b.json"), id_prefix="t")
    assert (info.value.path, info.value.field) == ("b.json", field)
    assert problem in info.value.problem
    assert str(info.value).startswith(f"b.json: {field}: ")


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda r: r.update(colour="red"), "aggregates.k.colour",
         "unknown key (allowed: aggregation, categories, concurrency, metrics, note, server), got 'red'"),
        (lambda r: r["metrics"]["speedup"].update(colour="red"), "aggregates.k.metrics.speedup.colour",
         "unknown key (allowed: aggregation, ci_high, ci_low, note, rounds, value), got 'red'"),
        (lambda r: r.pop("server"), "aggregates.k.server", "Field required"),
        (lambda r: r.update(aggregation="median"), "aggregates.k.aggregation",
         f"expected {MEAN_OF_CATEGORIES!r} or {POOLED!r}, got 'median'"),
        (lambda r: r["metrics"].update(acceptance_length={"value": 3.0}), "aggregates.k.metrics.acceptance_length",
         f"not an aggregate of {MEAN_OF_CATEGORIES!r} (known: output_throughput, speedup), got 'acceptance_length'"),
    ],
)
def test_parse_aggregates_messages(change: Callable[[dict[str, Any]], None], field: str, problem: str) -> None:
    """Unknown keys are refused, as every key of a baseline file; the message names the allowed ones."""
    raw = copy.deepcopy(entry())
    change(raw)
    with pytest.raises(InputError) as info:
        parse_aggregates({"k": raw}, "b.json")
    assert (info.value.path, info.value.field, info.value.problem) == ("b.json", field, problem)


def test_parse_refuses_an_entry_that_is_not_an_object() -> None:
    with pytest.raises(InputError, match=r"b.json: aggregates.x: expected an object"):
        parse_aggregates({"x": [1]}, "b.json")


# --- judging -----------------------------------------------------------------------------------

TOL = {"output_throughput": Tolerance(0.10), "speedup": Tolerance(0.05)}


def test_judge_aggregate_uses_the_stored_aggregation() -> None:
    measured = aggregate([cell_m("a", [(100, 1.0)], SPEC), cell_m("b", [(300, 10.0)], SPEC)])  # 65 vs 36.4
    mean = parse_aggregates({"k": entry(metrics={"output_throughput": {"value": 65.0}})}, "b.json")["k"]
    pooled = parse_aggregates({"k": entry(aggregation=POOLED, metrics={"output_throughput": {"value": 65.0}})},
                              "b.json")["k"]
    assert judge_aggregate(mean, measured, TOL)["output_throughput"].verdict is Verdict.OK
    assert judge_aggregate(pooled, measured, TOL)["output_throughput"].verdict is Verdict.REGRESSED


def test_judge_aggregate_skips_what_it_cannot_judge() -> None:
    measured = aggregate([by_rate("a", [130.0], SPEC), by_rate("b", [130.0], SPEC)])
    stored = parse_aggregates({"k": entry()}, "b.json")["k"]
    assert list(judge_aggregate(stored, measured, TOL)) == ["output_throughput"]   # no speedup measured
    assert judge_aggregate(stored, measured, {}) == {}                              # no tolerances


def test_judge_aggregate_refuses_other_categories() -> None:
    measured = aggregate([by_rate("a", [130.0], SPEC)])
    stored = parse_aggregates({"k": entry()}, "b.json")["k"]
    with pytest.raises(ValueError, match=r"stored over spec c=1 \['a', 'b'\], measured over spec c=1 \['a'\]"):
        judge_aggregate(stored, measured, TOL)


# --- aggregates derived from a baseline file's cells ---------------------------------------------

TINY = load_matrix(Path(__file__).resolve().parents[2] / "fixtures" / "matrices" / "tiny-cpu.toml")


def stored_cells(rates: dict[tuple[str, int, str], Sequence[float]]) -> dict[str, CellBaseline]:
    return {f"tiny-{srv}-c{c}-{cat}": CellBaseline(srv, c, cat, {"output_throughput": MetricBaseline(
        sum(r) / len(r), min(r), max(r), tuple(r))}) for (srv, c, cat), r in rates.items()}


def test_aggregates_from_cells_known_values() -> None:
    cells = stored_cells({("baseline", 1, "a"): [10.0, 12.0], ("baseline", 1, "b"): [20.0, 22.0, 99.0],
                          ("ngram4", 1, "a"): [15.0, 18.0], ("ngram4", 1, "b"): [30.0, 33.0]})
    out = aggregates_from_cells(cells, TINY)
    assert set(out) == {"tiny-baseline-c1", "tiny-ngram4-c1"}   # c=4 and self4 have no cells
    base = out["tiny-baseline-c1"]
    assert base["categories"] == ["a", "b"] and base["aggregation"] == MEAN_OF_CATEGORIES
    tp = base["metrics"]["output_throughput"]
    assert tp["rounds"] == [15.0, 17.0]          # b's third round is past a's two: not used
    assert tp["value"] == 16.0 and tp["ci_low"] < 16.0 < tp["ci_high"]
    assert "speedup" not in base["metrics"]
    sp = out["tiny-ngram4-c1"]["metrics"]["speedup"]
    assert sp["value"] == pytest.approx(((22.5 + 25.5) / 2) / 16.0) and sp["aggregation"] == RATIO_OF_MEANS
    parsed = parse_aggregates(out, "tiny-cpu.json", TINY.id_prefix)   # what a later session reads back
    assert parsed["tiny-ngram4-c1"].metrics["speedup"].value == sp["value"]


def test_aggregates_need_every_category_to_have_rounds_and_the_same_plain_categories() -> None:
    cells = stored_cells({("baseline", 1, "a"): [10.0], ("ngram4", 1, "a"): [15.0], ("ngram4", 1, "b"): [9.0]})
    cells["tiny-baseline-c4-a"] = CellBaseline("baseline", 4, "a", {"output_throughput": MetricBaseline(5.0)})
    out = aggregates_from_cells(cells, TINY)
    assert "tiny-baseline-c4" not in out                           # no stored rounds
    assert "speedup" not in out["tiny-ngram4-c1"]["metrics"]        # plain covers a, ngram4 covers a and b


@PROPS
@given(st.lists(st.lists(st.floats(1.0, 1e4), min_size=2, max_size=4), min_size=1, max_size=11),
       st.lists(st.floats(0.2, 3.0), min_size=11, max_size=11))
def test_aggregates_from_cells_match_a_measuring_session(plain: list[list[float]], gains: list[float]) -> None:
    spec_rates = [[r * g for r in rs] for rs, g in zip(plain, gains)]
    cells = stored_cells({**{("baseline", 1, f"k{i}"): rs for i, rs in enumerate(plain)},
                          **{("ngram4", 1, f"k{i}"): rs for i, rs in enumerate(spec_rates)}})
    out = aggregates_from_cells(cells, TINY)
    spec_server = TINY.server("ngram4")
    base_agg = aggregate([by_rate(f"k{i}", rs) for i, rs in enumerate(plain)])
    spec_agg = aggregate([by_rate(f"k{i}", rs, spec_server) for i, rs in enumerate(spec_rates)])
    tp = out["tiny-ngram4-c1"]["metrics"]["output_throughput"]
    assert tp["value"] == pytest.approx(spec_agg.mean_of_categories.estimate, rel=1e-9)
    assert tp["ci_low"] == pytest.approx(spec_agg.mean_of_categories.low, rel=1e-9)
    sp = out["tiny-ngram4-c1"]["metrics"]["speedup"]
    assert sp["value"] == pytest.approx(aggregate_speedup(spec_agg, base_agg).estimate, rel=1e-9)
    assert sp["ci_low"] <= sp["value"] <= sp["ci_high"]


# --- the paired aggregate speedup ---------------------------------------------------------------

def paired_m(category: str, spec_rates: Sequence[float], plain_rates: Sequence[float]) -> CellMeasurement:
    """A speculative cell measured in pairs: pair i ran the plain server at plain_rates[i] tok/s
    and the speculative server at spec_rates[i]."""
    spec, plain = by_rate(category, spec_rates, SPEC), by_rate(category, plain_rates)
    pairs = [Pair(p, s, i % 2 == 0) for i, (s, p) in enumerate(zip(spec.samples, plain.samples))]
    return CellMeasurement(spec.cell, spec.samples, pairs, pairing="interleaved")


def test_category_pair_speedups_known_values() -> None:
    # pair 0: sqrt(2 * 8) = 4; pair 1: sqrt(1 * 4) = 2; b's third pair is past a's two: not used.
    assert category_pair_speedups({"a": [2.0, 1.0], "b": [8.0, 4.0, 100.0]}) == pytest.approx((4.0, 2.0))
    with pytest.raises(ValueError, match="at least one pair"):
        category_pair_speedups({"a": [2.0], "b": []})


def test_paired_aggregate_speedup_agrees_with_the_cells() -> None:
    # a: every pair 2x; b: every pair 1.5x, whatever each pair's absolute speed (drift cancels).
    cells = [paired_m("a", [20.0, 40.0, 30.0], [10.0, 20.0, 15.0]), paired_m("b", [15.0, 9.0, 30.0], [10.0, 6.0, 20.0])]
    iv = paired_aggregate_speedup(cells)
    assert iv is not None and iv.estimate == pytest.approx(math.sqrt(3.0)) and iv.method == "constant"
    # The ratio of the two means of categories reads another figure when the plain rounds come from
    # other times: here the plain cells' own rounds ran 30% slower than the paired ones.
    slow_plain = [by_rate("a", [7.0, 14.0, 10.5]), by_rate("b", [7.0, 4.2, 14.0])]
    spec_agg = aggregate(cells)
    assert aggregate_speedup(spec_agg, aggregate(slow_plain)).estimate > 2.4


def test_paired_aggregate_speedup_interval() -> None:
    cells = [paired_m("a", [22.0, 18.0], [10.0, 10.0]), paired_m("b", [10.0, 10.0], [10.0, 10.0])]
    iv = paired_aggregate_speedup(cells)
    # per pair: sqrt(2.2 * 1) and sqrt(1.8 * 1); t interval on their logs, 1 degree of freedom
    logs = [math.log(math.sqrt(2.2)), math.log(math.sqrt(1.8))]
    centre, half = sum(logs) / 2, 12.7062 * abs(logs[0] - logs[1]) / math.sqrt(2) / math.sqrt(2)
    assert iv is not None and iv.method == "paired-t-log"
    assert (iv.low, iv.estimate, iv.high) == pytest.approx((math.exp(centre - half), math.exp(centre),
                                                            math.exp(centre + half)), rel=1e-4)


def test_paired_aggregate_speedup_needs_pairs() -> None:
    assert paired_aggregate_speedup([by_rate("a", [10.0], SPEC)]) is None
    assert paired_aggregate_speedup([]) is None


def test_aggregates_from_cells_paired_and_a_subset_of_categories() -> None:
    cells = stored_cells({("baseline", 1, "a"): [10.0, 12.0], ("baseline", 1, "b"): [20.0, 22.0],
                          ("ngram4", 1, "a"): [15.0, 18.0], ("ngram4", 1, "b"): [30.0, 33.0]})
    for key, ratios in (("tiny-ngram4-c1-a", (2.0, 1.0)), ("tiny-ngram4-c1-b", (8.0, 4.0))):
        c = cells[key]
        cells[key] = CellBaseline(c.server, c.concurrency, c.category,
                                  {**c.metrics, "speedup": MetricBaseline(1.0, 0.5, 2.0, ratios)},
                                  "pairing: interleaved, 2 rounds, intervals at 0.975 confidence")
    out = aggregates_from_cells(cells, TINY)
    sp = out["tiny-ngram4-c1"]["metrics"]["speedup"]
    assert sp["aggregation"] == PAIRED_GEOMEAN and sp["rounds"] == pytest.approx([4.0, 2.0])
    assert sp["value"] == pytest.approx(math.sqrt(8.0))
    only_a = aggregates_from_cells(cells, TINY, categories=["a"])
    assert only_a["tiny-ngram4-c1"]["categories"] == ["a"]
    assert only_a["tiny-ngram4-c1"]["metrics"]["speedup"]["value"] == pytest.approx(math.sqrt(2.0))
    assert only_a["tiny-baseline-c1"]["metrics"]["output_throughput"]["rounds"] == [10.0, 12.0]
    assert parse_aggregates(out, "tiny-cpu.json", TINY.id_prefix)["tiny-ngram4-c1"].metrics["speedup"].aggregation \
        == PAIRED_GEOMEAN



def test_an_advisory_tolerance_marks_the_aggregate_check_advisory() -> None:
    measured = aggregate([by_rate("a", [130.0], SPEC), by_rate("b", [130.0], SPEC)])
    stored = parse_aggregates({"k": entry()}, "b.json")["k"]
    assert judge_aggregate(stored, measured, {"output_throughput": Tolerance(0.35, advisory=True)}
                           )["output_throughput"].advisory
    assert not judge_aggregate(stored, measured, TOL)["output_throughput"].advisory
