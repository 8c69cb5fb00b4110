"""Turn checks into a pytest outcome: fail on REGRESSED, xfail on UNKNOWN, warn on IMPROVED,
skip when there is nothing to judge against."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytest

from specguard.runner import CellMeasurement
from specguard.session import SpecguardSession
from specguard.verdict import Check, Verdict


class ImprovedWarning(UserWarning):
    """A metric is better than its baseline by more than the tolerance: consider raising the baseline."""


def settle(s: SpecguardSession, subject: str, header: str, checks: Sequence[Check]) -> None:
    """The outcome of ``checks`` for ``subject`` (a cell or aggregate id); ``header`` says what was
    compared with what, and heads the failure message."""
    for c in checks:
        if c.verdict is Verdict.IMPROVED:
            warnings.warn(ImprovedWarning(f"{subject}: {c.describe()}"), stacklevel=3)
    failures = [c.fails() for c in checks if c.verdict is Verdict.REGRESSED]
    if failures and not s.options.update_baselines:
        pytest.fail("\n".join([f"REGRESSED {header}", *failures]), pytrace=False)
    unknown = [c.describe() for c in checks if c.verdict is Verdict.UNKNOWN]
    if unknown:
        pytest.xfail("\n".join([f"UNKNOWN at the round cap {header}", *unknown]))


def baseline_version(s: SpecguardSession) -> str | None:
    return s.baseline.environment.get("vllm_version") if s.baseline else None


def assert_checks(s: SpecguardSession, m: CellMeasurement, metrics: list[str]) -> None:
    """Judge ``metrics`` (prefixes match, so ``acceptance_pos`` covers every position) of ``m``."""
    checks = [c for name, c in m.checks.items() if any(name.startswith(x) for x in metrics)]
    where = s.options.baseline_dir / s.profile / f"{s.matrix.name}.json"
    if s.stored(m.cell) is None:
        pytest.skip(f"{m.cell.id}: no stored baseline in {where} (category {m.cell.category}); "
                    f"run with --update-baselines to record one")
    if not checks:
        pytest.skip(f"{m.cell.id}: no tolerance in the matrix or no stored value for {', '.join(metrics)}")
    header = (f"{m.cell.id} [server {m.cell.server.name}, c={m.cell.concurrency}, category {m.cell.category}] "
              f"after {len(m.samples)} rounds, vs baseline from vLLM {baseline_version(s)}:")
    settle(s, m.cell.id, header, checks)
