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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", type=Path, default=ROOT / "fixtures/matrices/tiny-cpu.toml")
    ap.add_argument("--category", default="coding")
    ap.add_argument("--rounds-pool", type=int, default=16)
    ap.add_argument("--trials", type=int, default=2000)
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
    for cfg in (m.server("baseline"), ngram4, ngram2):
        pools[cfg.name], startup, per_round = pool_of_rounds(cfg, prompts, args.rounds_pool, w.max_tokens, log_dir)
        info[cfg.name] = {"startup_s": startup, "seconds_per_round": per_round}
        print(f"{cfg.name}: start {startup:.0f} s, {per_round:.1f} s/round, tok/s {[round(x, 1) for x in pools[cfg.name]]}",
              flush=True)
    base = pools["baseline"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    stored = mean(pools["ngram4"]) / mean(base)
    slower = mean(pools["ngram2"]) / mean(base)
    pools["ngram4x0.9"] = [x * 0.9 for x in pools["ngram4"]]
    rng = random.Random(0)
    results = []
    for rounds in (2, 3, 4, 5):
        row = {"rounds": rounds, "max_rounds": w.max_rounds}
        for name, key in (("ngram4", "false_alarm_rate"), ("ngram2", "detection_rate"),
                          ("ngram4x0.9", "detection_rate_10pct")):
            outcomes = [decide(rng, pools[name], base, stored, tol, rounds, w.max_rounds) for _ in range(args.trials)]
            row[key] = sum(v is Verdict.REGRESSED for v, _ in outcomes) / args.trials
            row[f"{name}_unknown_rate"] = sum(v is Verdict.UNKNOWN for v, _ in outcomes) / args.trials
            row[f"{name}_mean_rounds"] = mean([n for _, n in outcomes])
            row[f"{name}_seconds"] = row[f"{name}_mean_rounds"] * (info[name.split("x")[0]]["seconds_per_round"]
                                                                 + info["baseline"]["seconds_per_round"])
        results.append(row)
        print(json.dumps(row), flush=True)
    summary = {"stored_speedup_ngram4": stored, "true_speedup_ngram2": slower,
               "ngram2_margin_vs_stored": 1 - slower / stored, "tolerance": tol.rel, "trials": args.trials,
               "pool_rounds": args.rounds_pool, "servers": info, "results": results,
               "wall_s": time.monotonic() - t_all, "pools": pools}
    print(f"stored speedup (k=4) {stored:.3f}; k=2 speedup {slower:.3f} ({summary['ngram2_margin_vs_stored']:.1%} "
          f"below); tolerance {tol.rel:.0%}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
