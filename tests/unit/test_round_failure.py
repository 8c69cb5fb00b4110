"""A round whose server cannot be reached says why: a dead server's exit code and log tail (its
supervisor reports the death a moment later), else what did not answer. Against a local port that
nothing listens on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from specguard.measure import runner
from specguard.config.matrix import Cell, load_matrix
from specguard.config.prompts import Prompt
from specguard.measure.runner import CellError, run_round
from specguard.serving.server import ServerError

TINY = Path(__file__).resolve().parents[2] / "fixtures" / "matrices" / "tiny-cpu.toml"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Unreachable:
    """A server whose port refuses connections; ``dead`` says whether its process has exited."""

    def __init__(self, dead: bool, name: str = "ngram4") -> None:
        self.name = name
        self.base_url = f"http://127.0.0.1:{closed_port()}"
        self.dead = dead
        self.polls = 0

    def check_alive(self) -> None:
        self.polls += 1
        if self.dead:
            raise ServerError(f"vLLM server {self.name!r} died with exit code -9; last 50 lines:\n(tail)")

    def log_tail(self, lines: int = 50) -> str:
        return "(the log's tail)"


def round_on(server: Unreachable, server_name: str) -> None:
    config = load_matrix(TINY).server(server_name)
    cell = Cell(f"tiny-{server_name}-c1-coding", config, 1, "coding")
    run_round(cell, server, [Prompt("p1", "coding", ("hello",))], model=server_name, max_tokens=4,
              api_key=None, request_timeout_s=5, ignore_eos=True)


@pytest.mark.parametrize("server_name", ["ngram4", "baseline"])
def test_a_dead_server_is_named_with_its_exit_code(server_name: str) -> None:
    # ngram4 fails at its counters (scraped before the load), baseline at its requests.
    with pytest.raises(CellError) as info:
        round_on(Unreachable(dead=True, name=server_name), server_name)
    assert str(info.value).startswith(f"tiny-{server_name}-c1-coding: vLLM server {server_name!r} died with exit code -9")


def test_a_live_but_unreachable_server_says_what_did_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "DEATH_WAIT_S", 0.0)
    server = Unreachable(dead=False)
    with pytest.raises(CellError) as info:
        round_on(server, "ngram4")
    text = str(info.value)
    assert text.startswith("tiny-ngram4-c1-coding: its metrics endpoint did not answer"), text
    assert "refused" in text.lower() and "(the log's tail)" in text, text
    assert server.polls >= 1
