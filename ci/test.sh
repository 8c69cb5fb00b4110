#!/usr/bin/env bash
# The tests: unit and Hypothesis tests, then real vLLM servers on the embedded default — the
# performance cells of the categories and concurrencies below (default: coding at c=1) for every
# server config, paired and judged, the gate's own checks (an identical rerun, a planted acceptance drop, a planted
# slowdown), the lossless tests (float32 strict, bfloat16 diagnostic), and the reliability tests.
# Every server starts once and is shared by all its tests. (`-m distributed`, the pytest-xdist run
# of the suite itself, is not in it yet.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
py="${SPECGUARD_VENV:-.venv}/bin/python"
mkdir -p results
"$py" -m pytest -p no:cacheprovider -m "not distributed" --categories "${SPECGUARD_TEST_CATEGORIES:-coding}" \
  --concurrency "${SPECGUARD_TEST_CONCURRENCY:-1}" \
  --benchmark-json results/test-benchmark.json --results-dir results/test "$@"
