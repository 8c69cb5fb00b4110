"""Offline replay of the speedup gate on the ref-gpu matrix's measured pairs (no GPU needed).

    python benchmarks/power_gpu.py docs/gpu-ref/cells.jsonl --trials 2000 --json docs/gpu-ref/power.json \
        [--second CELLS_OF_A_LATER_START_UP.jsonl]

Each speculative cell of the ref-gpu run stores its interleaved pairs (``round_throughputs``, the
speculative side, and ``baseline_round_throughputs``, the plain side, one per pair). The gate's
speedup check is replayed with the suite's own code: ``specguard.judge.stats.paired_ratio_ci`` at the
look confidence of ``specguard.judge.decision.Sequential(rounds, max_rounds)`` (4, 8 in the matrix),
judged with ``specguard.judge.verdict.judge`` against the cell's own estimate (geometric mean of its
pairs' ratios) with the matrix's speedup tolerance; while UNKNOWN the next look's pairs are drawn,
up to the cap. Candidates: the pairs as measured (false alarms), and the speculative side × 0.95,
0.90, 0.85 and 0.80 (planted 5-20% slowdowns, with the real pair noise); each at the matrix's
tolerance and at ``--tolerances`` (default 0.05).

A cell has only ``rounds`` pairs (4) unless the gate's rerun or extra looks added more, and the
design needs up to ``max_rounds`` (8) pairs, so two replays are given:

* ``own``: each cell's own pairs, drawn without replacement (as benchmarks/power.py does). With
  fewer pairs than the cap, the replay stops at the largest look the cell's pairs allow; with
  exactly ``rounds`` pairs it is one deterministic look at all of them.
* ``pooled``: the pair noise of every speculative cell of one concurrency (log ratio minus its
  cell's mean log ratio, scaled by sqrt(n / (n - 1)) so that the residuals keep the variance of
  one pair) pooled; a synthetic cell draws its pairs' log ratios without replacement from that
  pool around a true speedup equal to the stored one. The verdict does not depend on the
  estimate's level (stored and candidate move together), so the rates are per pool.

``--second`` (cells of a later start-up of the same servers): its pairs join the pools, and are
judged against the first run's stored estimate of the same cell, i.e. a real cross-start-up
false-alarm observation.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specguard.judge.decision import Sequential  # noqa: E402
from specguard.config.matrix import load_matrix  # noqa: E402
from specguard.judge.stats import paired_ratio_ci  # noqa: E402
from specguard.config.tolerance import Tolerance  # noqa: E402
from specguard.judge.verdict import Verdict, judge  # noqa: E402

# The brief's candidates (as measured, 5% and 10% slower) plus 15% and 20%: with the matrix's 10%
# speedup tolerance a planted 10% slowdown sits on the bound itself, so it cannot be REGRESSED on
# average; the larger ones show where detection starts.
SHIFTS = {"false_alarm_rate": 1.0, "detection_rate_5pct": 0.95, "detection_rate_10pct": 0.90,
          "detection_rate_15pct": 0.85, "detection_rate_20pct": 0.80}


def shifts(slowdowns: list[float] | None) -> dict[str, float]:
    """The candidates: as measured, and each slowdown (percent) planted on the speculative side."""
    if not slowdowns:
        return SHIFTS
    return {"false_alarm_rate": 1.0, **{f"detection_rate_{p:g}pct": 1 - p / 100 for p in sorted(slowdowns)}}


def load_pairs(path: Path) -> dict[str, dict]:
    """Speculative cells of a cells.jsonl: id -> {spec: [...], plain: [...], concurrency, server}.
    The gate's rerun of a cell (kind "gate", key "rerun") adds its pairs to the same cell."""
    cells: dict[str, dict] = {}

    def add(rec: dict, source: str) -> None:
        spec, plain = rec.get("round_throughputs"), rec.get("baseline_round_throughputs")
        if not spec or not plain or rec.get("pairing") != "interleaved" or len(spec) != len(plain):
            return
        c = cells.setdefault(rec["cell"], {"spec": [], "plain": [], "sources": [], "server": rec.get("server"),
                                           "concurrency": rec.get("concurrency"), "category": rec.get("category")})
        c["spec"] += spec
        c["plain"] += plain
        c["sources"].append(f"{source}:{len(spec)}")

    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("kind") == "cell":
            add(rec, "cell")
        elif rec.get("kind") == "gate" and isinstance(rec.get("rerun"), dict):
            add(rec["rerun"], "gate-rerun")
    return cells


def geo(spec: list[float], plain: list[float]) -> float:
    return math.exp(statistics.mean(math.log(s / p) for s, p in zip(spec, plain)))


def decide_logs(order: list[float], stored: float, tol: Tolerance, seq: Sequential) -> tuple[Verdict, int]:
    """The sequential decision on log ratios taken in ``order`` (looks capped at len(order))."""
    looks = [n for n in seq.looks if n <= len(order)]
    verdict, n = Verdict.UNKNOWN, 0
    for n in looks:
        ratios = [math.exp(x) for x in order[:n]]
        iv = paired_ratio_ci(ratios, [1.0] * n, seq.look_confidence)
        verdict = judge(iv, stored, tol)
        if verdict is not Verdict.UNKNOWN:
            break
    return verdict, n


def rates(draw, stored: float, tol: Tolerance, seq: Sequential, trials: int, rng: random.Random,
          candidates: dict[str, float] = SHIFTS) -> dict:
    out: dict[str, float] = {}
    for key, factor in candidates.items():
        verdicts, ns = [], []
        for _ in range(trials):
            logs = [x + math.log(factor) for x in draw(rng)]
            v, n = decide_logs(logs, stored, tol, seq)
            verdicts.append(v)
            ns.append(n)
        out[key] = sum(v is Verdict.REGRESSED for v in verdicts) / trials
        out[key.replace("_rate", "") + "_unknown"] = sum(v is Verdict.UNKNOWN for v in verdicts) / trials
        out[key.replace("_rate", "") + "_mean_pairs"] = statistics.mean(ns)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cells", type=Path, help="cells.jsonl of the ref-gpu run")
    ap.add_argument("--second", type=Path, default=None, help="cells.jsonl of a later start-up (optional)")
    ap.add_argument("--matrix", type=Path, default=ROOT / "fixtures/matrices/ref-gpu.toml")
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--tolerances", type=float, nargs="*", default=[0.05],
                    help="speedup tolerances replayed besides the matrix's")
    ap.add_argument("--slowdowns", type=float, nargs="*", default=None,
                    help="planted slowdowns in percent (default 5 10 15 20)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    candidates = shifts(args.slowdowns)

    m = load_matrix(args.matrix)
    w = m.workload
    matrix_tol = m.tolerances["speedup"]
    tols = [Tolerance(r, matrix_tol.direction) for r in sorted({matrix_tol.rel, *args.tolerances}, reverse=True)]
    seq = Sequential(w.rounds, w.max_rounds, w.confidence)
    rng = random.Random(0)
    cells = load_pairs(args.cells)
    # A later start-up's cells add their pair noise (around their own mean) to the pools.
    later = load_pairs(args.second) if args.second is not None and args.second.is_file() else {}

    own = []
    for tol, (cid, c) in ((t, kv) for t in tols for kv in sorted(cells.items())):
        spec, plain = c["spec"], c["plain"]
        logs = [math.log(s / p) for s, p in zip(spec, plain)]
        stored = geo(spec, plain)
        row = {"tolerance": tol.rel, "cell": cid, "pairs": len(logs), "sources": c["sources"], "stored_speedup": stored,
               "paired_log_sd": statistics.stdev(logs) if len(logs) > 1 else None,
               "looks_possible": [n for n in seq.looks if n <= len(logs)],
               **rates(lambda r, logs=logs: r.sample(logs, len(logs)), stored, tol, seq,
                       args.trials if len(logs) > w.rounds else 1, rng, candidates)}
        own.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    pooled = []
    groups = {"all speculative": None, "ngram4+ngram8": {"ngram4", "ngram8"}}
    groups.update({name: {name} for name in sorted({c["server"] for c in cells.values()})})
    for tol, conc, (label, servers) in ((t, k, g) for t in tols
                                         for k in sorted({c["concurrency"] for c in cells.values()})
                                         for g in groups.items()):
        resid: list[float] = []
        for c in [*cells.values(), *later.values()]:
            if c["concurrency"] != conc or (servers is not None and c["server"] not in servers):
                continue
            logs = [math.log(s / p) for s, p in zip(c["spec"], c["plain"])]
            if len(logs) < 2:
                continue
            mu, k = statistics.mean(logs), math.sqrt(len(logs) / (len(logs) - 1))
            resid += [(x - mu) * k for x in logs]
        if len(resid) < w.max_rounds:
            continue
        row = {"tolerance": tol.rel, "concurrency": conc, "servers": label, "pool_pairs": len(resid),
               "pair_log_sd": statistics.stdev(resid),
               **rates(lambda r, resid=resid: r.sample(resid, w.max_rounds), 1.0, tol, seq, args.trials, rng,
                       candidates)}
        pooled.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    cross = []
    if args.second is not None and args.second.is_file():
        for cid, c in sorted(load_pairs(args.second).items()):
            if cid not in cells:
                continue
            first = cells[cid]
            stored = geo(first["spec"], first["plain"])
            logs = [math.log(s / p) for s, p in zip(c["spec"], c["plain"])]
            v, n = decide_logs(logs, stored, matrix_tol, seq)
            iv = paired_ratio_ci(c["spec"][:n], c["plain"][:n], seq.look_confidence)
            row = {"cell": cid, "stored_speedup_run1": stored, "run2_speedup": geo(c["spec"], c["plain"]),
                   "run2_pairs": len(logs), "verdict_replayed": v.value, "pairs_used": n,
                   "interval": [iv.low, iv.high], "bound": matrix_tol.bound(stored)}
            cross.append(row)
            print(json.dumps(row), flush=True)

    summary = {"matrix": m.name, "matrix_tolerance": matrix_tol.rel, "tolerances": [t.rel for t in tols],
               "confidence": w.confidence, "looks": list(seq.looks),
               "look_confidence": seq.look_confidence, "trials": args.trials, "own": own, "pooled": pooled,
               "cross_start_up": cross}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
