"""Lossless equivalence: greedy outputs with and without drafts, compared token id by token id.

vLLM promises speculative decoding is lossless "up to hardware numerics": verifying k+1 tokens in
one forward pass rounds differently from decoding one, so where two tokens are (almost) tied the
speculative run may pick the other one. At the first differing position, with T the plain run's
token and X the speculative run's, the difference is a **near-tie** when, with ``m`` the effective
margin (below):

(a) X is the plain run's runner-up: both runs' top-k logprobs list T and X, and no token other
    than T is ahead of X in the plain run (equal logprobs may be listed in either order, so this
    does not rely on the listed order of a tie);
(b) the plain run sees the pair within ``m``: ``|lp_plain(T) - lp_plain(X)| <= m``;
(c) the speculative run sees the pair within ``m`` too, in its own logprobs:
    ``|lp_spec(T) - lp_spec(X)| <= m`` (X chosen while clearly behind, or clearly ahead, is real);
(d) the two runs disagree about the pair by at most ``m``:
    ``|(lp_plain(T) - lp_plain(X)) - (lp_spec(T) - lp_spec(X))| <= m``.

Any other difference is a **real divergence**, and so is one where either run's top-k lacks T or
X (no evidence of a tie). (d) is the quantity rounding actually perturbs: the softmax's log-sum
cancels in a difference of two logprobs, so each run's gap is the pair's logit gap with that run's
rounding error, and (d) is the difference of the two errors. Bounding (b) and (c) alone would
accept a disagreement of up to 2m (plain T ahead by m, speculative X ahead by m); what rounding
produces is one step (a gap of one unit in the last place in one run, an exact tie in the other).

**The effective margin** is ``max(near_tie_margin, resolution(dtype))``: the configured margin
(nats), raised to one unit in the last place of the server's compute dtype at a logit of
magnitude ``LOGIT_SCALE`` (32), ``2 ** (floor(log2(32)) - mantissa bits)``: bfloat16 (7 explicit
mantissa bits) 0.25, float16 (10) 0.03125, float32 (23) ~3.8e-6. bfloat16 logits of magnitude
16-32 sit on a grid of 0.125 and 32-64 on a grid of 0.25, so a configured 0.05 would call a
one-step flip real; float32 servers keep the configured margin and stay strict. The scale is a
fixed choice, not measured per model: it covers one-step flips between tokens whose logits are
below 64 in magnitude (the bfloat16 flips that motivated it had gaps of 0.125 and 0.25); a flip of
one step between logits of 64-128 (0.5) would still be called real.

**dtype names** are those of ``vllm serve --dtype``: ``float32``/``float``, ``float16``/``half``,
``bfloat16`` (``bf16``/``fp16``/``fp32`` and a ``torch.`` prefix are accepted too). ``auto`` is
taken as bfloat16: vLLM's auto never computes in float32 (FP16 for FP32 and FP16 checkpoints,
BF16 for BF16 ones) and bfloat16 is the coarser of the two, so a server left at ``auto`` is not
failed for rounding; a matrix that wants float32-strict comparisons says ``dtype = "float32"``.
A name not known here gets the configured margin only (strict): it is not loosened on a guess.

Logprobs arrive as float32 values (vLLM's log-softmax is float32), each rounded at its own
magnitude, so every bound above is compared with ``ROUNDING`` of slack: 2**-18, one float32 step
at the logit scale, which is four half-steps (the most that (d)'s four logprobs can add) of
logprobs above -32. A gap of exactly one bfloat16 step is not called real for its last bit.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import openai

from specguard.config.matrix import Matrix, ServerConfig
from specguard.config.prompts import Prompt

END = -1   # stands for "the output ended here" when one run is shorter than the other

LOGIT_SCALE = 32.0   # the logit magnitude at which a dtype's resolution is taken (see the docstring)
AUTO_DTYPE = "bfloat16"   # what vLLM's --dtype auto is taken to compute in
# explicit mantissa bits (the significand has one more) of the names ``vllm serve --dtype`` takes
MANTISSA_BITS = {"float32": 23, "float": 23, "fp32": 23,
                 "float16": 10, "half": 10, "fp16": 10,
                 "bfloat16": 7, "bf16": 7}


@dataclass(frozen=True)
class LosslessCase:
    """One lossless test: a speculative server's greedy outputs against its plain server's."""

    id: str
    server: ServerConfig
    concurrency: int
    reference: ServerConfig
    mode: str   # strict | diagnostic


def lossless_cases(matrix: Matrix) -> list[LosslessCase]:
    """c=1 and the matrix's highest concurrency (batched verification is where divergences appear).
    The plain server's outputs are computed by the first comparison that needs them and cached."""
    concurrencies = sorted({1, max(matrix.workload.concurrency)})
    cases = []
    for server in matrix.server_order():
        ref = matrix.baseline_of(server)
        if server.is_speculative and server.lossless != "off" and ref is not None:
            cases += [LosslessCase(f"{matrix.id_prefix}-{server.name}-c{c}-lossless", server, c, ref, server.lossless)
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


@dataclass(frozen=True)
class Divergence:
    prompt_id: str
    index: int
    base_token: int
    spec_token: int
    base_top: tuple[tuple[int, float], ...]
    spec_top: tuple[tuple[int, float], ...]
    margin: float | None     # baseline top-1 minus top-2 logprob at the index (the plain gap)
    kind: str                # "near-tie" | "real"


def mantissa_bits(dtype: str) -> int:
    """Explicit mantissa bits of a ``--dtype`` name; ``auto`` is ``AUTO_DTYPE``, an unknown name float32."""
    name = dtype.strip().lower().removeprefix("torch.")
    return MANTISSA_BITS.get(AUTO_DTYPE if name == "auto" else name, MANTISSA_BITS["float32"])


def resolution(dtype: str) -> float:
    """One unit in the last place of ``dtype`` at a logit of magnitude ``LOGIT_SCALE``:
    bfloat16 0.25, float16 0.03125, float32 2**-18."""
    return 2.0 ** (math.floor(math.log2(LOGIT_SCALE)) - mantissa_bits(dtype))


def effective_margin(near_tie_margin: float, dtype: str) -> float:
    """The near-tie margin used for a server computing in ``dtype``: never below the configured one."""
    return max(near_tie_margin, resolution(dtype))


ROUNDING = resolution("float32")   # slack for the float32 rounding of the logprobs themselves


def compare(base: Greedy, spec: Greedy, near_tie_margin: float, dtype: str = "float32") -> Divergence | None:
    """The first position where the two runs differ, classified; None when they are identical.
    ``dtype``: the servers' compute dtype (``--dtype``); it sets the effective margin."""
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
    near = _near_tie(b_tok, s_tok, b_top, s_top, effective_margin(near_tie_margin, dtype))
    return Divergence(base.prompt_id, index, b_tok, s_tok, b_top, s_top, margin, "near-tie" if near else "real")


def _near_tie(b_tok: int, s_tok: int, b_top: tuple[tuple[int, float], ...], s_top: tuple[tuple[int, float], ...],
              margin: float) -> bool:
    """Rules (a)-(d) of the module docstring for plain token ``b_tok`` vs speculative ``s_tok``."""
    b, s = dict(b_top), dict(s_top)
    if b_tok == s_tok or not all(t in b and t in s for t in (b_tok, s_tok)):
        return False
    if any(lp > b[s_tok] for t, lp in b_top if t != b_tok):   # (a) s_tok is not the plain runner-up
        return False
    plain_gap, spec_gap = b[b_tok] - b[s_tok], s[b_tok] - s[s_tok]
    bound = margin + ROUNDING
    return abs(plain_gap) <= bound and abs(spec_gap) <= bound and abs(plain_gap - spec_gap) <= bound


@dataclass
class LosslessReport:
    case: str
    server: str
    reference: str
    concurrency: int
    mode: str
    near_tie_margin: float   # the effective margin: max(configured, resolution(dtype))
    compared: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    dtype: str = "float32"   # the servers' --dtype, as configured
    configured_margin: float | None = None   # the matrix's lossless.near_tie_margin; None: near_tie_margin

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
                f"{self.real} real divergences ({self.mode}, {self.dtype}, margin {self.near_tie_margin:g})")

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
                "concurrency": self.concurrency, "mode": self.mode, "dtype": self.dtype,
                "near_tie_margin": self.near_tie_margin,
                "near_tie_margin_configured": (self.near_tie_margin if self.configured_margin is None
                                               else self.configured_margin),
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
                base: Sequence[Greedy], spec: Sequence[Greedy], dtype: str = "float32") -> LosslessReport:
    """Every speculative output against the plain output of the same prompt. ``margin``: the configured
    near-tie margin; ``dtype``: the servers' ``--dtype`` (``ServerConfig.dtype``); the report keeps
    the effective margin."""
    report = LosslessReport(case_id, server, reference, concurrency, mode, effective_margin(margin, dtype),
                            dtype=dtype, configured_margin=margin)
    by_id = {g.prompt_id: g for g in base}
    for s in spec:
        report.compared += 1
        d = compare(by_id[s.prompt_id], s, margin, dtype)
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
    """Temperature-0 outputs of ``prompts`` (first turn), ``concurrency`` requests in flight.

    These are functional requests, not timed ones, so they go through the openai client, which
    retries a connection the server dropped before answering (the measuring path keeps aiohttp)."""
    sem = asyncio.Semaphore(concurrency)
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key or "EMPTY", timeout=timeout_s,
                                max_retries=2)

    async def one(p: Prompt) -> Greedy:
        async with sem:
            try:
                resp = await client.chat.completions.create(
                    model=model, messages=p.first_messages(), max_tokens=max_tokens, temperature=0.0,
                    seed=seed, logprobs=True, top_logprobs=top_logprobs,
                    extra_body={"return_tokens_as_token_ids": True})
            except openai.APIStatusError as exc:
                # from None: the client's own frames (headers among their arguments) stay out of the traceback
                raise RuntimeError(f"{p.id}: HTTP {exc.status_code}: {str(exc.body)[:500]}") from None
        return parse_choice(p.id, resp.choices[0].model_dump())

    async with client:
        return list(await asyncio.gather(*(one(p) for p in prompts)))
