#!/usr/bin/env bash
# One GPU run of the tiny GPU matrix, for a machine where a CUDA build of vLLM is already
# importable by python3 (e.g. from a folder on PYTHONPATH): the cells, the lossless tests, a
# baseline file for this GPU, then the fidelity benchmark (the suite vs `vllm bench serve`).
#   bash ci/gpu-run.sh OUTDIR [extra pytest args]
# FIDELITY_REPEATS (default 3) sets the fidelity benchmark's interleaved pairs; 0 skips it.
# OUTDIR receives benchmark.json, lossless.json, cells.jsonl, pytest.log, fidelity.json and
# baselines/<profile>/tiny-gpu.json; OUTDIR/DONE marks the end.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: ci/gpu-run.sh OUTDIR}; shift
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
t0=$(date +%s)
python3 -m specguard model smollm2-135m-instruct > "$out/model.log" 2>&1
python3 -m pytest -m "gpu or lossless" -p no:cacheprovider --matrix fixtures/matrices/tiny-gpu.toml \
  --benchmark-json "$out/benchmark.json" --results-dir "$out/results" --baseline-dir "$out/baselines" \
  --update-baselines "$@" > "$out/pytest.log" 2>&1
echo "pytest exit $? after $(( $(date +%s) - t0 )) s" >> "$out/timing.log"
cp "$out/results/cells.jsonl" "$out/cells.jsonl" 2>/dev/null
repeats=${FIDELITY_REPEATS:-3}
if [ "$repeats" -gt 0 ]; then
  python3 benchmarks/fidelity.py --matrix fixtures/matrices/tiny-gpu.toml --server baseline --concurrency 1 16 \
    --repeats "$repeats" --num-prompts 32 --max-tokens 256 --json "$out/fidelity.json" > "$out/fidelity.log" 2>&1
  echo "fidelity exit $? after $(( $(date +%s) - t0 )) s" >> "$out/timing.log"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$out/timing.log" 2>&1
touch "$out/DONE"
