"""Lossless equivalence: greedy outputs with and without drafts, compared token id by token id.

vLLM promises speculative decoding is lossless "up to hardware numerics". A difference is a
**near-tie** when, at the first differing position, the plain run's top-1 and top-2 logprobs are
within ``near_tie_margin`` nats and the speculative run picked the plain run's top-2 token; any
other difference is a **real divergence**.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from specguard.matrix import Matrix, ServerConfig
from specguard.prompts import Prompt

END = -1   # stands for "the output ended here" when one run is shorter than the other


@dataclass(frozen=True)
class LosslessCase:
    """One lossless test: record the plain server's outputs (``reference`` None) or compare with them."""

    id: str
    server: ServerConfig
    concurrency: int
    reference: ServerConfig | None
    mode: str   # strict | diagnostic


def lossless_cases(matrix: Matrix) -> list[LosslessCase]:
    """c=1 and the matrix's highest concurrency (batched verification is where divergences appear)."""
    concurrencies = sorted({1, max(matrix.workload.concurrency)})
    compared = [s for s in matrix.servers if s.is_speculative and s.lossless != "off"
                and matrix.baseline_of(s) is not None]
    cases = []
    for server in matrix.server_order():
        if server.is_speculative and server in compared:
            ref = matrix.baseline_of(server)
            cases += [LosslessCase(f"{matrix.id_prefix}-{server.name}-c{c}-lossless", server, c, ref, server.lossless)
                      for c in concurrencies]
        elif not server.is_speculative and any(matrix.baseline_of(s) == server for s in compared):
            cases += [LosslessCase(f"{matrix.id_prefix}-{server.name}-c{c}-reference", server, c, None, server.lossless)
                      for c in concurrencies]
    return cases


def lossless_pairs(matrix: Matrix) -> list[tuple[ServerConfig, ServerConfig]]:
    """(plain, speculative) pairs for the generated-prompt test: strict servers that start right
    after their plain server, so both can be live together without an extra start. Needs room for
    two servers, so a matrix turns it on with ``lossless.hypothesis_examples``."""
    if matrix.lossless.hypothesis_examples <= 0:
        return []
    order = matrix.server_order()
    return [(order[i - 1], s) for i, s in enumerate(order)
            if i > 0 and s.is_speculative and s.lossless == "strict" and matrix.baseline_of(s) == order[i - 1]]


def lossless_prompts(prompts: dict[str, list[Prompt]], categories: Sequence[str], n: int) -> list[Prompt]:
    """``n`` prompts taken round-robin over the categories, so every category is represented."""
    queues = [list(prompts[c]) for c in categories if prompts.get(c)]
    out: list[Prompt] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


@dataclass(frozen=True)
class Greedy:
    prompt_id: str
    token_ids: tuple[int, ...]
    top: tuple[tuple[tuple[int, float], ...], ...]   # per position: (token id, logprob), best first
    text: str

    def to_json(self) -> dict[str, Any]:
        # JSON has no -inf: a token with no probability at all is stored as -1e30.
        return {"prompt_id": self.prompt_id, "token_ids": list(self.token_ids),
                "top": [[[t, lp if math.isfinite(lp) else -1e30] for t, lp in pos] for pos in self.top],
                "text": self.text}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Greedy":
        return cls(raw["prompt_id"], tuple(raw["token_ids"]),
                   tuple(tuple((int(t), float(lp)) for t, lp in pos) for pos in raw["top"]), raw["text"])


@dataclass(frozen=True)
class Divergence:
    prompt_id: str
    index: int
    base_token: int
    spec_token: int
    base_top: tuple[tuple[int, float], ...]
    spec_top: tuple[tuple[int, float], ...]
    margin: float | None     # baseline top-1 minus top-2 logprob at the index
    kind: str                # "near-tie" | "real"


def compare(base: Greedy, spec: Greedy, near_tie_margin: float) -> Divergence | None:
    """The first position where the two runs differ, classified; None when they are identical."""
    n = min(len(base.token_ids), len(spec.token_ids))
    index = next((i for i in range(n) if base.token_ids[i] != spec.token_ids[i]), None)
    if index is None:
        if len(base.token_ids) == len(spec.token_ids):
            return None
        index = n
    b_tok = base.token_ids[index] if index < len(base.token_ids) else END
    s_tok = spec.token_ids[index] if index < len(spec.token_ids) else END
    b_top = base.top[index] if index < len(base.top) else ()
    s_top = spec.top[index] if index < len(spec.top) else ()
    margin = b_top[0][1] - b_top[1][1] if len(b_top) >= 2 else None
    near = margin is not None and margin <= near_tie_margin and s_tok == b_top[1][0]
    return Divergence(base.prompt_id, index, b_tok, s_tok, b_top, s_top, margin, "near-tie" if near else "real")


@dataclass
class LosslessReport:
    case: str
    server: str
    reference: str
    concurrency: int
    mode: str
    near_tie_margin: float
    compared: int = 0
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def identical(self) -> int:
        return self.compared - len(self.divergences)

    @property
    def near_ties(self) -> int:
        return sum(d.kind == "near-tie" for d in self.divergences)

    @property
    def real(self) -> int:
        return sum(d.kind == "real" for d in self.divergences)

    @property
    def exact_rate(self) -> float:
        return self.identical / self.compared if self.compared else 0.0

    def failure(self, min_exact_match: float) -> str | None:
        """Strict: no real divergence and an exact-match rate at or above the floor.
        Diagnostic: near-ties are reported, only real divergences fail."""
        problems = []
        if self.real:
            problems.append(f"{self.real} real divergence(s)")
        if self.mode == "strict" and self.exact_rate < min_exact_match:
            problems.append(f"exact-match rate {self.exact_rate:.0%} is below the floor {min_exact_match:.0%}")
        if not problems:
            return None
        return f"{self.case}: {' and '.join(problems)} vs {self.reference}\n{self.table()}"

    def summary(self) -> str:
        return (f"{self.case}: {self.compared} prompts, {self.identical} identical, {self.near_ties} near-ties, "
                f"{self.real} real divergences ({self.mode}, margin {self.near_tie_margin:g})")

    def table(self) -> str:
        lines = [self.summary()]
        if self.divergences:
            lines.append(f"  {'prompt':<18} {'index':>5} {'plain':>7} {'spec':>7} {'margin':>7} {'kind':<9} "
                         f"plain top-2 / spec top-2 (token:logprob)")
            for d in self.divergences:
                margin = "-" if d.margin is None else f"{d.margin:.4f}"
                lines.append(f"  {d.prompt_id:<18} {d.index:>5} {_tok(d.base_token):>7} {_tok(d.spec_token):>7} "
                             f"{margin:>7} {d.kind:<9} {_top(d.base_top)} / {_top(d.spec_top)}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "server": self.server, "reference": self.reference,
                "concurrency": self.concurrency, "mode": self.mode, "near_tie_margin": self.near_tie_margin,
                "compared": self.compared, "identical": self.identical, "near_ties": self.near_ties,
                "real_divergences": self.real, "exact_match_rate": self.exact_rate,
                "divergences": [_finite(asdict(d)) for d in self.divergences]}


def _finite(value: Any) -> Any:
    """The same structure with -inf/inf/NaN logprobs replaced by ±1e30 (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return -1e30 if value < 0 or math.isnan(value) else 1e30
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _tok(token: int) -> str:
    return "<end>" if token == END else str(token)


def _top(top: tuple[tuple[int, float], ...]) -> str:
    return " ".join(f"{_tok(t)}:{lp:.3f}" for t, lp in top[:2]) or "-"


def compare_all(case_id: str, server: str, reference: str, concurrency: int, mode: str, margin: float,
                base: Sequence[Greedy], spec: Sequence[Greedy]) -> LosslessReport:
    report = LosslessReport(case_id, server, reference, concurrency, mode, margin)
    by_id = {g.prompt_id: g for g in base}
    for s in spec:
        report.compared += 1
        d = compare(by_id[s.prompt_id], s, margin)
        if d is not None:
            report.divergences.append(d)
    return report


# --- requests ----------------------------------------------------------------------------------

def parse_choice(prompt_id: str, choice: dict[str, Any]) -> Greedy:
    """Token ids and top-k logprobs of one chat choice returned with ``return_tokens_as_token_ids``."""
    entries = (choice.get("logprobs") or {}).get("content") or []
    ids, tops = [], []
    for e in entries:
        ids.append(_token_id(e["token"]))
        tops.append(tuple(sorted(((_token_id(t["token"]), float(t["logprob"])) for t in e.get("top_logprobs", [])),
                                 key=lambda x: -x[1])))
    return Greedy(prompt_id, tuple(ids), tuple(tops), (choice.get("message") or {}).get("content") or "")


def _token_id(token: str) -> int:
    if not token.startswith("token_id:"):
        raise ValueError(f"expected 'token_id:<n>' (return_tokens_as_token_ids), got {token!r}")
    return int(token[len("token_id:"):])


async def greedy_outputs(base_url: str, model: str, prompts: Sequence[Prompt], *, concurrency: int,
                         max_tokens: int, top_logprobs: int, seed: int, api_key: str | None = None,
                         timeout_s: float = 600.0) -> list[Greedy]:
    """Temperature-0 outputs of ``prompts`` (first turn), ``concurrency`` requests in flight."""
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def one(session: aiohttp.ClientSession, p: Prompt) -> Greedy:
        payload = {"model": model, "messages": p.first_messages(), "max_tokens": max_tokens, "temperature": 0.0,
                   "seed": seed, "logprobs": True, "top_logprobs": top_logprobs,
                   "return_tokens_as_token_ids": True}
        async with sem:
            async with session.post(f"{base_url}/v1/chat/completions", json=payload) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise RuntimeError(f"{p.id}: HTTP {resp.status}: {str(body)[:500]}")
        return parse_choice(p.id, body["choices"][0])

    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        return list(await asyncio.gather(*(one(session, p) for p in prompts)))
