"""At most one live vLLM server at a time (one GPU holds one server).

The plugin orders the tests so that every cell of one server config runs together; asking the
pool for another config stops the live server (whole process group) before starting the next.
With ``--vllm-url`` the pool hands out the already-running server and starts nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from specguard.matrix import ServerConfig
from specguard.server import ServerError, VLLMServer


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
    log_dir: Path
    api_key: str | None = None
    external_url: str | None = None
    starts: list[ServerStart] = field(default_factory=list)
    device_env: dict[str, dict[str, str]] = field(default_factory=dict)   # per server: this worker's devices
    on_start: Callable[[ServerStart], None] | None = None                 # told of every start, failed or not
    _live: VLLMServer | None = None
    _companion: VLLMServer | None = None   # a second server, only while a test needs two at once
    _failed: dict[str, str] = field(default_factory=dict)

    def get(self, config: ServerConfig) -> VLLMServer | ExternalServer:
        """The running server for ``config``, starting it (and stopping any other) if needed."""
        if self.external_url is not None:
            return ExternalServer(self.external_url.rstrip("/"), config)
        if self._companion is not None and self._companion.config == config:
            # The partner started for a two-server test becomes the live server: no second start.
            old, self._live, self._companion = self._live, self._companion, None
            if old is not None:
                old.stop()
        live = self._live
        if live is not None and live.config == config:
            if live.proc is not None and live.proc.poll() is None:
                return live
            # It died: take down what is left of its group, record why, fail with the log tail.
            self._live = None
            code = live.proc.returncode if live.proc else "?"
            live.stop()
            self._failed[config.name] = f"died with exit code {code}"
            raise ServerError(f"vLLM server {config.name!r} died with exit code {code}; log tail:\n"
                              f"{live.log_tail()}")
        self.stop()
        self._live = self._start(config)
        return self._live

    def pair(self, plain: ServerConfig, spec: ServerConfig) -> tuple[VLLMServer | ExternalServer,
                                                                      VLLMServer | ExternalServer]:
        """Both servers live at once (for generated-prompt comparisons on machines with room for two).

        The one already live stays; the other starts beside it as a companion, which a later
        ``get`` of its config promotes to the live server without starting it again.
        """
        if self.external_url is not None:
            raise ServerError("two-server tests need servers the suite starts; --vllm-url gives only one")
        live = self.get(plain) if self._live is None or self._live.config not in (plain, spec) else self._live
        other = spec if live.config == plain else plain
        if self._companion is None or self._companion.config != other:
            self._stop_companion()
            self._companion = self._start(other)
        return (live, self._companion) if live.config == plain else (self._companion, live)

    def _start(self, config: ServerConfig) -> VLLMServer:
        # Do not spend another start-up timeout on a config that already failed this session.
        if config.name in self._failed:
            raise ServerError(f"server {config.name!r} failed to start earlier in this session:\n"
                              f"{self._failed[config.name]}")
        server = VLLMServer(config, log_dir=self.log_dir, api_key=self.api_key,
                            extra_env=self.device_env.get(config.name, {}))
        t0 = time.monotonic()
        try:
            server.start()
        except ServerError as exc:
            self._started(ServerStart(config.name, time.monotonic() - t0, False, str(exc).splitlines()[0]))
            self._failed[config.name] = str(exc)
            raise
        self._started(ServerStart(config.name, server.startup_s, True, memory_bytes=server.memory_bytes(),
                                  **server.startup_figures()))
        return server

    def _started(self, start: ServerStart) -> None:
        self.starts.append(start)
        if self.on_start is not None:
            self.on_start(start)

    def _stop_companion(self) -> None:
        if self._companion is not None:
            companion, self._companion = self._companion, None
            companion.stop()

    def stop(self) -> None:
        self._stop_companion()
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    @property
    def started(self) -> int:
        return sum(s.ok for s in self.starts)
