"""The gate itself, on real servers: an identical rerun is not REGRESSED, a really lower
acceptance is caught on acceptance, a really slower variant is caught on speedup.

Each check compares two real measurements of this session (no baseline file is touched): the
"baseline" is what ``--update-baselines`` would store of the reference measurement. The rerun is
measured anew with the suite's sequential design at 98% over all looks, so by design its
false-alarm rate is at most 1%. The planted differences (see the matrix's [gate_checks]) are far
past the bands: the candidate's own cell is judged against the reference's figures, and a slowdown
still undecided there is measured anew at 98%."""

import dataclasses

import pytest

from specguard.judge.rules import Against
from specguard.judge.cell import cell_baseline
from specguard.judge.verdict import Verdict

pytestmark = pytest.mark.gate
# 98% over all looks: at most (1 - 0.98) / 2 = 1% false alarms per check (specguard/judge/decision.py).
GATE_CONFIDENCE = 0.98


def _table(checks):
    return "\n".join(c.describe() for c in checks.values())


def test_gate(gate_case, specguard, vllm_servers):
    case = gate_case
    if specguard.one_url(case.candidate.server):
        pytest.skip(specguard.one_url(case.candidate.server))
    if case.kind == "rerun":
        first = specguard.measure(case.candidate, lambda one, n: [one() for _ in range(n)])
        against = Against(cell_baseline(first), "a run minutes earlier", True)
        # Measured anew and judged against the first run with the suite's own sequential design.
        second = specguard.measure_fresh(case.candidate, against=against, confidence=GATE_CONFIDENCE)
        # What decides (an advisory figure, such as a CPU VM's tok/s, is reported and never fails).
        checks = {k: c for k, c in second.checks.items() if k != "min_speedup" and not c.advisory}
        specguard.record("gate", {"case": case.id, "checks": [c.describe() for c in checks.values()],
                                  "rerun": specguard.cell_info(second)})
        assert checks, f"{case.id}: nothing was judged"
        regressed = [c.fails() for c in checks.values() if c.verdict is Verdict.REGRESSED]
        assert not regressed, f"{case.id}: an identical rerun was judged REGRESSED:\n" + "\n".join(regressed)
        return
    ref = specguard.measure(case.reference, lambda one, n: [one() for _ in range(n)])
    against = Against(cell_baseline(ref), f"{case.reference.server.name}'s run", True)
    metric = "acceptance_length" if case.kind == "acceptance_drop" else "speedup"
    # The session's own measurement of the candidate is judged against the reference's figures:
    # acceptance under greedy decoding repeats exactly, and the candidate's speedup was measured
    # in pairs like any cell. A speedup still UNKNOWN there is measured anew, with as many looks
    # as the sequential design gives it.
    cand = _rejudged(specguard, specguard.measure(case.candidate, lambda one, n: [one() for _ in range(n)]), against)
    if case.kind == "slowdown" and cand.checks.get("speedup") is not None \
            and cand.checks["speedup"].verdict is Verdict.UNKNOWN:
        cand = specguard.measure_fresh(case.candidate, against=against, confidence=GATE_CONFIDENCE)
    checks = cand.checks
    specguard.record("gate", {"case": case.id, "checks": [c.describe() for c in checks.values()]})
    planted = {"acceptance_drop": "acceptance length", "slowdown": "speedup"}[case.kind]
    cand_iv, ref_iv = cand.interval(metric), ref.interval(metric)
    assert cand_iv is not None and ref_iv is not None, f"{case.id}: {metric} was not measured on both"
    # The premise: the candidate really is worse by a wide margin, in this very run.
    assert cand_iv.estimate <= 0.8 * ref_iv.estimate, (
        f"{case.id}: the planted {planted} difference is not there: {cand_iv.estimate:.3f} vs {ref_iv.estimate:.3f}")
    check = checks.get(metric)
    assert check is not None and check.verdict is Verdict.REGRESSED, (
        f"{case.id}: a {planted} {cand_iv.estimate:.3f} against a baseline of {ref_iv.estimate:.3f} was not "
        f"caught:\n{_table(checks)}")
    assert check.fails().startswith(metric), check.fails()


def _rejudged(specguard, m, against):
    m = dataclasses.replace(m)
    specguard.judge(m, against)
    return m
