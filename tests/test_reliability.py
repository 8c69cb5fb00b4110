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
from pathlib import Path

import psutil
import pytest

from specguard.server import vllm_distribution

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


def write_matrix(tmp: Path, names: list[str], *, max_tokens: int = 32, categories: str = '["coding"]',
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
""" + "".join(SERVER.format(name=n, extra=extra) for n in names)
    path = tmp / "matrix.toml"
    path.write_text(text)
    return path


def inner_pytest(tmp: Path, matrix: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "cpu", "--matrix", str(matrix),
           "--results-dir", str(tmp / "results"), "--baseline-dir", str(tmp / "baselines"),
           "--benchmark-json", str(tmp / "bench.json"), "-o", "addopts=", str(ROOT / "tests" / "test_throughput.py"),
           *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def server_procs(marker: str) -> list[psutil.Process]:
    """Live processes of the inner run's servers (their command line carries its results dir)."""
    out = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                out.append(p)
        except (psutil.Error, TypeError):
            continue
    return out


def wait_until(cond, timeout_s: float, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"inner pytest ended (exit {proc.returncode}) before {what}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.5)


def records(tmp: Path) -> list[dict]:
    path = tmp / "results" / "cells.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def no_orphans(tmp: Path, timeout_s: float = 60.0) -> None:
    marker = str(tmp / "results")
    deadline = time.monotonic() + timeout_s
    while server_procs(marker):
        if time.monotonic() > deadline:
            left = [(p.pid, " ".join(p.cmdline())[:120]) for p in server_procs(marker)]
            for p in server_procs(marker):
                p.kill()
            raise AssertionError(f"vLLM processes left behind: {left}")
        time.sleep(0.5)


def request_in_flight(tmp: Path, name: str) -> bool:
    log = tmp / "results" / "logs" / f"server-{name}.log"
    return log.exists() and "POST /v1/chat/completions" in log.read_text(errors="replace")


def test_server_killed_mid_cell_fails_that_cell_and_the_session_goes_on(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, ["victim", "next"], max_tokens=64, categories='["coding", "math"]')
    proc = inner_pytest(tmp_path, matrix)
    try:
        # Let the victim finish its first cell (on disk), then kill its API server during the second.
        wait_until(lambda: any(r.get("cell") == "rel-victim-c1-coding" for r in records(tmp_path)), 900,
                   "the victim's first cell", proc)
        api = [p for p in server_procs(str(tmp_path / "results")) if "--served-model-name" in p.cmdline()
               and "victim" in p.cmdline() and "vllm.entrypoints.openai.api_server" in p.cmdline()]
        assert api, "the victim's API server is not running"
        api[0].kill()
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out
    assert "rel-victim-c1-math" in out and ("died with exit code" in out or "no longer running" in out), out
    assert "last 50 lines" in out or "log tail" in out, out
    cells = {r["cell"] for r in records(tmp_path) if r["kind"] == "cell"}
    assert {"rel-victim-c1-coding", "rel-next-c1-coding", "rel-next-c1-math"} <= cells, cells
    assert "rel-victim-c1-math" not in cells
    no_orphans(tmp_path)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_pytest_leaves_no_vllm_process(tmp_path: Path, how: str) -> None:
    matrix = write_matrix(tmp_path, ["only"], max_tokens=512)
    proc = inner_pytest(tmp_path, matrix)
    try:
        wait_until(lambda: request_in_flight(tmp_path, "only"), 900, "a request in flight", proc)
        assert server_procs(str(tmp_path / "results")), "no server process seen while a round runs"
        os.kill(proc.pid, getattr(signal, how))
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    no_orphans(tmp_path)


def test_invalid_speculative_config_is_a_clear_error_within_seconds(tmp_path: Path) -> None:
    # vLLM itself rejects prompt_lookup_min > prompt_lookup_max.
    bad = ('speculative_config = { method = "ngram", num_speculative_tokens = 4, '
           'prompt_lookup_min = 5, prompt_lookup_max = 2 }')
    matrix = write_matrix(tmp_path, ["badspec"], extra=bad)
    t0 = time.monotonic()
    proc = inner_pytest(tmp_path, matrix)
    out, _ = proc.communicate(timeout=600)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, out
    assert "vLLM server 'badspec'" in out and "exited with code" in out, out
    assert "prompt_lookup" in out, "the log tail should carry vLLM's own reason"
    assert elapsed < 180, f"took {elapsed:.0f} s"
    no_orphans(tmp_path)


def test_port_already_taken_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from specguard.matrix import load_matrix
    from specguard.server import ServerError, VLLMServer

    config = load_matrix(write_matrix(tmp_path, ["porttaken"])).server("porttaken")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        server = VLLMServer(config, log_dir=tmp_path / "logs")
        taken = held.getsockname()[1]
        import specguard.server as server_mod
        original = server_mod.free_port
        server_mod.free_port = lambda host="127.0.0.1": taken
        t0 = time.monotonic()
        try:
            with pytest.raises(ServerError) as info:
                server.start()
        finally:
            server_mod.free_port = original
    assert "porttaken" in str(info.value) and "exited with code" in str(info.value)
    assert time.monotonic() - t0 < 180
    assert server.proc is None


def test_malformed_matrix_is_a_usage_error_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(write_matrix(tmp_path, ["a"]).read_text().replace("rounds = 2", "rounds = -2"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                           "--matrix", str(bad), "-o", "addopts="], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    err = done.stdout + done.stderr
    assert f"{bad}: workload.rounds: expected a positive number, got -2" in err
    assert "Traceback" not in err


def test_secrets_stay_out_of_logs_and_results(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, ["quiet"])
    secret, key = "sg-sentinel-" + os.urandom(6).hex(), "sg-key-" + os.urandom(6).hex()
    proc = inner_pytest(tmp_path, matrix, "--api-key", key, env={"SPECGUARD_SENTINEL": secret})
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    files = [p for p in [*(tmp_path / "results").rglob("*"), tmp_path / "bench.json"] if p.is_file()]
    assert any(p.name.startswith("server-") for p in files), "no server log to check"
    for path in files:
        text = path.read_text(errors="replace")
        assert secret not in text, f"{path} carries the environment"
        assert key not in text, f"{path} carries the API key"
    assert secret not in out and key not in out
    no_orphans(tmp_path)
