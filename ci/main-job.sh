#!/usr/bin/env bash
# The main job on the embedded default: set up, run every cell of the tiny CPU matrix, print the
# table of cells (tok/s, speedup, acceptance length, verdict) and write results/benchmark.json.
# Extra arguments go to pytest (e.g. --update-baselines, --categories coding,math).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
py="${SPECGUARD_VENV:-.venv}/bin/python"
mkdir -p results
status=0
"$py" -m pytest -m cpu -p no:cacheprovider --benchmark-json results/benchmark.json \
  --results-dir results "$@" || status=$?
if [ -f results/benchmark.json ]; then
  "$py" -m specguard report results/benchmark.json --out results/report || true
fi
exit "$status"
