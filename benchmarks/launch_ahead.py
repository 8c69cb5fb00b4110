"""How long until a CPU matrix's plain, n-gram and self-draft servers have all been up: the pair
launched together and the third started after it (the pool's way without launching ahead), against
all three launched together. Variants alternate, so a VM whose speed drifts weighs on both alike:

    python benchmarks/launch_ahead.py --repeat 2 --out docs/levers/launch-ahead.json

Each server gets the core the suite gives it (plain: the first, speculative: the second). Every
start is timed from launch to the first healthy answer; "all up" is the wall time from the first
launch until the last server is healthy. Nothing else runs meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specguard.config.matrix import load_matrix  # noqa: E402
from specguard.plugin.distributed import pair_cores_env  # noqa: E402
from specguard.serving.server import VLLMServer  # noqa: E402
from specguard.store.baselines import cpu_model_name  # noqa: E402


def launch(configs, log_dir: Path, label: str, env: dict) -> tuple[list[VLLMServer], dict[str, float]]:
    servers, t0s, times = [], {}, {}
    for c in configs:
        s = VLLMServer(c, log_dir=log_dir, label=label, extra_env=env[c.name])
        t0s[c.name] = time.monotonic()
        s.launch()
        servers.append(s)
    for s in servers:
        s.wait_ready()
        times[s.config.name] = round(time.monotonic() - t0s[s.config.name], 1)
    return servers, times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matrix", type=Path, default=ROOT / "fixtures" / "matrices" / "tiny-cpu.toml")
    ap.add_argument("--servers", default="baseline,ngram4,self4", help="plain, speculative, launched-ahead")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    matrix = load_matrix(args.matrix)
    plain, spec, third = (matrix.server(n) for n in args.servers.split(","))
    cores = sorted(os.sched_getaffinity(0))
    env = {c.name: pair_cores_env(c.is_speculative, cores) for c in (plain, spec, third)}
    log_dir = Path(args.out.parent if args.out else Path("benchmark-logs")) / "launch-ahead-logs"
    out: dict[str, list[dict]] = {"pair-then-third": [], "three-together": []}
    for _ in range(args.repeat):
        for variant in ("pair-then-third", "three-together"):
            t0 = time.monotonic()
            if variant == "three-together":
                live, times = launch((plain, spec, third), log_dir, variant, env)
            else:
                live, times = launch((plain, spec), log_dir, variant, env)
                more, t3 = launch((third,), log_dir, variant, env)
                live, times = live + more, times | t3
            all_up = round(time.monotonic() - t0, 1)
            for s in live:
                s.stop()
            out[variant].append({"all_up_s": all_up, "start_s": times})
            print(f"{variant}: all up after {all_up} s {times}", flush=True)
    if args.out:
        record = {"cpu": cpu_model_name(), "cores": len(cores), **out}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
