"""A/B: the same cells on two vLLM versions (the upgrade check), old against new.

    python -m specguard ab old/benchmark.json new/benchmark.json --out ab --tolerance 0.1

For every cell in both files and each metric (tok/s, speedup, acceptance length): old, new, the
ratio new/old with a 95% interval, and a verdict of that ratio against 1 with the tolerance
(higher is better, as ``specguard.judge.verdict.judge`` decides it against a stored baseline). The
interval is ``ratio_ci`` of the per-round figures when both cells have >= 2 rounds:
``round_throughputs``; ``round_acceptance_lengths``; for speedup each round's tok/s over the mean of
the plain server's rounds. Otherwise it is the new cell's own CI over the old value (the old taken
as a baseline is), else the bare ratio. Writes ``ab.md`` and ``ab.json``; exits 1 when any metric
REGRESSED.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specguard.store.benchjson import BenchRun, CellResult, load_benchmark
from specguard.report.markdown import table
from specguard.judge.stats import Interval, ratio_ci
from specguard.config.tolerance import Tolerance
from specguard.judge.verdict import Verdict, judge

VERSION = 1
METRICS = ("output_throughput", "speedup", "acceptance_length")
TITLES = {"output_throughput": "Output throughput (tok/s)", "speedup": "Speedup vs plain",
          "acceptance_length": "Acceptance length"}


@dataclass(frozen=True)
class Comparison:
    cell: str
    metric: str
    old: float
    new: float
    interval: Interval   # of new / old
    method: str          # "ratio_ci of rounds" | "new CI / old" | "point"
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        iv = self.interval
        return {"cell": self.cell, "metric": self.metric, "old": self.old, "new": self.new,
                "ratio": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "method": self.method,
                "verdict": self.verdict.value}


def _value(c: CellResult, metric: str) -> tuple[float | None, tuple[float, float] | None, tuple[float, ...]]:
    """(value, its CI, per-round figures) of ``metric`` in cell ``c``."""
    if metric == "output_throughput":
        return c.output_throughput, c.output_throughput_ci, c.round_throughputs
    if metric == "acceptance_length":
        return c.acceptance_length, c.acceptance_length_ci, c.round_acceptance_lengths
    base = c.base_throughput if c.baseline_round_throughputs else None
    return c.speedup, c.speedup_ci, tuple(t / base for t in c.round_throughputs) if base else ()


def compare(old: CellResult, new: CellResult, metric: str, tolerance: Tolerance) -> Comparison | None:
    """None when either cell lacks the metric (a plain server has no speedup) or old is not positive."""
    (o, _, o_rounds), (n, n_ci, n_rounds) = _value(old, metric), _value(new, metric)
    if o is None or n is None or o <= 0:
        return None
    ratio = n / o
    if len(o_rounds) >= 2 and len(n_rounds) >= 2 and min(o_rounds) > 0:
        iv, method = ratio_ci(n_rounds, o_rounds), "ratio_ci of rounds"
        # Point and interval from the same rounds; the stored value may be a rounded copy of them.
        iv = Interval(min(iv.low, ratio), max(iv.high, ratio), ratio, iv.confidence, iv.method)
    elif n_ci is not None:
        iv = Interval(min(n_ci[0] / o, ratio), max(n_ci[1] / o, ratio), ratio, 0.95, "new CI / old")
        method = "new CI / old"
    else:
        iv, method = Interval(ratio, ratio, ratio, 0.95, "point"), "point"
    return Comparison(new.cell, metric, o, n, iv, method, judge(iv, 1.0, tolerance))


@dataclass
class ABResult:
    old: BenchRun
    new: BenchRun
    tolerance: float
    comparisons: list[Comparison]
    only_old: list[str]
    only_new: list[str]

    @property
    def regressed(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict is Verdict.REGRESSED]

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "tolerance": self.tolerance, "old": _side(self.old), "new": _side(self.new),
                "comparisons": [c.to_json() for c in self.comparisons],
                "only_old": self.only_old, "only_new": self.only_new}

    def markdown(self) -> str:
        o, n = _side(self.old), _side(self.new)
        out = [f"# specguard A/B: vLLM {o['vllm_version']} → {n['vllm_version']}", "",
               *table(["", "old", "new"], [[k, _cell(o[k]), _cell(n[k])]
                                           for k in ("file", "vllm_version", "device", "datetime", "commit")]),
               (f"Verdicts judge new/old against 1 with a {self.tolerance:.0%} tolerance, higher is better: "
               f"REGRESSED when the whole 95% interval lies below {1 - self.tolerance:g}, IMPROVED when above "
               f"{1 + self.tolerance:g}, UNKNOWN when it straddles the bound."), ""]
        out += ["## What regressed", ""]
        out += [f"- **REGRESSED** `{c.cell}` {c.metric}: {c.old:.4g} → {c.new:.4g} "
                f"(×{c.interval.estimate:.3f} [{c.interval.low:.3f}, {c.interval.high:.3f}])"
                for c in self.regressed] or ["Nothing regressed."]
        out.append("")
        for metric in METRICS:
            rows = [c for c in self.comparisons if c.metric == metric]
            if not rows:
                continue
            out += [f"## {TITLES[metric]}", ""]
            out += table(["cell", "old", "new", "new/old", "95% CI", "verdict", "interval from"],
                         [[c.cell, f"{c.old:.4g}", f"{c.new:.4g}", f"{c.interval.estimate:.3f}",
                           f"[{c.interval.low:.3f}, {c.interval.high:.3f}]",
                           "**REGRESSED**" if c.verdict is Verdict.REGRESSED else c.verdict.value, c.method]
                          for c in rows])
        for name, cells in (("old", self.only_old), ("new", self.only_new)):
            if cells:
                out += [f"Cells only in the {name} file (not compared): " + ", ".join(f"`{c}`" for c in cells), ""]
        return "\n".join(out).rstrip() + "\n"


def _cell(v: Any) -> str:
    return "-" if v in (None, "") else str(v)


def _side(run: BenchRun) -> dict[str, Any]:
    return {"file": str(run.path), "vllm_version": ", ".join(run.values("vllm_version")) or None,
            "device": ", ".join(run.values("device")) or None, "datetime": run.datetime, "commit": run.commit}


def ab_report(old_json: Path, new_json: Path, out_dir: Path, *, tolerance: float = 0.1) -> ABResult:
    """Compare the cells of two benchmark JSONs; writes ``out_dir/ab.md`` and ``out_dir/ab.json``."""
    tol = Tolerance(tolerance, "higher")
    old, new = load_benchmark(Path(old_json)), load_benchmark(Path(new_json))
    o_cells, n_cells = {c.cell: c for c in old.cells}, {c.cell: c for c in new.cells}
    comparisons = [cmp for cid in n_cells if cid in o_cells for m in METRICS
                   if (cmp := compare(o_cells[cid], n_cells[cid], m, tol)) is not None]
    result = ABResult(old, new, tolerance, comparisons, [c for c in o_cells if c not in n_cells],
                      [c for c in n_cells if c not in o_cells])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ab.md").write_text(result.markdown(), encoding="utf-8")
    (out_dir / "ab.json").write_text(json.dumps(result.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n",
                                     encoding="utf-8")
    return result


def _tolerance_arg(text: str) -> float:
    try:
        value = float(text)
        Tolerance(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"could not parse {text!r}. Expected a fraction in [0, 1) "
                                         f"such as 0.1 (10%).") from None
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ab", help="Compare two benchmark JSONs cell by cell (e.g. before and after a vLLM upgrade).",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path, metavar="OLD.json")
    p.add_argument("new", type=Path, metavar="NEW.json")
    p.add_argument("--out", type=Path, metavar="DIR", default=None,
                   help="Output folder. Default: ab/ next to NEW.json.")
    p.add_argument("--tolerance", type=_tolerance_arg, metavar="FRACTION", default=0.1,
                   help="How far new/old may fall below 1 before it is a regression. Default: %(default)r")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    out = args.out or Path(args.new).parent / "ab"
    result = ab_report(args.old, args.new, out, tolerance=args.tolerance)
    echo(f"specguard: A/B report written to {out / 'ab.md'}: {len(result.comparisons)} comparisons, "
         f"{len(result.regressed)} regressed")
    return 1 if result.regressed else 0

