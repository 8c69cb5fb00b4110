"""How often does the verdict cry wolf, and how often does it catch a real slowdown?

    python benchmarks/power.py --rounds-pool 16 --json power.json

Measures, on the tiny CPU matrix's model, a pool of rounds for one cell (c=1, one category) on
three servers: plain, n-gram k=4 (the configuration under test) and n-gram k=2 (really slower).
Then replays the suite's decision many times from that pool: each trial draws R rounds of the
plain server and R of the candidate (without replacement), computes the speedup interval exactly
as the suite does (specguard.stats.ratio_ci), judges it against the stored figure (k=4's speedup
from the whole pool) with the matrix's tolerance, and, like the suite, draws more rounds while the
verdict is UNKNOWN, up to the cap.
- false alarms: candidate = k=4 itself; the share of trials judged REGRESSED.
- power: candidate = k=2; the share judged REGRESSED (its true margin is printed beside it); and
  candidate = k=4's own rounds times 0.90, a slowdown of exactly 10% with the real round noise.
Trials reuse rounds of one session, so drift between sessions is not in these rates.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specguard.load import LoadSpec, round_prompts, run_load  # noqa: E402
from specguard.matrix import load_matrix  # noqa: E402
from specguard.prompts import load_prompts  # noqa: E402
from specguard.server import VLLMServer  # noqa: E402
from specguard.stats import ratio_ci  # noqa: E402
from specguard.tolerance import Tolerance  # noqa: E402
from specguard.verdict import Verdict, judge  # noqa: E402


def pool_of_rounds(config, prompts, n: int, max_tokens: int, log_dir: Path) -> tuple[list[float], float, float]:
    """(throughput per round, start-up seconds, seconds per round)."""
    with VLLMServer(config, log_dir=log_dir, api_key="power") as server:
        spec = LoadSpec(server.base_url, config.name, 1, max_tokens, api_key="power")
        asyncio.run(run_load(spec, prompts[:1]))
        t0 = time.monotonic()
        rounds = [asyncio.run(run_load(spec, prompts)).output_throughput for _ in range(n)]
        return rounds, server.startup_s or 0.0, (time.monotonic() - t0) / n


def decide(rng: random.Random, cand: list[float], base: list[float], stored: float, tol: Tolerance,
           rounds: int, max_rounds: int) -> tuple[Verdict, int]:
    c, b = rng.sample(cand, len(cand)), rng.sample(base, len(base))
    n = rounds
    while True:
        verdict = judge(ratio_ci(c[:n], b[:n]), stored, tol)
        if verdict is not Verdict.UNKNOWN or n >= max_rounds:
            return verdict, n
        n += 1


def cross_session(args, m, pools, base, tol, rounds, max_rounds, rng) -> dict | None:
    """Today's k=4 pool judged against the speedup stored in a committed baseline file (another
    session, another day): the false-alarm rate that includes the machine's drift."""
    if args.baseline is None or not args.baseline.is_file():
        return None
    cell = f"{m.id_prefix}-ngram4-c1-{args.category}"
    stored = json.loads(args.baseline.read_text()).get("cells", {}).get(cell, {}).get("metrics", {}).get("speedup")
    if stored is None:
        return None
    outcomes = [decide(rng, pools["ngram4"], base, stored["value"], tol, rounds, max_rounds) for _ in range(args.trials)]
    return {"cell": cell, "baseline_file": str(args.baseline.relative_to(ROOT)) if args.baseline.is_relative_to(ROOT)
            else str(args.baseline), "stored_speedup": stored["value"], "tolerance": tol.rel, "rounds": rounds,
            "verdicts": {v.name: sum(o is v for o, _ in outcomes) / args.trials for v in Verdict}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", type=Path, default=ROOT / "fixtures/matrices/tiny-cpu.toml")
    ap.add_argument("--category", default="coding")
    ap.add_argument("--rounds-pool", type=int, default=16)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--tolerances", type=float, nargs="*", default=[0.05],
                    help="speedup tolerances to replay besides the matrix's own (fractions)")
    ap.add_argument("--max-rounds", type=int, default=None, help="the cap on rounds (default: the matrix's)")
    ap.add_argument("--baseline", type=Path, default=ROOT / "baselines/cpu-amd-epyc-2c/tiny-cpu.json",
                    help="a committed baseline file: today's pools are also judged against its figure")
    ap.add_argument("--pools", type=Path, default=None,
                    help="replay the pools saved by an earlier run (its --json name with .pools.json)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    m = load_matrix(args.matrix)
    w = m.workload
    tol = m.tolerances["speedup"]
    prompts = round_prompts(load_prompts(w.prompts, base_dir=m.path.parent, categories=[args.category]),
                            w.num_prompts)
    ngram4 = m.server("ngram4")
    spec2 = {**(ngram4.spec or {}), "num_speculative_tokens": 2}
    ngram2 = dataclasses.replace(ngram4, name="ngram2", speculative_config=json.dumps(spec2, sort_keys=True))
    t_all = time.monotonic()
    pools, info = {}, {}
    log_dir = Path("/tmp/specguard-power-logs")
    if args.pools is not None:   # replay pools measured earlier
        saved = json.loads(args.pools.read_text())
        pools, info = saved["pools"], saved["servers"]
    else:
        for cfg in (m.server("baseline"), ngram4, ngram2):
            pools[cfg.name], startup, per_round = pool_of_rounds(cfg, prompts, args.rounds_pool, w.max_tokens, log_dir)
            info[cfg.name] = {"startup_s": startup, "seconds_per_round": per_round}
            print(f"{cfg.name}: start {startup:.0f} s, {per_round:.1f} s/round, "
                  f"tok/s {[round(x, 1) for x in pools[cfg.name]]}", flush=True)
            if args.json:   # the measured rounds survive a crash of the replay
                args.json.with_suffix(".pools.json").write_text(json.dumps({"pools": pools, "servers": info}))
    base = pools["baseline"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    stored = mean(pools["ngram4"]) / mean(base)
    slower = mean(pools["ngram2"]) / mean(base)
    pools["ngram4x0.9"] = [x * 0.9 for x in pools["ngram4"]]
    max_rounds = args.max_rounds or w.max_rounds
    rng = random.Random(0)
    results = []
    for rel in sorted({tol.rel, *args.tolerances}):
        t = Tolerance(rel, tol.direction)
        for rounds in range(2, max_rounds + 1):
            row = {"tolerance": rel, "rounds": rounds, "max_rounds": max_rounds}
            for name, key in (("ngram4", "false_alarm_rate"), ("ngram2", "detection_rate"),
                              ("ngram4x0.9", "detection_rate_10pct")):
                outcomes = [decide(rng, pools[name], base, stored, t, rounds, max_rounds) for _ in range(args.trials)]
                row[key] = sum(v is Verdict.REGRESSED for v, _ in outcomes) / args.trials
                row[f"{name}_unknown_rate"] = sum(v is Verdict.UNKNOWN for v, _ in outcomes) / args.trials
                row[f"{name}_mean_rounds"] = mean([n for _, n in outcomes])
                # both servers run that many rounds; the start-ups are paid once per night either way
                row[f"{name}_seconds"] = row[f"{name}_mean_rounds"] * (info[name.split("x")[0]]["seconds_per_round"]
                                                                     + info["baseline"]["seconds_per_round"])
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = {"stored_speedup_ngram4": stored, "true_speedup_ngram2": slower,
               "ngram2_margin_vs_stored": 1 - slower / stored, "matrix_tolerance": tol.rel, "trials": args.trials,
               "pool_rounds": args.rounds_pool, "category": args.category, "servers": info, "results": results,
               "cross_session": cross_session(args, m, pools, base, tol, w.rounds, max_rounds, rng),
               "wall_s": time.monotonic() - t_all, "pools": pools}
    print(f"stored speedup (k=4) {stored:.3f}; k=2 speedup {slower:.3f} ({summary['ngram2_margin_vs_stored']:.1%} "
          f"below); matrix tolerance {tol.rel:.0%}")
    print(f"against the committed baseline: {json.dumps(summary['cross_session'])}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
