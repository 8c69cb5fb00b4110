"""The live vLLM servers: at most ``capacity`` at a time (two: a plain server and the speculative
server whose rounds alternate with it), each started once per session.

The plugin orders the tests so that every cell of one server family runs together; asking the
pool for another config stops the server used longest ago (whole process group) first. On a GPU
servers start one after the other, never at once (vLLM's start-up memory profiling fails when
another process allocates meanwhile); with ``parallel_starts`` (CPU matrices) a pair that needs
starting is launched together. With ``--vllm-url`` the pool hands out already-running
servers, one URL per server name, and starts nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from specguard.config.matrix import ServerConfig
from specguard.serving.server import ServerError, VLLMServer


@dataclass
class ServerStart:
    name: str
    startup_s: float | None
    ok: bool
    error: str | None = None
    memory_bytes: int | None = None
    kv_cache_tokens: float | None = None   # from vLLM's start-up log, with the two below
    kv_cache_gib: float | None = None
    weights_gib: float | None = None
    together: int = 1                      # servers launched at once with it (start-up times overlap)


@dataclass
class ExternalServer:
    """A server the user started; the suite only measures it."""

    base_url: str
    config: ServerConfig
    startup_s: float | None = None

    def check_alive(self) -> None:
        return None

    def log_tail(self, lines: int = 50) -> str:
        return "(external server: no log)"

    def memory_bytes(self) -> int | None:
        return None


@dataclass
class ServerPool:
    """Up to ``capacity`` live servers; asking for another stops the one used longest ago that the
    caller does not also need. ``pair`` keeps a plain and a speculative server live together, so
    their rounds can alternate."""

    log_dir: Path
    api_key: str | None = None
    external_urls: dict[str, str] = field(default_factory=dict)   # server name (or "*") -> URL
    starts: list[ServerStart] = field(default_factory=list)
    device_env: dict[str, dict[str, str]] = field(default_factory=dict)   # per server: this worker's devices
    on_start: Callable[[ServerStart], None] | None = None                 # told of every start, failed or not
    capacity: int = 2
    parallel_starts: bool = False    # launch a pair together (CPU); never on a GPU (memory profiling)
    _live: dict[str, VLLMServer] = field(default_factory=dict)   # least recently used first
    _failed: dict[str, str] = field(default_factory=dict)

    @property
    def external(self) -> bool:
        return bool(self.external_urls)

    def external_url(self, config: ServerConfig) -> str | None:
        return self.external_urls.get(config.name, self.external_urls.get("*"))

    def get(self, config: ServerConfig, keep: tuple[ServerConfig, ...] = ()) -> VLLMServer | ExternalServer:
        """The running server for ``config``, starting it if needed; servers in ``keep`` stay live."""
        if self.external:
            url = self.external_url(config)
            if url is None:
                raise ServerError(f"--vllm-url names no URL for server {config.name!r} "
                                  f"(given: {', '.join(sorted(self.external_urls))}); add {config.name}=URL")
            return ExternalServer(url.rstrip("/"), config)
        live = self._live.get(config.name)
        if live is not None and live.config == config:
            if live.proc is not None and live.proc.poll() is None:
                self._live[config.name] = self._live.pop(config.name)   # most recently used
                return live
            # It died: take down what is left of its group, record why, fail with the log tail.
            del self._live[config.name]
            code = live.proc.returncode if live.proc else "?"
            live.stop()
            self._failed[config.name] = f"died with exit code {code}"
            raise ServerError(f"vLLM server {config.name!r} died with exit code {code}; log tail:\n"
                              f"{live.log_tail()}")
        self._make_room(1, keep)
        if len(self._live) >= self.capacity:
            raise ServerError(f"cannot start {config.name!r}: {len(self._live)} servers live, capacity {self.capacity}")
        server = self._start(config)
        self._live[config.name] = server
        return server

    def pair(self, plain: ServerConfig, spec: ServerConfig) -> tuple[VLLMServer | ExternalServer,
                                                                      VLLMServer | ExternalServer]:
        """Both servers live at once: started one after the other, or launched together where
        ``parallel_starts`` allows and neither is live."""
        if self.external:
            a, b = self.external_url(plain), self.external_url(spec)
            if a is not None and a == b:
                raise ServerError(f"--vllm-url gives one URL for {plain.name!r} and {spec.name!r}: a server "
                                  "compared with itself; pass one URL per server as NAME=URL")
        elif self.capacity < 2:
            raise ServerError(f"pairing {plain.name!r} with {spec.name!r} needs two live servers; capacity is 1")
        elif self.parallel_starts and not any(c.name in self._live or c.name in self._failed for c in (plain, spec)):
            self._start_together(plain, spec)
        first = self.get(plain, keep=(spec,))
        second = self.get(spec, keep=(plain,))
        return first, second

    def _start_together(self, *configs: ServerConfig) -> None:
        """Launch every config, then wait for each (CPU matrices: a start is mostly single-threaded
        imports, so two overlap on two cores). A config that fails is recorded as failed, and
        ``get`` then raises its error; the others stay live."""
        self._make_room(len(configs))
        launched: list[tuple[VLLMServer, float]] = []
        for config in configs:
            server = self._new_server(config)
            t0 = time.monotonic()
            try:
                server.launch()
            except ServerError as exc:
                self._fail(config, t0, exc)
                continue
            launched.append((server, t0))
        for server, t0 in launched:
            try:
                server.wait_ready()
            except ServerError as exc:
                self._fail(server.config, t0, exc)
                continue
            self._live[server.config.name] = server
            self._ready(server, together=len(configs))

    def _make_room(self, slots: int, keep: tuple[ServerConfig, ...] = ()) -> None:
        """Stop the servers used longest ago, except those in ``keep``, until ``slots`` more fit."""
        keep_names = {k.name for k in keep}
        for name in list(self._live):
            if len(self._live) + slots <= self.capacity:
                break
            if name not in keep_names:
                self._live.pop(name).stop()

    def _new_server(self, config: ServerConfig) -> VLLMServer:
        return VLLMServer(config, log_dir=self.log_dir, api_key=self.api_key,
                          extra_env=self.device_env.get(config.name, {}))

    def _ready(self, server: VLLMServer, together: int = 1) -> None:
        self._started(ServerStart(server.config.name, server.startup_s, True, memory_bytes=server.memory_bytes(),
                                  together=together, **server.startup_figures()))

    def _fail(self, config: ServerConfig, t0: float, exc: ServerError) -> None:
        self._started(ServerStart(config.name, time.monotonic() - t0, False, str(exc).splitlines()[0]))
        self._failed[config.name] = str(exc)

    def _start(self, config: ServerConfig) -> VLLMServer:
        # Do not spend another start-up timeout on a config that already failed this session.
        if config.name in self._failed:
            raise ServerError(f"server {config.name!r} failed to start earlier in this session:\n"
                              f"{self._failed[config.name]}")
        server = self._new_server(config)
        t0 = time.monotonic()
        try:
            server.start()
        except ServerError as exc:
            self._fail(config, t0, exc)
            raise
        self._ready(server)
        return server

    def _started(self, start: ServerStart) -> None:
        self.starts.append(start)
        if self.on_start is not None:
            self.on_start(start)

    def stop(self) -> None:
        while self._live:
            _, server = self._live.popitem()
            server.stop()
