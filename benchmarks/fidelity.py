"""Does the suite measure what `vllm bench serve` measures? Same server, same prompts, interleaved.

    python benchmarks/fidelity.py --matrix fixtures/matrices/tiny-gpu.toml --server baseline \
        --concurrency 1 16 --repeats 4 --num-prompts 64 --max-tokens 256 --json fidelity.json

One server is started from the matrix entry; then, for each concurrency, the suite's load
(`specguard.measure.load.run_load`) and `vllm bench serve` (openai-chat backend, the same prompts as a
custom dataset, chat template applied once by the server, `--ignore-eos` and the same max tokens on
both sides so every request yields exactly that many tokens) take turns, `--repeats` times each.
The ratio suite/bench of `output_throughput` is reported per pair, with its median and spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specguard.measure.load import LoadSpec, round_prompts, run_load  # noqa: E402
from specguard.config.matrix import load_matrix  # noqa: E402
from specguard.serving.model import resolve_model  # noqa: E402
from specguard.config.prompts import Prompt, load_prompts  # noqa: E402
from specguard.serving.server import VLLMServer  # noqa: E402


def bench_serve(url: str, model_name: str, tokenizer: str, dataset: Path, *, concurrency: int, num_prompts: int,
                max_tokens: int, api_key: str, out_dir: Path, tag: str) -> dict:
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve",
           "--backend", "openai-chat", "--base-url", url, "--endpoint", "/v1/chat/completions",
           "--model", model_name, "--tokenizer", tokenizer,
           "--dataset-name", "custom", "--dataset-path", str(dataset), "--skip-chat-template",
           "--disable-shuffle", "--custom-output-len", str(max_tokens), "--ignore-eos",
           "--num-prompts", str(num_prompts), "--max-concurrency", str(concurrency),
           "--request-rate", "inf", "--temperature", "0", "--num-warmups", "0",
           "--save-result", "--result-dir", str(out_dir), "--result-filename", f"{tag}.json"]
    env = {"OPENAI_API_KEY": api_key, **{k: v for k, v in __import__("os").environ.items()}}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads((out_dir / f"{tag}.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", type=Path, default=ROOT / "fixtures/matrices/tiny-gpu.toml")
    ap.add_argument("--server", default="baseline", help="server entry of the matrix. Default: %(default)s")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    matrix = load_matrix(args.matrix)
    config = matrix.server(args.server)
    prompts = load_prompts(matrix.workload.prompts, base_dir=matrix.path.parent)
    # First turns only: bench serve's custom dataset sends one user message per request.
    single = round_prompts([Prompt(p.id, p.category, p.turns[:1]) for p in prompts], args.num_prompts)
    api_key = "fidelity-" + str(int(time.time()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, VLLMServer(config, log_dir=Path(tmp), api_key=api_key) as server:
        dataset = Path(tmp) / "prompts.jsonl"
        dataset.write_text("".join(json.dumps({"prompt": p.turns[0]}) + "\n" for p in single))
        tokenizer = resolve_model(config.model)
        print(f"server {config.name} up in {server.startup_s:.1f} s at {server.base_url}", flush=True)
        for c in args.concurrency:
            spec = LoadSpec(server.base_url, config.name, c, args.max_tokens, api_key=api_key, ignore_eos=True)
            asyncio.run(run_load(spec, single[: max(c, 4)]))   # warm-up, not measured
            for r in range(args.repeats):
                ours = asyncio.run(run_load(spec, single))
                if ours.failed:
                    raise RuntimeError(f"suite client: {ours.errors()[:3]}")
                bench = bench_serve(server.base_url, config.name, tokenizer, dataset, concurrency=c,
                                    num_prompts=len(single), max_tokens=args.max_tokens, api_key=api_key,
                                    out_dir=Path(tmp), tag=f"c{c}-r{r}")
                row = {"concurrency": c, "repeat": r, "suite_tok_s": ours.output_throughput,
                       "suite_tokens": ours.output_tokens, "bench_tok_s": bench["output_throughput"],
                       "bench_tokens": bench.get("total_output_tokens"),
                       "ratio": ours.output_throughput / bench["output_throughput"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for c in args.concurrency:
        ratios = [r["ratio"] for r in rows if r["concurrency"] == c]
        summary[str(c)] = {"median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
                           "max_ratio": max(ratios), "pairs": len(ratios)}
        print(f"c={c}: suite/bench output_throughput ratio median {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}] over {len(ratios)} interleaved pairs")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary, "server": config.name,
                                         "num_prompts": len(single), "max_tokens": args.max_tokens}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
