"""At most one live vLLM server at a time (one GPU holds one server).

The plugin orders the tests so that every cell of one server config runs together; asking the
pool for another config stops the live server (whole process group) before starting the next.
With ``--vllm-url`` the pool hands out the already-running server and starts nothing.
"""

from __future__ import annotations

import time
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
    _live: VLLMServer | None = None
    _failed: dict[str, str] = field(default_factory=dict)

    def get(self, config: ServerConfig) -> VLLMServer | ExternalServer:
        """The running server for ``config``, starting it (and stopping any other) if needed."""
        if self.external_url is not None:
            return ExternalServer(self.external_url.rstrip("/"), config)
        if config.name in self._failed:
            # Do not spend another start-up timeout on a config that already failed this session.
            raise ServerError(f"server {config.name!r} failed to start earlier in this session:\n"
                              f"{self._failed[config.name]}")
        live = self._live
        if live is not None and live.config == config:
            if live.proc is not None and live.proc.poll() is None:
                return live
            # It died: record why, and let the caller's test fail with the log tail.
            self._live = None
            self._failed[config.name] = f"died with exit code {live.proc.returncode if live.proc else '?'}"
            raise ServerError(f"vLLM server {config.name!r} is no longer running; log tail:\n{live.log_tail()}")
        self.stop()
        server = VLLMServer(config, log_dir=self.log_dir, api_key=self.api_key)
        t0 = time.monotonic()
        try:
            server.start()
        except ServerError as exc:
            self.starts.append(ServerStart(config.name, time.monotonic() - t0, False, str(exc).splitlines()[0]))
            self._failed[config.name] = str(exc)
            raise
        self.starts.append(ServerStart(config.name, server.startup_s, True, memory_bytes=server.memory_bytes()))
        self._live = server
        return server

    def stop(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    @property
    def started(self) -> int:
        return sum(s.ok for s in self.starts)
