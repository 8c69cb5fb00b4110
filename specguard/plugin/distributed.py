"""Running cells on several pytest-xdist workers: one server per worker, results merged.

    pytest -n 2 --dist loadgroup -m gpu --benchmark-json out.json

- With ``--dist loadgroup`` the suite's scheduler keeps every test of one server family (a plain
  server and the speculative servers compared with it) on one worker, which starts each of those
  servers once and measures a speedup against figures from the same device.
- Each worker owns a disjoint slice of the devices: on CUDA, ``CUDA_VISIBLE_DEVICES`` (GPUs
  / workers each; a config whose ``tensor_parallel_size`` exceeds its slice is refused with the
  numbers); on CPU, ``VLLM_CPU_OMP_THREADS_BIND`` (cores / workers each, at least one).
- Every worker appends what it measured to the shared ``cells.jsonl``, tagged with the
  controller's run id.
- pytest-benchmark switches itself off under xdist, so the controller writes the
  ``--benchmark-json`` file itself from the merged records, in pytest-benchmark's layout (one
  entry per cell, figures in ``extra_info``, timing stats from the round durations).
"""

from __future__ import annotations

from typing import Any



def worker_slot(workerinput: dict[str, Any] | None) -> tuple[int, int]:
    """(index, count) of this worker; (0, 1) when not running under xdist."""
    if not workerinput:
        return 0, 1
    return int(str(workerinput["workerid"]).removeprefix("gw")), int(workerinput["workercount"])


def device_env(index: int, count: int, *, gpus: int, cores: list[int], tensor_parallel_size: int,
               use_gpu: bool) -> dict[str, str]:
    """The environment that pins one worker's server to its own slice of the machine."""
    if count <= 1:
        return {}
    if use_gpu:
        per = gpus // count
        if per < tensor_parallel_size:
            raise ValueError(f"{count} workers on {gpus} GPUs leave {per} GPU(s) per worker, but the config "
                             f"needs tensor_parallel_size={tensor_parallel_size}; use -n {max(1, gpus // tensor_parallel_size)}")
        mine = range(index * per, index * per + tensor_parallel_size)
        return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in mine)}
    # vLLM's CPU backend binds its compute threads to the first core by default, and a busy
    # server's threads spin: two servers on one core starve each other. Each worker's server
    # gets its own cores (at least one).
    per = max(1, len(cores) // count)
    mine_cores = cores[(index * per) % len(cores):][:per]
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in mine_cores)}


def pair_cores_env(speculative: bool, cores: list[int]) -> dict[str, str]:
    """One session's CPU pair on disjoint cores: the plain server's compute threads on the first
    half of ``cores``, a speculative server's on the second. vLLM's CPU backend otherwise binds
    both to the first core: their rounds alternate, but wherever both decode at once (the lossless
    comparisons, each server asked at the same time) they shared one core while the other waited.
    Fewer than two cores: nothing changes."""
    if len(cores) < 2:
        return {}
    half = len(cores) // 2
    mine = cores[half:] if speculative else cores[:half]
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in mine)}


def param_id(nodeid: str) -> str | None:
    """``tests/test_x.py::test_y[tiny-ngram4-c1-coding]@grp`` → ``tiny-ngram4-c1-coding``."""
    nodeid = nodeid.split("@", 1)[0]
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    return nodeid[nodeid.rindex("[") + 1:-1]


def make_scheduler(config: Any, log: Any, groups: dict[str, str]) -> Any:
    """A load-scope scheduler whose scope is the server config of a test (from its parameter id),
    so every test of one server goes to one worker. pytest-xdist's own ``loadgroup`` did not keep
    ``xdist_group`` tests together with pytest-xdist 3.8 and pytest 9 (seen here); this does not
    depend on that mark."""
    from xdist.scheduler import LoadScopeScheduling

    class ServerGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            pid = param_id(nodeid)
            return f"server:{groups[pid]}" if pid in groups else nodeid

    return ServerGroupScheduling(config, log)
