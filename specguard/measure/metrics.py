"""Speculative-decoding counters from vLLM's Prometheus ``/metrics``, as deltas around a round.

Parsed with ``prometheus_client.parser`` by exact family name; samples of every label set
(engines, model names) are summed, except ``position`` for the per-position counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from specguard.config.errors import SpecguardError
from specguard.serving import http

NUM_DRAFTS = "vllm:spec_decode_num_drafts"
NUM_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
NUM_ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"
SPEC_FAMILIES = (NUM_DRAFTS, NUM_DRAFT_TOKENS, NUM_ACCEPTED, ACCEPTED_PER_POS)


class MetricsError(SpecguardError):
    pass


@dataclass(frozen=True)
class SpecCounters:
    """Cumulative counter values (or, after ``-``, deltas over a round)."""

    num_drafts: float = 0.0
    num_draft_tokens: float = 0.0
    num_accepted_tokens: float = 0.0
    accepted_per_pos: tuple[float, ...] = field(default=())

    def __sub__(self, before: "SpecCounters") -> "SpecCounters":
        n = max(len(self.accepted_per_pos), len(before.accepted_per_pos))
        a = self.accepted_per_pos + (0.0,) * (n - len(self.accepted_per_pos))
        b = before.accepted_per_pos + (0.0,) * (n - len(before.accepted_per_pos))
        return SpecCounters(self.num_drafts - before.num_drafts,
                            self.num_draft_tokens - before.num_draft_tokens,
                            self.num_accepted_tokens - before.num_accepted_tokens,
                            tuple(x - y for x, y in zip(a, b)))


@dataclass(frozen=True)
class Acceptance:
    rate: float                      # accepted draft tokens / draft tokens
    length: float                    # mean tokens per verification step: 1 + accepted / drafts
    per_position: tuple[float, ...]  # accepted at position i / drafts
    drafts: float
    draft_tokens: float
    accepted_tokens: float


def parse_spec_counters(text: str) -> SpecCounters | None:
    """Counters from a /metrics page; None when the page exposes no speculative family at all."""
    found: dict[str, float] = {}
    per_pos: dict[int, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise MetricsError(f"/metrics is not valid Prometheus text: {exc}") from exc
    for family in families:
        if family.name not in SPEC_FAMILIES:
            continue
        for sample in family.samples:
            # A counter family yields `<name>_total` and `<name>_created`; only the first counts.
            if sample.name != family.name + "_total":
                continue
            if not math.isfinite(sample.value) or sample.value < 0:
                raise MetricsError(f"{sample.name}{sample.labels}: counter value {sample.value!r} is not a "
                                   f"finite number >= 0")
            if family.name == ACCEPTED_PER_POS:
                pos = _position(sample.name, sample.labels)
                per_pos[pos] = per_pos.get(pos, 0.0) + sample.value
            else:
                found[family.name] = found.get(family.name, 0.0) + sample.value
    if not found and not per_pos:
        return None
    positions = tuple(per_pos.get(i, 0.0) for i in range(max(per_pos) + 1)) if per_pos else ()
    return SpecCounters(found.get(NUM_DRAFTS, 0.0), found.get(NUM_DRAFT_TOKENS, 0.0),
                        found.get(NUM_ACCEPTED, 0.0), positions)


MAX_POSITIONS = 256   # far beyond any num_speculative_tokens in use; guards against a garbage label


def _position(name: str, labels: dict[str, str]) -> int:
    raw = labels.get("position")
    if raw is None or not raw.isdigit() or int(raw) >= MAX_POSITIONS:
        raise MetricsError(f"{name}{labels}: expected a label position=\"0\"..\"{MAX_POSITIONS - 1}\", "
                           f"got {raw!r}")
    return int(raw)


def acceptance(delta: SpecCounters) -> Acceptance:
    """Acceptance figures from counter deltas; raises when the round made no drafts."""
    if delta.num_drafts <= 0 or delta.num_draft_tokens <= 0:
        raise MetricsError(f"no drafts were made during the round (drafts={delta.num_drafts:g}, "
                           f"draft tokens={delta.num_draft_tokens:g}); acceptance is undefined")
    return Acceptance(
        rate=delta.num_accepted_tokens / delta.num_draft_tokens,
        length=1.0 + delta.num_accepted_tokens / delta.num_drafts,
        per_position=tuple(x / delta.num_drafts for x in delta.accepted_per_pos),
        drafts=delta.num_drafts,
        draft_tokens=delta.num_draft_tokens,
        accepted_tokens=delta.num_accepted_tokens,
    )


def scrape(base_url: str, *, api_key: str | None = None, timeout: float = 30.0) -> str:
    return http.get_text(f"{base_url}/metrics", api_key=api_key, timeout=timeout)


def spec_counters(base_url: str, *, api_key: str | None = None, server_name: str = "") -> SpecCounters:
    """Scrape the counters of a speculative server; a server exposing none fails loudly."""
    counters = parse_spec_counters(scrape(base_url, api_key=api_key))
    if counters is None:
        raise MetricsError(f"server {server_name!r} at {base_url} runs a speculative config but its /metrics "
                           f"expose none of {', '.join(SPEC_FAMILIES)}; cannot measure acceptance")
    return counters
