#!/usr/bin/env bash
# The tests: unit and Hypothesis tests, then real vLLM servers on the embedded default — the
# reliability tests, the performance cells of the categories and concurrencies below (default:
# coding at c=1) for every server config, paired and judged, the gate's own checks (an identical
# rerun, a planted acceptance drop, a planted slowdown) and the lossless tests (float32 strict,
# bfloat16 diagnostic). Every server starts once and is shared by all its tests. (`-m distributed`,
# the pytest-xdist run of the suite itself, is not in it yet.)
#
# First, two pytest runs side by side: the unit tests, and the reliability cases that start one
# server at a time (`-m one_server`): a server start is mostly single-threaded imports, so the other
# core is free. None of them measures a speed. Then the session with the performance cells, alone
# on the machine. Extra arguments go to that last pytest; the exit status is the first failure's.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash ci/setup.sh
echo "setup: $(( $(date +%s) - t0 )) s"
py="${SPECGUARD_VENV:-.venv}/bin/python"
mkdir -p results/test
t1=$(date +%s)
unit=0 single=0
"$py" -m pytest -p no:cacheprovider tests/unit > results/test/unit.log 2>&1 &
unit_pid=$!
"$py" -m pytest -p no:cacheprovider -m one_server tests/test_reliability.py || single=$?
wait "$unit_pid" || unit=$?
cat results/test/unit.log
echo "unit tests beside the one-server reliability cases: $(( $(date +%s) - t1 )) s, exit $unit and $single"
t2=$(date +%s)
code=0
"$py" -m pytest -p no:cacheprovider -m "not distributed and not one_server" --ignore tests/unit \
  --categories "${SPECGUARD_TEST_CATEGORIES:-coding}" --concurrency "${SPECGUARD_TEST_CONCURRENCY:-1}" \
  --benchmark-json results/test-benchmark.json --results-dir results/test "$@" || code=$?
echo "server tests: $(( $(date +%s) - t2 )) s, exit $code"
status=$unit
[ "$status" -ne 0 ] || status=$single
[ "$status" -ne 0 ] || status=$code
exit "$status"
