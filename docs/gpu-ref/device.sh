#!/usr/bin/env bash
# What ran on the lent H200 for docs/gpu-ref/ (vLLM 0.25.0 staged by ../shared/gpu/stage.sh and
# installed by its install-on-device.sh). From the project root on the device:
#   bash docs/gpu-ref/device.sh go     # background: build the models, run 1 (writes the baseline), run 2
#   bash docs/gpu-ref/device.sh poll   # progress; packs /tmp/w (logs, cells, baselines) into $OUT
set -u
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1 \
  SPECGUARD_SMOLLM2_GGUF=/tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf SPECGUARD_CACHE=/tmp/sgcache
W=/tmp/w
M=fixtures/matrices/ref-gpu.toml
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
case "${1:-}" in
  go)
    mkdir -p $W && cp "$0" $W/device.sh
    setsid nohup bash $W/device.sh all > $W/driver.log 2>&1 < /dev/null &
    echo "driver pid $!" ;;
  all)
    stamp start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
    t0=$(date +%s.%N); python3 -m specguard model smollm2-135m-instruct
    t1=$(date +%s.%N); python3 -m specguard model smollm2-135m-as-10b
    t2=$(date +%s.%N); du -sh /tmp/sgcache/models/*
    python3 -c "print(f'model build: 135m {$t1-$t0:.1f} s, as-10b {$t2-$t1:.1f} s')" | tee $W/model-times.txt
    stamp run1
    python3 -m pytest -m "gpu or gate" -p no:cacheprovider --ignore=tests/unit --matrix $M --update-baselines \
      --baseline-dir $W/baselines --results-dir=$W/results --benchmark-json=$W/benchmark.json > $W/pytest.log 2>&1
    echo "run1 rc=$?" | tee $W/run1.rc; stamp run1 done
    # A second start-up of baseline and ngram4 (c=1), judged against the baseline run 1 just wrote.
    python3 -m pytest --ignore=tests/unit -m gpu -k "(baseline-c1- or ngram4-c1-) and not gate" -p no:cacheprovider --matrix $M \
      --baseline-dir $W/baselines --results-dir=$W/results2 --benchmark-json=$W/benchmark2.json > $W/pytest2.log 2>&1
    echo "run2 rc=$?" | tee $W/run2.rc; stamp run2 done; touch $W/done ;;
  pack)
    [ -n "${OUT:-}" ] || exit 0
    (cd $W && for d in results results2; do [ -d $d/logs ] && grep -hiE "cudagraph|cuda graph|enforce|eager|compil|draft|speculative|model loading|kv cache|available|error" $d/logs/* > $d-log-excerpts.txt 2>/dev/null; done; true)
    tar -C $W -czf $OUT/w.tar.gz.tmp . 2>/dev/null; mv $OUT/w.tar.gz.tmp $OUT/w.tar.gz ;;
  poll)  # poll SECONDS: wait (packing every 60 s, so a cut-off call still brings a recent copy), then report
    end=$(( $(date +%s) + ${2:-0} ))
    i=0; while [ $(date +%s) -lt $end ] && [ ! -f $W/done ]; do sleep 20; i=$((i + 1)); [ $((i % 3)) -eq 0 ] && bash $0 pack; done
    date -u +%H:%M:%S; cat $W/model-times.txt; tail -n 4 $W/driver.log 2>/dev/null
    for f in $W/pytest.log $W/pytest2.log; do [ -f $f ] && { echo "-- $f"; tail -c 700 $f; echo; }; done
    for d in results results2; do [ -f $W/$d/cells.jsonl ] && echo "$d: $(grep -c '"kind": "cell"' $W/$d/cells.jsonl) cells; starts: $(grep '"kind": "server"' $W/$d/cells.jsonl | python3 -c 'import sys,json; print([(r["name"], round(r["startup_s"] or 0,1), r["ok"]) for r in map(json.loads, sys.stdin)])')"; done
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
    bash $0 pack; ls -la ${OUT:-/nonexistent} 2>/dev/null ;;
esac
