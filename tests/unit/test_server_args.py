"""specguard.serving.server: the command line and environment (pure), and start-up failures with fake servers.

The fake servers are a few lines of Python started through the real ``VLLMServer.start``; no vLLM runs.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.serving import server as server_mod
from specguard.config.matrix import ServerConfig
from specguard.serving.pool import ServerPool
from specguard.serving.server import HOST, ServerError, VLLMServer, build_argv, server_env, startup_figures

PLAIN = ServerConfig(name="baseline", model="org/model", dtype="float32", max_model_len=2048,
                     args=("--max-num-seqs", "8"))
NGRAM = ServerConfig(name="ngram4", model="org/model", dtype="float32",
                     speculative_config=json.dumps({"method": "ngram", "num_speculative_tokens": 4,
                                                    "prompt_lookup_max": 4}, sort_keys=True),
                     trust_remote_code=True, enable_prefix_caching=True, tensor_parallel_size=2,
                     args=("--enforce-eager",))


def value_of(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


# --- build_argv ------------------------------------------------------------------------------

def test_plain_argv_exactly() -> None:
    argv = build_argv(PLAIN, model="/models/m", port=8123, python="/usr/bin/python3")
    assert argv == ["/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server",
                    "--model", "/models/m", "--served-model-name", "baseline",
                    "--host", "127.0.0.1", "--port", "8123", "--dtype", "float32", "--seed", "0",
                    "--max-model-len", "2048", "--no-enable-prefix-caching", "--max-num-seqs", "8"]


def test_host_port_and_model() -> None:
    argv = build_argv(NGRAM, model="/models/m", port=40001)
    assert argv[0] == sys.executable
    assert value_of(argv, "--host") == HOST == "127.0.0.1"
    assert value_of(argv, "--port") == "40001"
    assert value_of(argv, "--model") == "/models/m"
    assert value_of(argv, "--served-model-name") == "ngram4"
    assert value_of(argv, "--tensor-parallel-size") == "2"
    assert "--max-model-len" not in argv
    assert argv[-1] == "--enforce-eager"   # the matrix's own args come last


def test_prefix_caching_flag() -> None:
    plain = build_argv(PLAIN, model="m", port=1)
    assert "--no-enable-prefix-caching" in plain and "--enable-prefix-caching" not in plain
    ngram = build_argv(NGRAM, model="m", port=1)
    assert "--enable-prefix-caching" in ngram and "--no-enable-prefix-caching" not in ngram


def test_speculative_config_round_trips() -> None:
    argv = build_argv(NGRAM, model="m", port=1)
    assert json.loads(value_of(argv, "--speculative-config")) == NGRAM.spec
    assert "--speculative-config" not in build_argv(PLAIN, model="m", port=1)


def test_builtin_draft_model_is_resolved_without_touching_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "resolve_model",
                        lambda ref: "/cache/models/draft" if ref.startswith("builtin:") else ref)
    spec = {"method": "draft_model", "model": "builtin:draft", "num_speculative_tokens": 4}
    cfg = ServerConfig(name="self4", model="org/model", speculative_config=json.dumps(spec, sort_keys=True))
    argv = build_argv(cfg, model="/models/m", port=1)
    assert json.loads(value_of(argv, "--speculative-config")) == {**spec, "model": "/cache/models/draft"}
    assert cfg.spec == spec   # the (hashable, shared) config keeps the reference


def test_trust_remote_code_only_when_set() -> None:
    assert "--trust-remote-code" in build_argv(NGRAM, model="m", port=1)
    assert "--trust-remote-code" not in build_argv(PLAIN, model="m", port=1)


def test_api_key_travels_in_the_environment_only() -> None:
    assert "--api-key" not in build_argv(PLAIN, model="m", port=1)
    assert server_env(PLAIN, base={}, api_key="s3cret")["VLLM_API_KEY"] == "s3cret"
    # An inherited key would lock the suite's own client out: only the session's key counts.
    assert "VLLM_API_KEY" not in server_env(PLAIN, base={"VLLM_API_KEY": "other"}, api_key=None)
    assert "VLLM_API_KEY" not in server_env(PLAIN, base={}, api_key="")


def test_configs_built_in_sequence_do_not_leak_flags() -> None:
    a1 = build_argv(NGRAM, model="m", port=1)
    a1.append("--mutated-by-caller")
    b = build_argv(PLAIN, model="m", port=2)
    a2 = build_argv(NGRAM, model="m", port=1)
    for flag in ("--speculative-config", "--trust-remote-code", "--enable-prefix-caching", "--enforce-eager",
                 "--tensor-parallel-size", "--api-key", "--mutated-by-caller"):
        assert flag not in b, flag
    assert "--mutated-by-caller" not in a2
    assert a2 == a1[:-1]
    assert a2 is not a1


@settings(max_examples=50, deadline=None)
@given(order=st.permutations([PLAIN, NGRAM, ServerConfig(name="x", model="y")]))
def test_argv_does_not_depend_on_build_order(order: list[ServerConfig]) -> None:
    fresh = {c.name: build_argv(c, model="m", port=5) for c in (PLAIN, NGRAM)}
    for cfg in order:
        argv = build_argv(cfg, model="m", port=5)
        if cfg.name in fresh:
            assert argv == fresh[cfg.name]


# --- server_env ------------------------------------------------------------------------------

def test_server_env_overlays_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "vllm_distribution", lambda: ("vllm", "0.32.0"))
    cfg = ServerConfig(name="s", model="m", env=(("VLLM_CPU_KVCACHE_SPACE", "4"), ("HOME", "/srv")))
    base = {"HOME": "/root", "PATH": "/bin"}
    env = server_env(cfg, base)
    assert env == {"HOME": "/srv", "PATH": "/bin", "VLLM_CPU_KVCACHE_SPACE": "4"}
    assert base == {"HOME": "/root", "PATH": "/bin"}   # not mutated
    assert "LD_PRELOAD" not in env


def test_server_env_lets_the_server_write_its_bytecode_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "vllm_distribution", lambda: None)
    env = server_env(ServerConfig(name="s", model="m"), {"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/bin"})
    assert env == {"PATH": "/bin"}
    # a config that asks for it gets it
    cfg = ServerConfig(name="s", model="m", env=(("PYTHONDONTWRITEBYTECODE", "1"),))
    assert server_env(cfg, {})["PYTHONDONTWRITEBYTECODE"] == "1"


def test_server_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "vllm_distribution", lambda: None)
    monkeypatch.setenv("SPECGUARD_UNIT_MARK", "1")
    assert server_env(ServerConfig(name="s", model="m"))["SPECGUARD_UNIT_MARK"] == "1"


def test_server_env_preloads_iomp_for_vllm_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    iomp = tmp_path / "lib" / "libiomp5.so"
    iomp.write_bytes(b"")
    monkeypatch.setattr(server_mod, "vllm_distribution", lambda: ("vllm-cpu", "0.32.0"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    cfg = ServerConfig(name="s", model="m")
    assert server_env(cfg, {})["LD_PRELOAD"] == str(iomp)
    assert server_env(cfg, {"LD_PRELOAD": "/x.so"})["LD_PRELOAD"] == f"{iomp}:/x.so"
    assert server_env(cfg, {"LD_PRELOAD": str(iomp)})["LD_PRELOAD"] == str(iomp)   # not twice
    iomp.unlink()
    assert "LD_PRELOAD" not in server_env(cfg, {})


# --- VLLMServer failure paths with fake servers ------------------------------------------------

HTTP_SCRIPT = textwrap.dedent("""
    import http.server, os, subprocess, sys
    port, status, info = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # A grandchild, as vLLM's engine core would be: stopping must take it down too.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(info, "w") as f:
        f.write(f"{os.getpid()} {child.pid} {os.getppid()}")   # the parent is the suite's supervisor
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"{}")
    print(f"fake vllm: loading weights, /health answers {status}", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
""")

EXIT_SCRIPT = "import sys; print('fake vllm: RuntimeError: no CPU backend', flush=True); sys.exit(3)"


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Replaces build_argv with a fake server; ``state["script"]``/``["status"]`` choose which."""
    state: dict[str, Any] = {"script": HTTP_SCRIPT, "status": 503, "info": tmp_path / "pids.txt", "ports": []}

    def fake_build_argv(config: ServerConfig, *, model: str, port: int,
                        python: str = sys.executable) -> list[str]:
        state["ports"].append(port)
        return [sys.executable, "-c", state["script"], str(port), str(state["status"]), str(state["info"])]

    monkeypatch.setattr(server_mod, "build_argv", fake_build_argv)
    monkeypatch.setattr(server_mod, "vllm_distribution", lambda: None)   # no LD_PRELOAD for the fake
    return state


def _pids(info: Path) -> list[int]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if info.exists() and info.read_text().strip():
            return [int(x) for x in info.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"fake server never wrote {info}")


def _assert_gone(pids: list[int]) -> None:
    """Neither the server, its grandchild nor its supervisor, nor anything else in their process
    group, is alive. ``pids``: server, grandchild, supervisor (which leads the group)."""
    assert len(pids) == 3 and os.getpgid(os.getpid()) != pids[2]
    pgid = pids[2]   # start_new_session=True on the supervisor: it leads the group
    deadline = time.monotonic() + 5
    while True:
        alive = []
        for p in psutil.process_iter(["pid", "status"]):
            try:
                if p.info["status"] != psutil.STATUS_ZOMBIE and (p.pid in pids or os.getpgid(p.pid) == pgid):
                    alive.append(p.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert alive == [], f"processes left behind: {alive}"


def cfg(timeout_s: float = 3.0, model: str = "org/fake-model") -> ServerConfig:
    return ServerConfig(name="fake", model=model, startup_timeout_s=timeout_s)


def test_nonexistent_model_path_fails_fast(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "model"
    srv = VLLMServer(cfg(model=str(missing)), log_dir=tmp_path / "logs")
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=f"model path {missing} does not exist"):
        srv.start()
    assert time.monotonic() - t0 < 1.0
    assert srv.proc is None and not (tmp_path / "logs").exists()   # nothing was started


def test_never_healthy_server_times_out_and_leaves_nothing(fake_server: dict[str, Any],
                                                          tmp_path: Path) -> None:
    srv = VLLMServer(cfg(3.0), log_dir=tmp_path / "logs", api_key="s3cret")
    t0 = time.monotonic()
    with pytest.raises(ServerError) as info:
        srv.start()
    elapsed = time.monotonic() - t0
    assert 3.0 <= elapsed < 8.0, elapsed
    message = str(info.value)
    port = fake_server["ports"][0]
    assert f"http://127.0.0.1:{port}/health" in message
    assert "not healthy after 3 s (last answer: HTTP 503)" in message
    assert "fake vllm: loading weights" in message   # the log tail
    assert str(srv.log_path) in message
    assert "s3cret" not in message and "s3cret" not in srv.log_path.read_text()   # the key is in no log
    assert srv.proc is None
    _assert_gone(_pids(fake_server["info"]))


def test_server_exiting_during_startup(fake_server: dict[str, Any], tmp_path: Path) -> None:
    fake_server["script"] = EXIT_SCRIPT
    srv = VLLMServer(cfg(30.0), log_dir=tmp_path / "logs", health_poll_s=0.1)
    t0 = time.monotonic()
    with pytest.raises(ServerError) as info:
        srv.start()
    assert time.monotonic() - t0 < 10.0
    message = str(info.value)
    assert "exited with code 3 during start-up" in message
    assert f"http://127.0.0.1:{fake_server['ports'][0]}/health" in message
    assert "RuntimeError: no CPU backend" in message
    assert srv.proc is None


def test_healthy_server_starts_and_stops_its_whole_group(fake_server: dict[str, Any], tmp_path: Path) -> None:
    fake_server["status"] = 200
    with VLLMServer(cfg(10.0), log_dir=tmp_path / "logs", health_poll_s=0.1) as srv:
        assert srv.base_url == f"http://127.0.0.1:{fake_server['ports'][0]}"
        assert srv.startup_s is not None and srv.startup_s < 10.0
        srv.check_alive()
        pids = _pids(fake_server["info"])
        assert all(psutil.pid_exists(p) for p in pids)
    assert srv.proc is None
    _assert_gone(pids)
    srv.stop()   # idempotent


def test_check_alive_reports_a_dead_server(fake_server: dict[str, Any], tmp_path: Path) -> None:
    fake_server["status"] = 200
    srv = VLLMServer(cfg(10.0), log_dir=tmp_path / "logs", health_poll_s=0.1)
    srv.start()
    try:
        assert srv.proc is not None
        pids = _pids(fake_server["info"])
        srv.proc.kill()
        srv.proc.wait(timeout=5)
        with pytest.raises(ServerError, match=r"died with exit code -9"):
            srv.check_alive()
    finally:
        srv.stop()
    _assert_gone(pids)


def test_a_pair_launched_together_is_live_with_overlapping_starts(fake_server: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    fake_server["status"] = 200
    pool = ServerPool(log_dir=tmp_path / "logs", parallel_starts=True)
    plain, spec = ServerConfig(name="plain", model="org/m"), ServerConfig(name="spec", model="org/m")
    try:
        a, b = pool.pair(plain, spec)
        assert (a.config.name, b.config.name) == ("plain", "spec")
        assert [(st.name, st.ok, st.together) for st in pool.starts] == [("plain", True, 2), ("spec", True, 2)]
        assert len(set(fake_server["ports"])) == 2
        assert pool.pair(plain, spec) == (a, b)   # already live: nothing starts again
        assert len(pool.starts) == 2
    finally:
        pool.stop()


def test_a_pair_whose_plain_server_fails_keeps_the_other_and_names_the_failure(
        monkeypatch: pytest.MonkeyPatch, fake_server: dict[str, Any], tmp_path: Path) -> None:
    fake_server["status"] = 200

    def by_name(config: ServerConfig, *, model: str, port: int, python: str = sys.executable) -> list[str]:
        script = EXIT_SCRIPT if config.name == "plain" else HTTP_SCRIPT
        return [sys.executable, "-c", script, str(port), "200", str(tmp_path / f"{config.name}.pids")]

    monkeypatch.setattr(server_mod, "build_argv", by_name)
    pool = ServerPool(log_dir=tmp_path / "logs", parallel_starts=True)
    plain, spec = ServerConfig(name="plain", model="org/m"), ServerConfig(name="spec", model="org/m")
    try:
        with pytest.raises(ServerError, match=r"'plain' failed to start earlier in this session"):
            pool.pair(plain, spec)
        assert [(st.name, st.ok) for st in pool.starts] == [("plain", False), ("spec", True)]
        assert "exited with code 3 during start-up" in (pool.starts[0].error or "")
        assert pool.get(spec).config.name == "spec"   # still live
    finally:
        pool.stop()


# --- memory figures from vLLM's start-up log -------------------------------------------------------

GPU_LOG = """\
(EngineCore pid=1864) INFO 11-29 06:17:22 [gpu_model_runner.py:5306] Model loading took 0.51 GiB memory and 2.371105 seconds
(EngineCore pid=1864) INFO 11-29 06:18:30 [gpu_worker.py:538] Available KV cache memory: 40.76 GiB
(EngineCore pid=1864) INFO 11-29 06:18:30 [kv_cache_utils.py:2146] GPU KV cache size: 949,840 tokens
"""
CPU_LOG = ("(EngineCore pid=8741) INFO 11-29 07:18:58 [kv_cache_utils.py:2327] CPU KV cache size: 95,360 tokens, "
           "Maximum concurrency for 2,048 tokens per request: 46.56x\n")


def test_startup_figures_from_real_log_lines() -> None:
    assert startup_figures(GPU_LOG) == {"kv_cache_tokens": 949_840.0, "kv_cache_gib": 40.76, "weights_gib": 0.51}
    assert startup_figures(CPU_LOG) == {"kv_cache_tokens": 95_360.0, "kv_cache_gib": None, "weights_gib": None}
    assert startup_figures("") == {"kv_cache_tokens": None, "kv_cache_gib": None, "weights_gib": None}
    # an engine that restarted logs again: the last figure is the one serving
    again = GPU_LOG + GPU_LOG.replace("949,840", "1,000").replace("40.76", "1.5")
    assert startup_figures(again)["kv_cache_tokens"] == 1000.0 and startup_figures(again)["kv_cache_gib"] == 1.5
