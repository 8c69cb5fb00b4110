"""How often does the paired verdict cry wolf, and how often does it catch a real slowdown?

    python benchmarks/power.py --pairs 16 --json docs/power/power.json

On the tiny CPU matrix's model, one cell (c=1, one category), with the suite's own code:
1. Partner check: the plain server alone for a few rounds, then the same with the n-gram server
   live and idle beside it (does an idle vLLM CPU server take time from a busy one?).
2. A pool of interleaved pairs (plain, spec | spec, plain | …, same prompts) for n-gram k=4, the
   configuration under test, then for n-gram k=2 (really slower), each with the plain server.
3. Replays of the suite's decision from those pools: each trial draws pairs without replacement,
   computes the paired speedup interval (specguard.judge.stats.paired_ratio_ci) at the look confidence of
   the sequential design (specguard.judge.decision.Sequential) and judges it against the stored figure
   (k=4's geometric-mean speedup over its whole pool) with the tolerance; while UNKNOWN, the next
   look's pairs are drawn, up to the cap.
   - false alarms: candidate = k=4 itself; the share of trials judged REGRESSED;
   - detection: k=2 (its true margin is printed); k=4's own pairs with the speculative side × 0.90
     (exactly 10% slower, the real pair noise) and × 0.95.
Pairs come from one session: drift between start-ups is not in these rates (``--baseline``
judges today's pool against a committed baseline file written by another start-up for that).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specguard.judge.decision import Sequential  # noqa: E402
from specguard.measure.load import round_prompts  # noqa: E402
from specguard.config.matrix import Cell, load_matrix  # noqa: E402
from specguard.serving.pool import ServerPool  # noqa: E402
from specguard.config.prompts import load_prompts  # noqa: E402
from specguard.measure.runner import pair_order, run_round  # noqa: E402
from specguard.judge.stats import paired_ratio_ci  # noqa: E402
from specguard.config.tolerance import Tolerance  # noqa: E402
from specguard.judge.verdict import Verdict, judge  # noqa: E402

KEY = "power"
SLOWDOWNS = (5, 10, 15, 20, 25, 30)   # planted: the speculative side's real pairs × (1 − pct/100)


def measure(pool: ServerPool, cell_of, prompts, max_tokens: int, plain, spec, n_pairs: int, label: str) -> dict:
    """n_pairs interleaved pairs of (plain, spec): their throughputs and wall time."""
    a, b = pool.pair(plain, spec)
    warm_up(a, cell_of(plain), prompts, max_tokens)
    warm_up(b, cell_of(spec), prompts, max_tokens)
    p_t, s_t = [], []
    t0 = time.monotonic()
    for i in range(n_pairs):
        def one(srv, cfg):
            return run_round(cell_of(cfg), srv, prompts, model=cfg.name, max_tokens=max_tokens, api_key=KEY,
                             request_timeout_s=600, ignore_eos=True).result.output_throughput
        if pair_order(i):
            p, s = one(a, plain), one(b, spec)
        else:
            s, p = one(b, spec), one(a, plain)
        p_t.append(p)
        s_t.append(s)
        print(f"{label} pair {i + 1}/{n_pairs}: plain {p:.2f}, {spec.name} {s:.2f} tok/s, ratio {s / p:.3f}", flush=True)
    return {"plain": p_t, "spec": s_t, "seconds_per_pair": (time.monotonic() - t0) / n_pairs}


def warm_up(server, cell, prompts, max_tokens, rel: float = 0.05, cap: int = 5) -> list[float]:
    tputs: list[float] = []
    while len(tputs) < cap:
        tputs.append(run_round(Cell(cell.id, cell.server, 1, cell.category), server, prompts[:2], model=cell.server.name,
                               max_tokens=max_tokens, api_key=KEY, request_timeout_s=600,
                               ignore_eos=True).result.output_throughput)
        if len(tputs) >= 2 and abs(tputs[-1] / tputs[-2] - 1) <= rel:
            break
    return tputs


def partner_check(pool: ServerPool, cell_of, prompts, max_tokens, plain, partner, n: int) -> dict:
    """Plain throughput alone, then with ``partner`` live and idle (same prompts), n rounds each."""
    srv = pool.get(plain)
    warm_up(srv, cell_of(plain), prompts, max_tokens)

    def rounds() -> list[float]:
        return [run_round(cell_of(plain), srv, prompts, model=plain.name, max_tokens=max_tokens, api_key=KEY,
                          request_timeout_s=600, ignore_eos=True).result.output_throughput for _ in range(n)]
    alone = rounds()
    pool.get(partner, keep=(plain,))
    beside = rounds()
    ratio = statistics.mean(beside) / statistics.mean(alone)
    print(f"partner check: plain alone {[round(x, 2) for x in alone]}, with {partner.name} idle "
          f"{[round(x, 2) for x in beside]}: ratio of means {ratio:.3f}", flush=True)
    return {"alone": alone, "partner_idle": beside, "ratio_of_means": ratio}


def decide(rng: random.Random, spec: list[float], plain: list[float], stored: float, tol: Tolerance,
           seq: Sequential) -> tuple[Verdict, int]:
    order = rng.sample(range(len(spec)), len(spec))
    for n in seq.looks:
        idx = order[:n]
        iv = paired_ratio_ci([spec[i] for i in idx], [plain[i] for i in idx], seq.look_confidence)
        verdict = judge(iv, stored, tol)
        if verdict is not Verdict.UNKNOWN:
            return verdict, n
    return verdict, seq.looks[-1]


def geo_ratio(spec: list[float], plain: list[float]) -> float:
    return math.exp(statistics.mean(math.log(s / p) for s, p in zip(spec, plain)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", type=Path, default=ROOT / "fixtures/matrices/tiny-cpu.toml")
    ap.add_argument("--category", default="coding")
    ap.add_argument("--pairs", type=int, default=16, help="pairs measured per candidate")
    ap.add_argument("--partner-rounds", type=int, default=4)
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--tolerances", type=float, nargs="*", default=[0.05])
    ap.add_argument("--baseline", type=Path, default=ROOT / "baselines/cpu-amd-epyc-2c/tiny-cpu.json")
    ap.add_argument("--pools", type=Path, default=None, help="replay pools saved by an earlier run")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--schedules", default="3-6,4-8,6-12,8-16",
                    help="look schedules ROUNDS-MAX_ROUNDS to replay, comma-separated (plus half and all of the pool)")
    args = ap.parse_args()

    m = load_matrix(args.matrix)
    w = m.workload
    tol = m.tolerances["speedup"]
    prompts = round_prompts(load_prompts(w.prompts, base_dir=m.path.parent, categories=[args.category]),
                            w.requests_per_round(1))
    plain, ngram4 = m.server("baseline"), m.server("ngram4")
    spec2 = {**(ngram4.spec or {}), "num_speculative_tokens": 2}
    ngram2 = dataclasses.replace(ngram4, name="ngram2", speculative_config=json.dumps(spec2, sort_keys=True),
                                 min_speedup=())

    def cell_of(cfg):
        return Cell(f"{m.id_prefix}-{cfg.name}-c1-{args.category}", cfg, 1, args.category)

    t_all = time.monotonic()
    if args.pools is not None:
        saved = json.loads(args.pools.read_text())
        pools, partner = saved["pools"], saved.get("partner_check")
    else:
        pool = ServerPool(log_dir=Path("/tmp/specguard-power-logs"), api_key=KEY, capacity=2)
        try:
            partner = partner_check(pool, cell_of, prompts, w.max_tokens, plain, ngram4, args.partner_rounds)
            pools = {"ngram4": measure(pool, cell_of, prompts, w.max_tokens, plain, ngram4, args.pairs, "k=4")}
            if args.json:
                args.json.with_suffix(".pools.json").write_text(json.dumps({"pools": pools, "partner_check": partner}))
            pools["ngram2"] = measure(pool, cell_of, prompts, w.max_tokens, plain, ngram2, args.pairs, "k=2")
            starts = [{"name": s.name, "startup_s": s.startup_s} for s in pool.starts]
        finally:
            pool.stop()
        if args.json:
            args.json.with_suffix(".pools.json").write_text(json.dumps({"pools": pools, "partner_check": partner,
                                                                        "starts": starts}))
    p4, s4 = pools["ngram4"]["plain"], pools["ngram4"]["spec"]
    stored = geo_ratio(s4, p4)
    slower = geo_ratio(pools["ngram2"]["spec"], pools["ngram2"]["plain"])
    sd = statistics.stdev(math.log(s / p) for s, p in zip(s4, p4))
    candidates = {
        "ngram4": (s4, p4, "false_alarm_rate"),
        "ngram2": (pools["ngram2"]["spec"], pools["ngram2"]["plain"], "detection_rate_ngram2"),
    }
    for pct in SLOWDOWNS:
        candidates[f"ngram4x{1 - pct / 100:.2f}"] = ([x * (1 - pct / 100) for x in s4], p4, f"detection_rate_{pct}pct")
    pair_s = {k: pools[k.split("x")[0]]["seconds_per_pair"] for k in candidates}
    rng = random.Random(0)
    results = []
    n_max = len(s4)
    for rel in sorted({tol.rel, *args.tolerances}):
        t = Tolerance(rel, tol.direction)
        schedules = [tuple(int(x) for x in item.split("-")) for item in args.schedules.split(",") if item]
        for rounds, max_rounds in (*schedules, (n_max // 2, n_max), (n_max, n_max)):
            if max_rounds > n_max:
                continue
            seq = Sequential(rounds, max_rounds, w.confidence)
            row = {"tolerance": rel, "rounds": rounds, "max_rounds": max_rounds,
                   "look_confidence": seq.look_confidence}
            for name, (spec, base, key) in candidates.items():
                outcomes = [decide(rng, spec, base, stored, t, seq) for _ in range(args.trials)]
                row[key] = sum(v is Verdict.REGRESSED for v, _ in outcomes) / args.trials
                row[f"{name}_unknown_rate"] = sum(v is Verdict.UNKNOWN for v, _ in outcomes) / args.trials
                row[f"{name}_mean_pairs"] = statistics.mean(n for _, n in outcomes)
                row[f"{name}_seconds"] = row[f"{name}_mean_pairs"] * pair_s[name]
            caught = [pct for pct in SLOWDOWNS if row[f"detection_rate_{pct}pct"] >= 0.8]
            row["smallest_slowdown_caught_80pct"] = min(caught) if caught else None
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith(("_unknown_rate", "_seconds"))}), flush=True)
    cross = None
    if args.baseline.is_file():
        cell = f"{m.id_prefix}-ngram4-c1-{args.category}"
        entry = json.loads(args.baseline.read_text()).get("cells", {}).get(cell, {}).get("metrics", {}).get("speedup")
        if entry is not None:
            seq = Sequential(w.rounds, w.max_rounds, w.confidence)
            outs = [decide(rng, s4, p4, entry["value"], tol, seq) for _ in range(args.trials)]
            cross = {"cell": cell, "baseline_file": str(args.baseline.relative_to(ROOT)) if args.baseline.is_relative_to(ROOT)
                     else str(args.baseline), "stored_speedup": entry["value"], "today": stored, "tolerance": tol.rel,
                     "verdicts": {v.name: sum(o is v for o, _ in outs) / args.trials for v in Verdict}}
    summary = {"stored_speedup_ngram4": stored, "true_speedup_ngram2": slower, "ngram2_margin": 1 - slower / stored,
               "paired_log_sd": sd, "plain_cv": statistics.stdev(p4) / statistics.mean(p4),
               "matrix_tolerance": tol.rel, "confidence": w.confidence, "trials": args.trials, "pairs": n_max,
               "category": args.category, "partner_check": partner, "seconds_per_pair": pair_s,
               "results": results, "cross_session": cross, "wall_s": time.monotonic() - t_all, "pools": pools}
    print(f"k=4 speedup {stored:.3f} (paired log SD {sd:.3f}); k=2 {slower:.3f} ({summary['ngram2_margin']:.1%} below); "
          f"matrix tolerance {tol.rel:.0%}; against the committed baseline: {json.dumps(cross)}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
