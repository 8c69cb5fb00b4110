"""The lossless tests' outputs within one session: each (server, concurrency)'s greedy outputs of
the lossless prompt set requested once and reused by every comparison, the servers of a comparison
asked at the same time (functional requests, not timed ones: a plain server and its speculative
server run on cores of their own), and the reports rewritten as each comparison ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specguard.config.matrix import LosslessSettings
from specguard.config.prompts import Prompt
from specguard.files import write_json_atomic
from specguard.lossless.compare import Greedy, LosslessReport, greedy_outputs


@dataclass(frozen=True)
class Target:
    """One live server to ask: the config's name (the cache key), its URL and its served model."""

    name: str
    base_url: str
    model: str


class LosslessRuns:
    def __init__(self, settings: LosslessSettings, prompt_set: Callable[[], list[Prompt]], *,
                 api_key: str | None, timeout_s: float, record: Callable[[str, dict[str, Any]], None],
                 report_path: Path, header: dict[str, Any]) -> None:
        self.settings = settings
        self._prompt_set = prompt_set        # computed on first use: the prompts may load lazily
        self._prompts: list[Prompt] | None = None
        self._api_key, self._timeout_s, self._record = api_key, timeout_s, record
        self._report_path, self._header = report_path, header
        self._cache: dict[tuple[str, int], list[Greedy]] = {}
        self._reports: dict[str, LosslessReport] = {}

    @property
    def prompts(self) -> list[Prompt]:
        if self._prompts is None:
            self._prompts = self._prompt_set()
        return self._prompts

    def outputs(self, targets: Sequence[Target], concurrency: int, prompts: list[Prompt] | None = None,
                run: Callable[[Any], Any] = asyncio.run) -> list[list[Greedy]]:
        """Greedy outputs of each target at ``concurrency``, all requested at once. Without
        ``prompts``: the lossless prompt set, once per (config, concurrency) and then from the
        cache, each recorded; given prompts (generated ones) are requested every time."""
        todo = list(range(len(targets))) if prompts is not None else \
            [i for i, t in enumerate(targets) if (t.name, concurrency) not in self._cache]
        ask = prompts if prompts is not None else (self.prompts if todo else [])
        s = self.settings

        async def all_of() -> list[list[Greedy]]:
            return list(await asyncio.gather(*(
                greedy_outputs(targets[i].base_url, targets[i].model, ask, concurrency=concurrency,
                               max_tokens=s.max_tokens, top_logprobs=s.top_logprobs, seed=s.seed,
                               api_key=self._api_key, timeout_s=self._timeout_s) for i in todo)))

        got = dict(zip(todo, run(all_of()) if todo else []))
        out = []
        for i, t in enumerate(targets):
            if i not in got:
                out.append(self._cache[(t.name, concurrency)])
                continue
            if prompts is None:
                self._cache[(t.name, concurrency)] = got[i]
                self._record("greedy", {"key": f"{t.name}-c{concurrency}", "outputs": [g.to_json() for g in got[i]]})
            out.append(got[i])
        return out

    def add_report(self, report: LosslessReport) -> None:
        """Keep the report, rewrite the lossless file (all reports so far) and record it."""
        self._reports[report.case] = report
        write_json_atomic(self._report_path, {"version": 1, **self._header,
                                              "reports": [r.to_json() for r in self._reports.values()]})
        self._record("lossless", report.to_json())
