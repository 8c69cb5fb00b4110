"""Crashes, interrupts and bad input, with real vLLM servers and a real pytest in a subprocess.

Each case runs an inner ``pytest`` on a one- or two-server matrix written here, then checks what
a nightly user depends on: the failure names the server, its exit code and log tail; finished
cells are on disk; the session goes on; and no vLLM process of the run is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from specguard.serving.server import vllm_distribution

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(vllm_distribution() is None, reason="needs vLLM (pip install 'specguard[cpu]')"),
]

SERVER = """
[[servers]]
name = "{name}"
{extra}
"""


def write_matrix(tmp: Path, names: list[str], *, max_tokens: int = 16, categories: str = '["coding"]',
                 extra: str = "") -> Path:
    prompts = ROOT / "fixtures" / "prompts" / "speed-sample.jsonl"
    text = f"""version = 1
name = "reliability"
id_prefix = "rel"
marker = "cpu"
[defaults]
model = "builtin:smollm2-135m-instruct"
dtype = "float32"
max_model_len = 1024
args = ["-O0", "--gpu-memory-utilization", "0.2", "--max-num-seqs", "4"]
env = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
startup_timeout_s = 600
[workload]
prompts = "{prompts}"
categories = {categories}
concurrency = [1]
max_tokens = {max_tokens}
num_prompts = 2
warmup_requests = 0
rounds = 2
max_rounds = 2
requests_per_concurrency = 1
""" + "".join(SERVER.format(name=n, extra=extra) for n in names)
    path = tmp / "matrix.toml"
    path.write_text(text)
    return path


def _default_sigint() -> None:
    """A command started in the background by a non-interactive shell (`cmd &`, nohup) ignores
    SIGINT, and the ignoring is inherited: the inner pytest would not see Ctrl-C at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class InnerRun:
    """An inner pytest whose process tree (supervisors, API servers, engine cores) is recorded while
    it runs, so that afterwards every one of those processes can be checked for being gone."""

    def __init__(self, tmp: Path, matrix: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.out_path = tmp / "inner.log"
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "cpu", "--matrix", str(matrix),
               "--results-dir", str(tmp / "results"), "--baseline-dir", str(tmp / "baselines"),
               "--benchmark-json", str(tmp / "bench.json"), "-o", "addopts=",
               str(ROOT / "tests" / "test_throughput.py"), *extra]
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                         start_new_session=True, preexec_fn=_default_sigint)
        self.seen: dict[int, str] = {}

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def watch(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    self.seen.setdefault(child.pid, " ".join(child.cmdline())[:200])
                except psutil.Error:
                    continue
        except psutil.Error:
            pass

    def wait_until(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            self.watch()
            if self.proc.poll() is not None:
                raise AssertionError(f"inner pytest ended (exit {self.proc.returncode}) before {what}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.5)

    def finish(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            self.watch()
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"inner pytest still running after {timeout_s} s:\n{self.output[-3000:]}")
            time.sleep(0.5)
        return self.proc.returncode

    def api_server(self, name: str) -> psutil.Process:
        self.watch()
        for pid, cmd in self.seen.items():
            if "vllm.entrypoints.openai.api_server" in cmd and f"--served-model-name {name} " in cmd + " ":
                return psutil.Process(pid)
        raise AssertionError(f"no API server for {name!r} among {list(self.seen.values())}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def assert_no_orphans(self, timeout_s: float = 60.0) -> None:
        """Every process the run ever had is gone (zombies awaiting their reaper count as gone)."""
        assert self.seen, "no server process was ever seen: nothing was tested"
        deadline = time.monotonic() + timeout_s
        while True:
            alive = []
            for pid in self.seen:
                try:
                    if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        alive.append(pid)
                except psutil.NoSuchProcess:
                    continue
            if not alive:
                return
            if time.monotonic() > deadline:
                left = [(p, _state(p), self.seen[p]) for p in alive]
                for pid in alive:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                raise AssertionError(f"processes left behind: {left}")
            time.sleep(0.5)


def _state(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return f"status={p.status()} ppid={p.ppid()} pgid={os.getpgid(pid)}"
    except (psutil.Error, OSError) as exc:
        return f"gone ({type(exc).__name__})"


def records(tmp: Path) -> list[dict]:
    path = tmp / "results" / "cells.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def unique(name: str) -> str:
    return f"{name}{os.urandom(3).hex()}"


def write_pair_matrix(tmp: Path, spec: str, plain: str, categories: str) -> Path:
    """A plain server and an n-gram server compared with it: the pool launches the two together."""
    path = write_matrix(tmp, [plain], categories=categories)
    path.write_text(path.read_text() + SERVER.format(name=spec, extra=(
        'speculative_config = { method = "ngram", num_speculative_tokens = 4, prompt_lookup_max = 4, '
        'prompt_lookup_min = 2 }')))
    return path


def posts(tmp: Path, name: str) -> int:
    """How many chat requests the server's access log shows (a line each, written as a stream starts)."""
    log = tmp / "results" / "logs" / f"server-{name}.log"
    return log.read_text(errors="replace").count("POST /v1/chat/completions") if log.exists() else 0


def test_server_killed_mid_cell_fails_that_cell_the_session_goes_on_then_ctrl_c_leaves_nothing(
        tmp_path: Path) -> None:
    """One inner run, one start of a pair, checks what a nightly user depends on:
    - a server that dies mid-cell fails that cell only, naming its exit code and log tail, and the
      session goes on (the victim is a speculative server; its plain server goes on with its own
      cells, which come after the speculative ones);
    - Ctrl-C with a request in flight (pytest stops its servers itself) leaves no vLLM process;
    - neither the API key nor the environment reaches a log, a result file or the output
      (including the dead server's log tail in the failure)."""
    victim, after = unique("victim"), unique("next")
    secret, key = "sg-sentinel-" + os.urandom(6).hex(), "sg-key-" + os.urandom(6).hex()
    matrix = write_pair_matrix(tmp_path, victim, after, categories='["coding", "math"]')
    run = InnerRun(tmp_path, matrix, "--api-key", key, env={"SPECGUARD_SENTINEL": secret})
    try:
        # Let the victim finish its first cell (on disk), then kill its API server during the second.
        run.wait_until(lambda: any(r.get("cell") == f"rel-{victim}-c1-coding" for r in records(tmp_path)), 900,
                       "the victim's first cell")
        run.api_server(victim).kill()
        # The session goes on: the plain server's first cell of its own is measured and on disk.
        run.wait_until(lambda: any(r.get("cell") == f"rel-{after}-c1-coding" for r in records(tmp_path)), 900,
                       "the plain server's first cell after the victim died")
        seen = posts(tmp_path, after)
        run.wait_until(lambda: posts(tmp_path, after) > seen, 300, "a request in flight on the plain server")
        assert run.proc.poll() is None, "the inner run ended before it could be interrupted"
        os.kill(run.proc.pid, signal.SIGINT)
        code = run.finish(120)
    finally:
        run.kill()
    out = run.output
    assert code == 2, out    # interrupted; the victim's failed cell is reported all the same
    assert f"rel-{victim}-c1-math" in out and ("died with exit code" in out or "no longer running" in out), out
    assert "last 50 lines" in out or "log tail" in out, out
    assert "KeyboardInterrupt" in out, out
    cells = {r["cell"] for r in records(tmp_path) if r["kind"] == "cell"}
    assert {f"rel-{victim}-c1-coding", f"rel-{after}-c1-coding"} <= cells, cells
    assert f"rel-{victim}-c1-math" not in cells
    files = [p for p in [*(tmp_path / "results").rglob("*"), tmp_path / "bench.json"] if p.is_file()]
    assert sum(p.name.startswith("server-") for p in files) == 2, "no server logs to check"
    for path in files:
        text = path.read_text(errors="replace")
        assert secret not in text, f"{path} carries the environment"
        assert key not in text, f"{path} carries the API key"
    assert secret not in out and key not in out
    run.assert_no_orphans()


def server_starting(run: InnerRun, tmp: Path, name: str) -> bool:
    """The server's API process has launched its engine core but serves nothing yet."""
    try:
        api = run.api_server(name)
        launched = bool(api.children(recursive=True))
    except (AssertionError, psutil.Error):
        return False
    log = tmp / "results" / "logs" / f"server-{name}.log"
    return launched and "Application startup complete" not in log.read_text(errors="replace")


# pytest terminated or killed while its server is still starting: the process tree is half built
# and nothing but the supervisor can take it down (the case that once left a server alive for
# 30-60 s). Ctrl-C with a request in flight is the end of the killed-mid-cell run above.
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_interrupted_pytest_leaves_no_vllm_process(tmp_path: Path, how: str) -> None:
    name = unique("only")
    run = InnerRun(tmp_path, write_matrix(tmp_path, [name]))
    try:
        run.wait_until(lambda: server_starting(run, tmp_path, name), 900, "the server's engine core starting")
        run.api_server(name)   # the server is recorded
        assert run.proc.poll() is None, f"{how}: the inner run ended before it could be interrupted"
        os.kill(run.proc.pid, getattr(signal, how))
        killed = time.monotonic()
        run.finish(120)
    finally:
        run.kill()
    # Killed outright, pytest cleans nothing up: the supervisor must take the group down, within
    # 10 s (SIGTERM, a short grace, SIGKILL); interrupted, pytest stops its servers itself.
    run.assert_no_orphans(timeout_s=10.0 - (time.monotonic() - killed) if how == "SIGKILL" else 60.0)


def test_invalid_speculative_config_is_a_clear_error_within_seconds(tmp_path: Path) -> None:
    # vLLM itself rejects prompt_lookup_min > prompt_lookup_max.
    bad = ('speculative_config = { method = "ngram", num_speculative_tokens = 4, '
           'prompt_lookup_min = 5, prompt_lookup_max = 2 }')
    name = unique("badspec")
    t0 = time.monotonic()
    run = InnerRun(tmp_path, write_matrix(tmp_path, [name], extra=bad))
    try:
        code = run.finish(600)
    finally:
        run.kill()
    elapsed, out = time.monotonic() - t0, run.output
    assert code == 1, out
    assert f"vLLM server '{name}'" in out and "exited with code" in out, out
    assert "prompt_lookup" in out, "the log tail should carry vLLM's own reason"
    assert elapsed < 180, f"took {elapsed:.0f} s"
    run.assert_no_orphans()


def test_port_already_taken_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from specguard.config.matrix import load_matrix
    from specguard.serving.server import ServerError, VLLMServer

    config = load_matrix(write_matrix(tmp_path, ["porttaken"])).server("porttaken")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        server = VLLMServer(config, log_dir=tmp_path / "logs", port=held.getsockname()[1])
        t0 = time.monotonic()
        with pytest.raises(ServerError) as info:
            server.start()
    assert "porttaken" in str(info.value) and "exited with code" in str(info.value)
    assert time.monotonic() - t0 < 180
    assert server.proc is None


def test_malformed_matrix_is_a_usage_error_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(write_matrix(tmp_path, ["a"]).read_text().replace("rounds = 2", "rounds = -2"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                           "--matrix", str(bad), "-o", "addopts=", str(ROOT / "tests" / "test_throughput.py")],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    err = done.stdout + done.stderr
    assert f"{bad}: workload.rounds: expected a positive number, got -2" in err
    assert "Traceback" not in err
