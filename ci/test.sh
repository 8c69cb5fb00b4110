#!/usr/bin/env bash
# The tests: unit and Hypothesis tests (on both cores, pytest-xdist), then real vLLM servers on the
# embedded default — the reliability tests, the performance cells of the categories and
# concurrencies below (default: coding at c=1) for every server config, paired and judged, the
# gate's own checks (an identical rerun, a planted acceptance drop, a planted slowdown) and the
# lossless tests (float32 strict, bfloat16 diagnostic), and the suite's own sharded and pytest-xdist
# runs on the live servers. Every server starts once and is shared by all its tests. Extra
# arguments go to the second pytest; the exit status is the first failure's.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash ci/setup.sh
echo "setup: $(( $(date +%s) - t0 )) s"
py="${SPECGUARD_VENV:-.venv}/bin/python"
# The suite's own modules and the inner pytests' imports keep a bytecode cache (ci/setup.sh says why).
unset PYTHONDONTWRITEBYTECODE
mkdir -p results
status=0
t1=$(date +%s)
"$py" -m pytest -p no:cacheprovider -n 2 tests/unit || status=$?
echo "unit tests: $(( $(date +%s) - t1 )) s, exit $status"
t2=$(date +%s)
code=0
"$py" -m pytest -p no:cacheprovider --ignore tests/unit \
  --categories "${SPECGUARD_TEST_CATEGORIES:-coding}" --concurrency "${SPECGUARD_TEST_CONCURRENCY:-1}" \
  --benchmark-json results/test-benchmark.json --results-dir results/test "$@" || code=$?
echo "server tests: $(( $(date +%s) - t2 )) s, exit $code"
[ "$status" -ne 0 ] || status=$code
exit "$status"
