"""Paired interleaved rounds, the sequential decision, portability rules and the "still pays" floor."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.store.baselines import CellBaseline, MetricBaseline
from specguard.judge.decision import Sequential
from specguard.config.errors import InputError
from specguard.judge.rules import Against, choose, explain, floor_check, judge_metrics
from specguard.config.matrix import load_matrix, parse_matrix
from specguard.measure.runner import pair_order
from specguard.plugin.session import Options, SpecguardSession, _urls
from specguard.judge.stats import Interval, paired_ratio_ci, ratio_ci
from specguard.config.tolerance import Tolerance
from specguard.judge.verdict import Verdict, judge

ROOT = Path(__file__).resolve().parents[2]
T975_DF2 = 4.302652729911275   # scipy.stats.t.ppf(0.975, 2)


# --- pairing -----------------------------------------------------------------------------------

def test_pair_order_alternates() -> None:
    assert [pair_order(i) for i in range(6)] == [True, False, True, False, True, False]
    with pytest.raises(ValueError):
        pair_order(-1)


def test_paired_ratio_known_values() -> None:
    # log ratios 0.1, 0.2, 0.3: mean 0.2, SD 0.1, t(0.975, 2) = 4.3027
    plain = [10.0, 10.0, 10.0]
    spec = [10 * math.exp(x) for x in (0.1, 0.2, 0.3)]
    iv = paired_ratio_ci(spec, plain)
    half = T975_DF2 * 0.1 / math.sqrt(3)
    assert iv.estimate == pytest.approx(math.exp(0.2))
    assert iv.low == pytest.approx(math.exp(0.2 - half))
    assert iv.high == pytest.approx(math.exp(0.2 + half))
    assert iv.method == "paired-t-log"
    assert paired_ratio_ci([2.0, 4.0], [1.0, 2.0]).method == "constant"
    assert paired_ratio_ci([3.0], [2.0]).estimate == pytest.approx(1.5)


def test_paired_ratio_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_ratio_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        paired_ratio_ci([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError):
        paired_ratio_ci([], [])


def test_pairing_cancels_drift_that_sequential_rounds_do_not() -> None:
    """The plain server drifts from 10.5 to 7.8 tok/s over the rounds (as measured on the CPU);
    the speculative server is truly 1.5x. Sequential blocks put the drift into the ratio; ABBA
    pairs do not."""
    n = 8
    drift = [10.5 - 2.7 * t / (2 * n - 1) for t in range(2 * n)]
    # sequential: the plain server's 8 rounds first, then the speculative server's 8
    seq = ratio_ci([1.5 * d for d in drift[n:]], drift[:n])
    plain, spec = [], []
    for i in range(n):
        a, b = drift[2 * i], drift[2 * i + 1]
        p, s = (a, 1.5 * b) if pair_order(i) else (b, 1.5 * a)
        plain.append(p)
        spec.append(s)
    paired = paired_ratio_ci(spec, plain)
    assert seq.estimate < 1.5 * 0.9             # biased by the drift
    assert paired.estimate == pytest.approx(1.5, rel=0.005)
    assert paired.contains(1.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1, 100), st.floats(1, 100)), min_size=2, max_size=12), st.floats(0.1, 10))
def test_paired_ratio_properties(pairs: list[tuple[float, float]], k: float) -> None:
    spec, plain = [s for s, _ in pairs], [p for _, p in pairs]
    iv = paired_ratio_ci(spec, plain)
    assert iv.low <= iv.estimate <= iv.high
    scaled = paired_ratio_ci([s * k for s in spec], plain)
    assert scaled.estimate == pytest.approx(iv.estimate * k, rel=1e-9)
    swapped = paired_ratio_ci(plain, spec)
    assert swapped.estimate == pytest.approx(1 / iv.estimate, rel=1e-9)
    order = list(range(len(pairs)))
    random.Random(len(pairs)).shuffle(order)
    shuffled = paired_ratio_ci([spec[i] for i in order], [plain[i] for i in order])
    assert shuffled == iv


# --- the sequential decision -------------------------------------------------------------------

def test_sequential_looks_and_confidence() -> None:
    assert Sequential(3, 6).looks == (3, 6)
    assert Sequential(4, 8).looks == (4, 8)
    assert Sequential(3, 10).looks == (3, 6, 9, 10)
    assert Sequential(5, 5).looks == (5,)
    assert Sequential(5, 5).look_confidence == pytest.approx(0.95)
    assert Sequential(3, 6).look_confidence == pytest.approx(0.975)
    assert Sequential(3, 10).look_confidence == pytest.approx(1 - 0.05 / 4)
    assert Sequential(3, 6).false_alarm_bound == pytest.approx(0.025)
    assert Sequential(3, 10).next_look(3) == 6 and Sequential(3, 10).next_look(9) == 10
    assert Sequential(3, 10).next_look(10) is None


@pytest.mark.parametrize(("rounds", "max_rounds", "conf"), [(0, 3, 0.95), (3, 2, 0.95), (3, 6, 1.0)])
def test_sequential_rejects_bad_settings(rounds: int, max_rounds: int, conf: float) -> None:
    with pytest.raises(ValueError):
        Sequential(rounds, max_rounds, conf)


@given(st.integers(1, 10), st.integers(0, 20), st.floats(0.5, 0.99))
def test_sequential_confidence_never_below_nominal(rounds: int, extra: int, conf: float) -> None:
    seq = Sequential(rounds, rounds + extra, conf)
    assert seq.look_confidence >= conf
    assert seq.looks[0] == rounds and seq.looks[-1] == rounds + extra
    assert list(seq.looks) == sorted(set(seq.looks))


def _replay(seq: Sequential, truth: float, sd: float, stored: float, tol: Tolerance, rng: random.Random) -> Verdict:
    logs = [rng.gauss(math.log(truth), sd) for _ in range(seq.max_rounds)]
    for n in seq.looks:
        iv = paired_ratio_ci([math.exp(x) for x in logs[:n]], [1.0] * n, seq.look_confidence)
        verdict = judge(iv, stored, tol)
        if verdict is not Verdict.UNKNOWN:
            return verdict
    return verdict


def test_sequential_false_alarms_bounded_with_the_looks_counted() -> None:
    """Truth exactly on the bound (the worst case for a false alarm): over 4000 seeded trials of
    the 4-look schedule the REGRESSED rate stays under the 2.5% bound; with every look at the
    nominal 95% it would not be bounded by 2.5%."""
    tol = Tolerance(0.10)
    stored, truth = 1.5, 1.5 * 0.9
    seq = Sequential(3, 10)
    rng = random.Random(0)
    rate = sum(_replay(seq, truth, 0.05, stored, tol, rng) is Verdict.REGRESSED for _ in range(4000)) / 4000
    assert rate <= seq.false_alarm_bound
    naive = Sequential(3, 10, confidence=1 - 0.05 * 4)   # what 95% at each of the 4 looks amounts to
    rng = random.Random(0)
    loose = sum(_replay(naive, truth, 0.05, stored, tol, rng) is Verdict.REGRESSED for _ in range(4000)) / 4000
    assert loose > rate


def test_sequential_catches_a_clear_slowdown() -> None:
    tol = Tolerance(0.05)
    rng = random.Random(1)
    caught = sum(_replay(Sequential(4, 8), 1.5 * 0.85, 0.02, 1.5, tol, rng) is Verdict.REGRESSED for _ in range(500))
    assert caught / 500 > 0.95


# --- portability and the floor -----------------------------------------------------------------

def _stored(speedup: float, length: float, step_cost: float | None = None) -> CellBaseline:
    metrics = {"speedup": MetricBaseline(speedup), "acceptance_length": MetricBaseline(length),
               "output_throughput": MetricBaseline(10.0)}
    if step_cost is not None:
        metrics["step_cost"] = MetricBaseline(step_cost)
    return CellBaseline("ngram4", 1, "coding", metrics)


TOL = {"speedup": Tolerance(0.10), "acceptance_length": Tolerance(0.05), "output_throughput": Tolerance(0.35)}


def _intervals(speedup: Interval, length: Interval, tput: Interval):
    table = {"speedup": speedup, "acceptance_length": length, "output_throughput": tput}
    return lambda metric: table.get(metric), lambda i: None


def _iv(lo: float, est: float, hi: float) -> Interval:
    return Interval(lo, hi, est, 0.95, "test")


def test_choose_prefers_the_machines_own_profile() -> None:
    own, ref = _stored(1.3, 3.2), _stored(1.5, 3.2)
    assert choose(own, "cpu-intel-xeon-2c", ref, "cpu-amd-epyc-2c") == Against(own, "cpu-intel-xeon-2c", True)
    assert choose(None, "cpu-intel-xeon-2c", ref, "cpu-amd-epyc-2c") == Against(ref, "cpu-amd-epyc-2c", False)
    assert choose(None, "x", ref, None) is None
    assert choose(None, "x", None, "cpu-amd-epyc-2c") is None


def test_reference_judges_acceptance_and_only_advises_on_machine_bound_figures() -> None:
    # Another machine: speedup and throughput far below the reference's, acceptance the same.
    interval_of, pos = _intervals(_iv(0.9, 0.95, 1.0), _iv(3.17, 3.18, 3.19), _iv(5, 6, 7))
    checks = judge_metrics(interval_of, pos, Against(_stored(1.5, 3.18), "cpu-amd-epyc-2c", False), TOL, None)
    assert checks["acceptance_length"].verdict is Verdict.OK and not checks["acceptance_length"].advisory
    assert checks["speedup"].verdict is Verdict.REGRESSED and checks["speedup"].advisory
    assert checks["output_throughput"].advisory
    assert "advisory" in checks["speedup"].describe()
    # The machine's own profile: the same figures decide.
    own = judge_metrics(interval_of, pos, Against(_stored(1.5, 3.18), "cpu-intel-xeon-2c", True), TOL, None)
    assert not any(c.advisory for c in own.values())
    assert own["speedup"].verdict is Verdict.REGRESSED


def test_acceptance_drop_against_the_reference_is_a_regression() -> None:
    interval_of, pos = _intervals(_iv(1.2, 1.3, 1.4), _iv(2.60, 2.66, 2.70), _iv(5, 6, 7))
    checks = judge_metrics(interval_of, pos, Against(_stored(1.3, 3.19), "ref", False), TOL, None)
    assert checks["acceptance_length"].verdict is Verdict.REGRESSED
    assert checks["acceptance_length"].fails().startswith("acceptance_length: 95% CI [2.60, 2.70] lies below")


def test_floor_needs_no_baseline() -> None:
    interval_of, pos = _intervals(_iv(0.90, 0.93, 0.96), _iv(3, 3.1, 3.2), _iv(5, 6, 7))
    checks = judge_metrics(interval_of, pos, None, TOL, 1.10)
    assert list(checks) == ["min_speedup"]
    assert checks["min_speedup"].verdict is Verdict.REGRESSED
    assert checks["min_speedup"].fails() == "no longer pays: speedup 0.930× [0.900, 0.960] < 1.10 (min_speedup)"


@pytest.mark.parametrize(("lo", "hi", "verdict"), [(0.9, 1.05, Verdict.REGRESSED), (1.05, 1.2, Verdict.UNKNOWN),
                                                   (1.1, 1.3, Verdict.OK), (2.0, 3.0, Verdict.OK)])
def test_floor_verdicts(lo: float, hi: float, verdict: Verdict) -> None:
    assert floor_check(_iv(lo, (lo + hi) / 2, hi), 1.10).verdict is verdict


def test_explain_names_the_side_that_moved() -> None:
    assert explain(3.17, 3.1, 3.18, 2.4) == ("acceptance length 3.18 → 3.17, step cost 2.40 → 3.10: a speculative "
                                             "step got more expensive (drafting or verification got slower)")
    assert explain(2.66, 2.4, 3.19, 2.4).endswith("fewer drafted tokens are accepted")
    assert explain(3.18, 2.4, 3.18, 2.41).endswith("neither side moved by 2% or more")
    assert explain(3.18, 2.4, None, None) == "speedup ≈ acceptance length 3.18 ÷ step cost 2.40"
    assert explain(3.18, 1.14, None, None, 1.36) == "speedup ≈ tokens per step 1.36 ÷ step cost 1.14"
    assert explain(None, 2.4, 3.0, 2.0) is None


# --- matrix fields -------------------------------------------------------------------------------

def _matrix(extra_top: str = "", server_extra: str = "", workload_extra: str = "") -> dict:
    import tomllib
    text = f"""
version = 1
name = "t"
marker = "cpu"
{extra_top}
[[servers]]
name = "plain"
model = "m"
[[servers]]
name = "ngram"
model = "m"
speculative_config = {{ method = "ngram", num_speculative_tokens = 4 }}
{server_extra}
[workload]
prompts = "p.jsonl"
{workload_extra}
"""
    return tomllib.loads(text)


def test_min_speedup_forms_and_the_most_specific_wins() -> None:
    m = parse_matrix(_matrix(server_extra="min_speedup = 1.05"), Path("t.toml"))
    assert m.server("ngram").speedup_floor(16, "math") == 1.05
    m = parse_matrix(_matrix(server_extra="min_speedup = { c1 = { coding = 1.3, rag = 1.4 }, c4 = 1.01 }"),
                     Path("t.toml"))
    ngram = m.server("ngram")
    assert ngram.speedup_floor(1, "coding") == 1.3 and ngram.speedup_floor(1, "rag") == 1.4
    assert ngram.speedup_floor(1, "writing") is None and ngram.speedup_floor(4, "writing") == 1.01
    assert m.server("plain").speedup_floor(1, "coding") is None


@pytest.mark.parametrize(("text", "field"), [
    ("min_speedup = { x1 = 1.1 }", "servers[1].min_speedup.x1"),
    ("min_speedup = { c1 = 0 }", "servers[1].min_speedup.c1"),
    ("min_speedup = { c1 = { coding = -1 } }", "servers[1].min_speedup.c1.coding"),
    ("min_speedup = { c1 = {} }", "servers[1].min_speedup.c1"),
    ("min_speedup = true", "servers[1].min_speedup"),
])
def test_min_speedup_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_matrix(_matrix(server_extra=text), Path("t.toml"))
    assert err.value.field == field and "t.toml" in str(err.value)


@pytest.mark.parametrize(("top", "workload", "field"), [
    ('reference_profile = "../x"', "", "reference_profile"),
    ('[gate_checks]\nrerun = "nope"', "", "gate_checks.rerun"),
    ('[gate_checks]\nslowdown = ["ngram", "ngram"]', "", "gate_checks.slowdown"),
    ('[gate_checks]\nacceptance_drop = ["ngram"]', "", "gate_checks.acceptance_drop"),
    ("", 'pairing = "sometimes"', "workload.pairing"),
    ("", "confidence = 1.0", "workload.confidence"),
    ("", "warmup_rel = 0", "workload.warmup_rel"),
    ("", "requests_per_concurrency = 0", "workload.requests_per_concurrency"),
])
def test_new_matrix_fields_are_validated(top: str, workload: str, field: str) -> None:
    raw = _matrix(workload_extra=workload)
    if top.startswith("[gate_checks]"):
        import tomllib
        raw["gate_checks"] = tomllib.loads(top)["gate_checks"]
    elif top:
        import tomllib
        raw.update(tomllib.loads(top))
    with pytest.raises(InputError) as err:
        parse_matrix(raw, Path("t.toml"))
    assert err.value.field == field


def test_steady_state_round_size() -> None:
    m = load_matrix(ROOT / "fixtures/matrices/tiny-cpu.toml")
    assert m.workload.requests_per_round(1) == m.workload.num_prompts
    assert m.workload.requests_per_round(4) == 16
    assert m.workload.pairing == "interleaved" and m.reference_profile == "cpu-amd-epyc-2c"


def test_missing_reference_file_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "fixtures/matrices/tiny-cpu.toml").read_text()
    text = text.replace('reference_profile = "cpu-amd-epyc-2c"', 'reference_profile = "cpu-nowhere-2c"')
    text = text.replace('prompts = "../prompts/speed-sample.jsonl"',
                        f'prompts = "{ROOT / "fixtures/prompts/speed-sample.jsonl"}"')
    path = tmp_path / "tiny-cpu.toml"
    path.write_text(text)
    opts = Options(matrix=path, baseline_dir=tmp_path / "baselines", results_dir=tmp_path / "r",
                   profile="cpu-here-2c")
    with pytest.raises(InputError) as err:
        SpecguardSession.create(opts)
    assert err.value.field == "reference_profile" and "cpu-nowhere-2c" in str(err.value)


def test_vllm_url_forms() -> None:
    assert _urls(("http://127.0.0.1:8000",)) == {"*": "http://127.0.0.1:8000"}
    assert _urls(("baseline=http://127.0.0.1:1", "ngram4=http://127.0.0.1:2")) == {
        "baseline": "http://127.0.0.1:1", "ngram4": "http://127.0.0.1:2"}
    with pytest.raises(InputError, match="--vllm-url"):
        _urls(("baseline=localhost:1",))


# --- results file ----------------------------------------------------------------------------------

def test_read_records_skips_only_a_torn_last_line(tmp_path: Path) -> None:
    from specguard.store.results import read_records
    path = tmp_path / "cells.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n{"c": ')
    assert read_records(path) == [{"a": 1}, {"b": 2}]
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(InputError) as err:
        read_records(path)
    assert err.value.field == "line 2" and str(path) in str(err.value)


def test_an_advisory_tolerance_never_decides_even_on_the_own_profile() -> None:
    """A CPU profile names a CPU model, not a speed: the tiny CPU matrix marks absolute tok/s advisory."""
    tol = {**TOL, "output_throughput": Tolerance(0.35, advisory=True)}
    interval_of, pos = _intervals(_iv(1.4, 1.5, 1.6), _iv(3.17, 3.18, 3.19), _iv(4, 5, 6))
    for own in (True, False):
        checks = judge_metrics(interval_of, pos, Against(_stored(1.5, 3.18), "cpu-amd-epyc-2c", own), tol, None)
        tput = checks["output_throughput"]
        assert tput.verdict is Verdict.REGRESSED and tput.advisory      # 5 tok/s [4, 6] < 6.5 = 10 × 0.65
        assert "advisory: reported, never judged in this matrix" in tput.describe()
        assert checks["speedup"].advisory is not own and not checks["acceptance_length"].advisory
