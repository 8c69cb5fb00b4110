"""The paired upgrade A/B: two vLLM builds of one server config live together, rounds interleaved.

    python -m specguard upgrade OLD_PYTHON NEW_PYTHON --matrix fixtures/matrices/tiny-cpu.toml \\
        --categories coding --pairs 4 --out results/ab/report

Each server config of the matrix (plain ones first) is started twice, once with each
environment's Python (one vLLM build each), one after the other; then, per cell, pairs of rounds
alternate old/new | new/old on the same prompts, so drift over minutes cancels in each pair's
ratio new ÷ old. For a speculative cell the change in speedup is the ratio of its servers' pair
ratios to its plain server's (Welch's t on the two sets of log ratios): a slower machine slows
both and cancels. Acceptance is compared as measured (it does not depend on timing).

Verdicts: REGRESSED when the interval of the speedup change (or the acceptance-length change)
lies wholly below 1 − tolerance; UNKNOWN when it straddles; the exit status is 1 if any cell
REGRESSED.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specguard.judge.decision import Sequential
from specguard.measure.load import round_prompts
from specguard.report.markdown import num, table, tok
from specguard.config.matrix import Cell, Matrix, ServerConfig, load_matrix
from specguard.config.prompts import load_prompts
from specguard.files import write_json_atomic
from specguard.store.results import now_iso
from specguard.measure.runner import RoundSample, pair_order, run_round
from specguard.serving.server import VLLMServer
from specguard.judge.stats import Interval, mean_ci, paired_ratio_ci, ratio_ci
from specguard.config.tolerance import Tolerance
from specguard.judge.verdict import Verdict, judge

KEY = "specguard-upgrade"


@dataclass
class CellAB:
    """One cell measured on both builds: per pair, new ÷ old throughput; acceptance per side."""

    cell: Cell
    old: list[RoundSample] = field(default_factory=list)
    new: list[RoundSample] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [n.result.output_throughput / o.result.output_throughput for o, n in zip(self.old, self.new)]

    def throughput_change(self, confidence: float) -> Interval:
        return paired_ratio_ci([n.result.output_throughput for n in self.new],
                               [o.result.output_throughput for o in self.old], confidence)

    def acceptance_length(self, side: str) -> float | None:
        acc = [s.acceptance.length for s in getattr(self, side) if s.acceptance is not None]
        return statistics.mean(acc) if acc else None

    def acceptance_interval(self, side: str, confidence: float) -> Interval | None:
        acc = [s.acceptance.length for s in getattr(self, side) if s.acceptance is not None]
        return mean_ci(acc, confidence) if acc else None


def speedup_change(spec: CellAB, plain: CellAB, confidence: float) -> Interval:
    """(spec new/old) ÷ (plain new/old), geometric means of the pair ratios, Welch's t on logs."""
    return ratio_ci(spec.ratios, plain.ratios, confidence)


def measure_server(config: ServerConfig, cells: list[Cell], pythons: tuple[str, str], prompts_of: Any,
                   matrix: Matrix, pairs: int, log_dir: Path) -> dict[str, CellAB]:
    """Start ``config`` on both builds (one after the other), then interleave their rounds per cell."""
    w = matrix.workload
    servers: list[VLLMServer] = []
    try:
        for python, label in zip(pythons, ("old", "new")):
            server = VLLMServer(config, log_dir=log_dir, api_key=KEY, python=python, label=label)
            server.start()
            servers.append(server)
        out: dict[str, CellAB] = {}
        for cell in cells:
            prompts = prompts_of(cell)
            ab = CellAB(cell)

            def one(server: VLLMServer) -> RoundSample:
                return run_round(cell, server, prompts, model=config.name, max_tokens=w.max_tokens, api_key=KEY,
                                 request_timeout_s=w.request_timeout_s, ignore_eos=w.ignore_eos)
            for server in servers:   # warm-up: one round each, not counted
                one(server)
            for i in range(pairs):
                if pair_order(i):
                    ab.old.append(one(servers[0]))
                    ab.new.append(one(servers[1]))
                else:
                    ab.new.append(one(servers[1]))
                    ab.old.append(one(servers[0]))
            out[cell.id] = ab
            print(f"{cell.id}: new/old throughput per pair {[round(r, 3) for r in ab.ratios]}", flush=True)
        return out
    finally:
        for server in servers:
            server.stop()


def judge_all(matrix: Matrix, measured: dict[str, CellAB], tolerance: float, confidence: float) -> list[dict[str, Any]]:
    rows = []
    tol = Tolerance(tolerance)
    by_key = {(ab.cell.server.name, ab.cell.concurrency, ab.cell.category): ab for ab in measured.values()}
    for ab in measured.values():
        cell = ab.cell
        row: dict[str, Any] = {"cell": cell.id, "server": cell.server.name, "concurrency": cell.concurrency,
                               "category": cell.category, "pairs": len(ab.old), "ratios": ab.ratios}
        tc = ab.throughput_change(confidence)
        row["throughput_change"], row["throughput_change_ci"] = tc.estimate, [tc.low, tc.high]
        row["old_tok_s"] = statistics.mean(s.result.output_throughput for s in ab.old)
        row["new_tok_s"] = statistics.mean(s.result.output_throughput for s in ab.new)
        verdicts = {}
        plain_cfg = matrix.baseline_of(cell.server)
        plain = by_key.get((plain_cfg.name, cell.concurrency, cell.category)) if plain_cfg else None
        if plain is not None:
            sc = speedup_change(ab, plain, confidence)
            row["speedup_change"], row["speedup_change_ci"] = sc.estimate, [sc.low, sc.high]
            verdicts["speedup_change"] = judge(sc, 1.0, tol).value
        old_len, new_len = ab.acceptance_length("old"), ab.acceptance_length("new")
        row["acceptance_length_old"], row["acceptance_length_new"] = old_len, new_len
        new_iv = ab.acceptance_interval("new", confidence)
        if old_len and new_iv is not None:
            scaled = Interval(new_iv.low / old_len, new_iv.high / old_len, new_iv.estimate / old_len,
                              new_iv.confidence, new_iv.method)
            verdicts["acceptance_length_change"] = judge(scaled, 1.0, tol).value
        row["verdicts"] = verdicts
        row["verdict"] = next((v.value for v in (Verdict.REGRESSED, Verdict.UNKNOWN, Verdict.IMPROVED)
                               if v.value in verdicts.values()), Verdict.OK.value if verdicts else None)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    head = [f"# Upgrade A/B (paired): {info['old']} → {info['new']}", "",
            f"Matrix `{info['matrix']}`, categories {', '.join(info['categories'])}, {info['pairs']} interleaved pairs "
            f"per cell, tolerance {info['tolerance']:.0%}, {info['confidence']:.3g} intervals, {info['date']}.", ""]
    body = table(["cell", "old tok/s", "new tok/s", "new ÷ old", "speedup change", "accept len old → new", "verdict"],
                 [[r["cell"], tok(r["old_tok_s"]), tok(r["new_tok_s"]),
                   num(r["throughput_change"], tuple(r["throughput_change_ci"])),
                   num(r.get("speedup_change"), tuple(r["speedup_change_ci"]) if r.get("speedup_change_ci") else None),
                   "-" if r["acceptance_length_old"] is None else
                   f"{r['acceptance_length_old']:.2f} → {r['acceptance_length_new']:.2f}",
                   r["verdict"] or "-"] for r in rows])
    return "\n".join(head + body)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("upgrade", help="Paired A/B of two vLLM builds: both live, rounds interleaved.")
    p.add_argument("old_python", metavar="OLD_PYTHON", help="the Python of the environment with the old vLLM")
    p.add_argument("new_python", metavar="NEW_PYTHON", help="the Python of the environment with the new vLLM")
    p.add_argument("--matrix", type=Path, required=True)
    p.add_argument("--categories", default=None, help="comma-separated subset of the matrix's categories")
    p.add_argument("--servers", default=None, help="comma-separated subset of the servers (plain ones are added)")
    p.add_argument("--concurrency", default=None, help="comma-separated subset of the matrix's concurrencies")
    p.add_argument("--pairs", type=int, default=None, help="pairs per cell (default: the matrix's max_rounds)")
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--old-label", default="old")
    p.add_argument("--new-label", default="new")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    matrix = load_matrix(args.matrix)
    w = matrix.workload
    loaded = load_prompts(w.prompts, base_dir=matrix.path.parent,
                          categories=args.categories.split(",") if args.categories else w.categories)
    by_cat: dict[str, list[Any]] = {}
    for p in loaded:
        by_cat.setdefault(p.category, []).append(p)
    categories = args.categories.split(",") if args.categories else list(by_cat)
    wanted = set(args.servers.split(",")) if args.servers else None
    order = [s for s in matrix.server_order() if s.perf]
    if wanted is not None:
        keep = wanted | {b.name for s in order if s.name in wanted for b in [matrix.baseline_of(s)] if b}
        order = [s for s in order if s.name in keep]
    pairs = args.pairs or w.max_rounds
    confidence = Sequential(pairs, pairs, w.confidence).look_confidence
    measured: dict[str, CellAB] = {}
    log_dir = args.out / "logs"
    for config in order:
        concurrencies = [int(c) for c in args.concurrency.split(",")] if args.concurrency else None
        cells = [c for c in matrix.cells(categories) if c.server == config
                 and (concurrencies is None or c.concurrency in concurrencies)]
        measured.update(measure_server(config, cells, (args.old_python, args.new_python),
                                       lambda c: round_prompts(by_cat[c.category], w.requests_per_round(c.concurrency)),
                                       matrix, pairs, log_dir))
    rows = judge_all(matrix, measured, args.tolerance, confidence)
    info = {"old": args.old_label, "new": args.new_label, "matrix": matrix.name, "categories": categories,
            "pairs": pairs, "tolerance": args.tolerance, "confidence": confidence, "date": now_iso()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "ab-paired.json", {"version": 1, **info, "cells": rows})
    (args.out / "ab-paired.md").write_text(markdown(rows, info) + "\n", encoding="utf-8")
    print(markdown(rows, info))
    return 1 if any(r["verdict"] == Verdict.REGRESSED.value for r in rows) else 0
