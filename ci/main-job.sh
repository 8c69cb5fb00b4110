#!/usr/bin/env bash
# The main job on the embedded default: set up, run the tiny CPU matrix (by default the coding
# category at c=1 on the plain and n-gram servers: SPECGUARD_CATEGORIES, SPECGUARD_CONCURRENCY and
# SPECGUARD_SERVERS pick others, "all" runs every one), print the table of cells (tok/s, speedup, acceptance length, verdict and what it was
# judged against) and write results/benchmark.json and results/report/. Extra arguments go to
# pytest (e.g. --update-baselines).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash ci/setup.sh
echo "setup: $(( $(date +%s) - t0 )) s"
py="${SPECGUARD_VENV:-.venv}/bin/python"
# The suite's own modules keep a bytecode cache (ci/setup.sh says why).
unset PYTHONDONTWRITEBYTECODE
mkdir -p results
categories=${SPECGUARD_CATEGORIES:-coding}
concurrency=${SPECGUARD_CONCURRENCY:-1}
# The servers whose tests run: by default the plain server and n-gram k=4. The self-draft server
# (self4, the acceptance pipeline's own check: every draft accepted) costs a third start and the
# slowest cell; the test command runs it, and SPECGUARD_SERVERS=all runs it here too.
servers=${SPECGUARD_SERVERS:-baseline,ngram4}
cat_args=()
if [ "$categories" != "all" ]; then cat_args+=(--categories "$categories"); fi
if [ "$concurrency" != "all" ]; then cat_args+=(--concurrency "$concurrency"); fi
if [ "$servers" != "all" ]; then cat_args+=(-k "${servers//,/ or }"); fi
status=0
t1=$(date +%s)
"$py" -m pytest -m cpu -p no:cacheprovider --benchmark-json results/benchmark.json \
  --results-dir results "${cat_args[@]}" "$@" || status=$?
echo "pytest: $(( $(date +%s) - t1 )) s, exit $status"
if [ -f results/benchmark.json ]; then
  "$py" -m specguard report results/benchmark.json --out results/report
fi
exit "$status"
