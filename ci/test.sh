#!/usr/bin/env bash
# The tests: unit and Hypothesis tests, then real vLLM servers on the embedded default — one
# performance cell per category below for every server config, and the lossless tests (float32
# strict, bfloat16 diagnostic), and the reliability tests. Every server starts once and is shared
# by all its tests. (`-m distributed`, the pytest-xdist run of the suite itself, is not in it yet.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
py="${SPECGUARD_VENV:-.venv}/bin/python"
mkdir -p results
"$py" -m pytest -p no:cacheprovider -m "not distributed" --categories "${SPECGUARD_TEST_CATEGORIES:-coding,math}" \
  --benchmark-json results/test-benchmark.json --results-dir results/test "$@"
