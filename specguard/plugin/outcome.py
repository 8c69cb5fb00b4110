"""Turn checks into a pytest outcome: fail on REGRESSED, xfail on UNKNOWN, warn on IMPROVED,
skip when there is nothing to judge against."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytest

from specguard.judge.rules import explain
from specguard.judge.cell import CellMeasurement
from specguard.plugin.session import SpecguardSession
from specguard.judge.verdict import Check, Verdict


class ImprovedWarning(UserWarning):
    """A metric is better than its baseline by more than the tolerance: consider raising the baseline."""


class AdvisoryWarning(UserWarning):
    """A machine-bound figure compared with another machine's baseline: reported, never a failure."""


def settle(s: SpecguardSession, subject: str, header: str, checks: Sequence[Check], why: str | None = None) -> None:
    """The outcome of ``checks`` for ``subject`` (a cell or aggregate id); ``header`` says what was
    compared with what, and heads the failure message; ``why`` explains a failure, if known."""
    for c in checks:
        if c.verdict is Verdict.IMPROVED:
            warnings.warn(ImprovedWarning(f"{subject}: {c.describe()}"), stacklevel=3)
    failures = [c.fails() for c in checks if c.verdict is Verdict.REGRESSED]
    if failures and not s.options.update_baselines:
        pytest.fail("\n".join([f"REGRESSED {header}", *failures, *([why] if why else [])]), pytrace=False)
    unknown = [c.describe() for c in checks if c.verdict is Verdict.UNKNOWN]
    if unknown:
        pytest.xfail("\n".join([f"UNKNOWN at the round cap {header}", *unknown]))


def baseline_version(s: SpecguardSession, profile: str | None = None) -> str | None:
    bf = s.reference if profile is not None and profile != s.profile else s.baseline
    return bf.environment.get("vllm_version") if bf else None


def explanation(s: SpecguardSession, m: CellMeasurement) -> str | None:
    """Which side of speedup ≈ acceptance length ÷ step cost moved, against the stored cell."""
    stored = s.stored(m.cell) or s.reference_stored(m.cell)

    def value(name: str) -> float | None:
        iv = m.interval(name)
        return None if iv is None else iv.estimate

    def old(name: str) -> float | None:
        v = stored.metrics.get(name) if stored else None
        return v.value if v is not None and isinstance(v.value, float) else None

    return explain(value("acceptance_length"), value("step_cost"), old("acceptance_length"), old("step_cost"),
                   m.tokens_per_step())


def warn_advisory(label: str, checks: list[Check]) -> list[Check]:
    """An AdvisoryWarning for each advisory check of ``label``; the deciding checks."""
    for c in checks:
        if c.advisory:
            warnings.warn(AdvisoryWarning(f"{label}: {c.describe()}"), stacklevel=3)
    return [c for c in checks if not c.advisory]


def assert_checks(s: SpecguardSession, m: CellMeasurement, metrics: list[str]) -> None:
    """Judge ``metrics`` (prefixes match, so ``acceptance_pos`` covers every position) of ``m``."""
    checks = [c for name, c in m.checks.items() if any(name.startswith(x) for x in metrics)]
    deciding = warn_advisory(m.cell.id, checks)
    if not deciding:
        where = s.options.baseline_dir / s.profile / f"{s.matrix.name}.json"
        if s.stored(m.cell) is None:
            ref = s.matrix.reference_profile
            advisory = "".join(f"\n{c.describe()}" for c in checks)
            judged_elsewhere = (f" (the reference profile {ref} judges only portable figures here)"
                                if ref and s.reference_stored(m.cell) is not None else "")
            pytest.skip(f"{m.cell.id}: no stored baseline in {where} (category {m.cell.category}){judged_elsewhere}; "
                        f"run with --update-baselines to record one{advisory}")
        if checks:   # compared, but every comparison is advisory in this matrix
            pytest.skip(f"{m.cell.id}: {', '.join(metrics)} is advisory in {s.matrix.path.name}, reported and "
                        "never judged:" + "".join(f"\n{c.describe()}" for c in checks))
        pytest.skip(f"{m.cell.id}: no tolerance in the matrix or no stored value for {', '.join(metrics)}")
    profiles = sorted({c.against for c in deciding if c.against})
    against = ", ".join(f"baseline of {p} from vLLM {baseline_version(s, p)}" for p in profiles) or "its floor"
    header = (f"{m.cell.id} [server {m.cell.server.name}, c={m.cell.concurrency}, category {m.cell.category}] "
              f"after {len(m.samples)} {'pairs' if m.pairs else 'rounds'}, vs {against}:")
    speed = any(c.metric in ("speedup", "min_speedup") and c.verdict is Verdict.REGRESSED for c in deciding)
    settle(s, m.cell.id, header, deciding, explanation(s, m) if speed else None)
