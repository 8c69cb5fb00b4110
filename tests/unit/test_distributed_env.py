"""The pieces of the xdist path that need no server: which worker this is, the slice of the machine
each worker's servers get, and the scope the family scheduler sends together."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specguard.plugin.distributed import device_env, pair_cores_env, param_id, worker_slot


def test_worker_slot() -> None:
    assert worker_slot(None) == (0, 1)
    assert worker_slot({"workerid": "gw3", "workercount": 4}) == (3, 4)


def test_one_worker_changes_nothing() -> None:
    assert device_env(0, 1, gpus=8, cores=[0, 1], tensor_parallel_size=1, use_gpu=True) == {}


def test_gpus_split_between_workers() -> None:
    envs = [device_env(i, 4, gpus=8, cores=[], tensor_parallel_size=2, use_gpu=True) for i in range(4)]
    assert envs == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"},
                    {"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}]
    # a tensor-parallel degree below the slice takes the first GPUs of the worker's slice
    assert device_env(1, 2, gpus=8, cores=[], tensor_parallel_size=1, use_gpu=True) == {"CUDA_VISIBLE_DEVICES": "4"}


def test_a_config_that_does_not_fit_a_worker_is_refused_with_the_numbers() -> None:
    with pytest.raises(ValueError, match=r"2 workers on 2 GPUs leave 1 GPU\(s\) per worker.*tensor_parallel_size=2; use -n 1"):
        device_env(0, 2, gpus=2, cores=[], tensor_parallel_size=2, use_gpu=True)


def test_cpu_cores_split_between_workers() -> None:
    assert device_env(0, 2, gpus=0, cores=[0, 1], tensor_parallel_size=1, use_gpu=False) == \
        {"VLLM_CPU_OMP_THREADS_BIND": "0"}
    assert device_env(1, 2, gpus=0, cores=[0, 1], tensor_parallel_size=1, use_gpu=False) == \
        {"VLLM_CPU_OMP_THREADS_BIND": "1"}
    assert device_env(1, 2, gpus=0, cores=list(range(8)), tensor_parallel_size=1, use_gpu=False) == \
        {"VLLM_CPU_OMP_THREADS_BIND": "4,5,6,7"}


@given(cores=st.integers(1, 64), workers=st.integers(2, 16))
def test_every_cpu_worker_gets_at_least_one_core_of_the_machine(cores: int, workers: int) -> None:
    ids = list(range(cores))
    slices = [device_env(i, workers, gpus=0, cores=ids, tensor_parallel_size=1, use_gpu=False)
              ["VLLM_CPU_OMP_THREADS_BIND"].split(",") for i in range(workers)]
    assert all(s and all(int(c) in ids for c in s) for s in slices)
    if workers <= cores:   # enough cores: the slices are disjoint
        flat = [c for s in slices for c in s]
        assert len(flat) == len(set(flat))


def test_param_id() -> None:
    assert param_id("tests/test_speedup.py::test_speedup[tiny-ngram4-c1-coding]@grp") == "tiny-ngram4-c1-coding"
    assert param_id("tests/test_speedup.py::test_speedup[tiny-ngram4-c1-coding]") == "tiny-ngram4-c1-coding"
    assert param_id("tests/unit/test_x.py::test_y") is None


def test_a_cpu_pair_gets_disjoint_cores() -> None:
    assert pair_cores_env(False, [0, 1]) == {"VLLM_CPU_OMP_THREADS_BIND": "0"}
    assert pair_cores_env(True, [0, 1]) == {"VLLM_CPU_OMP_THREADS_BIND": "1"}
    assert pair_cores_env(True, [2, 3, 4, 5]) == {"VLLM_CPU_OMP_THREADS_BIND": "4,5"}
    assert pair_cores_env(True, [0]) == {}          # one core: vLLM's own binding


def test_the_benchmark_json_path_is_the_whole_path(tmp_path) -> None:
    """pytest-benchmark 5.x hands the option over as a Path, older releases as an open file."""
    from pathlib import Path

    from specguard.plugin.hooks import _benchmark_json_path
    target = tmp_path / "out" / "benchmark.json"
    assert _benchmark_json_path(target) == target
    assert _benchmark_json_path(str(target)) == target
    with open(tmp_path / "old.json", "w") as handle:
        assert _benchmark_json_path(handle) == Path(handle.name) == tmp_path / "old.json"
    assert _benchmark_json_path(None) is None
