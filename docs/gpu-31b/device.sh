#!/usr/bin/env bash
# What ran on the lent H200 for docs/gpu-31b/ (vLLM 0.25.0 staged by ../shared/gpu/stage.sh and
# installed by its install-on-device.sh). From the project root on the device:
#   bash docs/gpu-31b/device.sh go     # background: build the models, run the matrix (writes the baseline)
#   bash docs/gpu-31b/device.sh go2    # background: a second start-up of baseline + ngram4, judged
#   bash docs/gpu-31b/device.sh poll S # wait up to S seconds, report; packs /tmp/w into $OUT
# The ~63 GB model is written sparse (specguard.serving.inflate.write_sparse): 1.2 GB of disk.
set -u
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1 \
  SPECGUARD_SMOLLM2_GGUF=/tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf
export SPECGUARD_CACHE=/tmp/sgcache
W=/tmp/w
M=fixtures/matrices/ref-gpu-31b.toml
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
case "${1:-}" in
  go|go2)
    mkdir -p $W && cp "$0" $W/device.sh && rm -f $W/done
    step=all; [ "$1" = go2 ] && step=run2
    setsid nohup bash $W/device.sh $step >> $W/driver.log 2>&1 < /dev/null &
    echo "driver pid $!" ;;
  run2)  # a second start-up: baseline and ngram4 at c=1 judged against the baseline run 1 wrote
    stamp run2
    python3 -m pytest -m gpu -p no:cacheprovider --ignore=tests/unit --matrix $M --concurrency 1 -k "baseline or ngram4" \
      --baseline-dir $W/baselines --results-dir=$W/results2 --benchmark-json=$W/benchmark2.json > $W/pytest2.log 2>&1
    echo "run2 rc=$?" | tee $W/run2.rc; stamp run2 done; touch $W/done ;;
  all)
    stamp start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    df -h /dev/shm /tmp | tee $W/df.txt; echo "cache: $SPECGUARD_CACHE"
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
    t0=$(date +%s.%N); python3 -m specguard model smollm2-135m-instruct
    t1=$(date +%s.%N); python3 -m specguard model smollm2-135m-as-31b
    t2=$(date +%s.%N); du -sh $SPECGUARD_CACHE/models/*; du -sh --apparent-size $SPECGUARD_CACHE/models/*
    python3 -c "print(f'model build: 135m {$t1-$t0:.1f} s, as-31b {$t2-$t1:.1f} s')" | tee $W/model-times.txt
    stamp run1
    python3 -m pytest -m "gpu or gate" -p no:cacheprovider --ignore=tests/unit --matrix $M --update-baselines \
      --baseline-dir $W/baselines --results-dir=$W/results --benchmark-json=$W/benchmark.json > $W/pytest.log 2>&1
    echo "run1 rc=$?" | tee $W/run1.rc; stamp run1 done; touch $W/done ;;
  pack)
    [ -n "${OUT:-}" ] || exit 0
    (cd $W && [ -d results/logs ] && grep -hiE "cudagraph|cuda graph|enforce|eager|compil|draft|speculative|model loading|kv cache|available|error|runner|async" results/logs/* > server-log-excerpts.txt 2>/dev/null; true)
    tar -C $W --exclude='*.safetensors' -czf $OUT/w.tar.gz.tmp . 2>/dev/null; mv $OUT/w.tar.gz.tmp $OUT/w.tar.gz ;;
  poll)  # poll SECONDS: wait (packing every 60 s, so a cut-off call still brings a recent copy), then report
    end=$(( $(date +%s) + ${2:-0} ))
    i=0; while [ $(date +%s) -lt $end ] && [ ! -f $W/done ]; do sleep 20; i=$((i + 1)); [ $((i % 3)) -eq 0 ] && bash $0 pack; done
    date -u +%H:%M:%S; cat $W/model-times.txt 2>/dev/null; tail -n 6 $W/driver.log 2>/dev/null
    for f in pytest.log pytest2.log; do [ -f $W/$f ] && { echo "-- $f"; tail -c 900 $W/$f; echo; }; done
    [ -f $W/results/cells.jsonl ] && echo "cells: $(grep -c '"kind": "cell"' $W/results/cells.jsonl); starts: $(grep '"kind": "server"' $W/results/cells.jsonl | python3 -c 'import sys,json; print([(r["name"], round(r["startup_s"] or 0,1), r["ok"]) for r in map(json.loads, sys.stdin)])')"
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
    bash $0 pack; ls -la ${OUT:-/nonexistent} 2>/dev/null ;;
esac
