"""specguard.measure.metrics: a realistic vLLM /metrics page, deltas, acceptance figures, bad pages."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.measure.metrics import (
    ACCEPTED_PER_POS,
    NUM_ACCEPTED,
    NUM_DRAFT_TOKENS,
    NUM_DRAFTS,
    Acceptance,
    MetricsError,
    SpecCounters,
    acceptance,
    parse_spec_counters,
)

PROPS = settings(max_examples=50, deadline=None)

# What vLLM 0.32 serves on /metrics for one engine of an n-gram k=4 server (trimmed, but every kind
# of family is present: counters with their `_created` gauges, gauges, histograms, other counters).
PAGE = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12873.0
python_gc_objects_collected_total{generation="1"} 2210.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.234567168e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="ngram4"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="ngram4"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="ngram4"} 0.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="ngram4"} 412.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="ngram4"} 1.7579213352203543e+09
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="ngram4"} 128.0
# HELP vllm:generation_tokens_created Number of generation tokens processed.
# TYPE vllm:generation_tokens_created gauge
vllm:generation_tokens_created{engine="0",model_name="ngram4"} 1.7579213352203543e+09
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="ngram4"} 10.0
# HELP vllm:spec_decode_num_drafts_created Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_created gauge
vllm:spec_decode_num_drafts_created{engine="0",model_name="ngram4"} 1.7579213352204142e+09
# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="ngram4"} 40.0
# HELP vllm:spec_decode_num_draft_tokens_created Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_created gauge
vllm:spec_decode_num_draft_tokens_created{engine="0",model_name="ngram4"} 1.7579213352204142e+09
# HELP vllm:spec_decode_num_accepted_tokens_total Number of accepted tokens.
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="ngram4"} 16.0
# HELP vllm:spec_decode_num_accepted_tokens_created Number of accepted tokens.
# TYPE vllm:spec_decode_num_accepted_tokens_created gauge
vllm:spec_decode_num_accepted_tokens_created{engine="0",model_name="ngram4"} 1.7579213352204142e+09
# HELP vllm:spec_decode_num_accepted_tokens_per_pos_total Accepted tokens per draft position.
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="ngram4",position="0"} 7.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="ngram4",position="1"} 5.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="ngram4",position="2"} 3.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="ngram4",position="3"} 1.0
# HELP vllm:spec_decode_num_accepted_tokens_per_pos_created Accepted tokens per draft position.
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_created gauge
vllm:spec_decode_num_accepted_tokens_per_pos_created{engine="0",model_name="ngram4",position="0"} 1.75e+09
vllm:spec_decode_num_accepted_tokens_per_pos_created{engine="0",model_name="ngram4",position="1"} 1.75e+09
vllm:spec_decode_num_accepted_tokens_per_pos_created{engine="0",model_name="ngram4",position="2"} 1.75e+09
vllm:spec_decode_num_accepted_tokens_per_pos_created{engine="0",model_name="ngram4",position="3"} 1.75e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="ngram4"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="ngram4"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="ngram4"} 4.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="ngram4"} 4.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="ngram4"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="ngram4"} 0.31
# HELP vllm:time_to_first_token_seconds_created Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds_created gauge
vllm:time_to_first_token_seconds_created{engine="0",model_name="ngram4"} 1.7579213352205231e+09
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="length",model_name="ngram4"} 4.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="ngram4"} 0.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_gpu_blocks="7281"} 1.0
"""

# The same server after one more round, now with a second engine (data parallel): every label set
# of a family is summed, except that positions stay apart.
PAGE_TWO_ENGINES = PAGE.replace(
    'vllm:spec_decode_num_drafts_total{engine="0",model_name="ngram4"} 10.0',
    'vllm:spec_decode_num_drafts_total{engine="0",model_name="ngram4"} 30.0\n'
    'vllm:spec_decode_num_drafts_total{engine="1",model_name="ngram4"} 20.0',
).replace(
    'vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="ngram4"} 40.0',
    'vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="ngram4"} 120.0\n'
    'vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="ngram4"} 80.0',
).replace(
    'vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="ngram4"} 16.0',
    'vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="ngram4"} 50.0\n'
    'vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="ngram4"} 30.0',
).replace(
    'position="0"} 7.0', 'position="0"} 20.0\n'
    'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="ngram4",position="0"} 15.0',
).replace(
    'position="1"} 5.0', 'position="1"} 15.0\n'
    'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="ngram4",position="1"} 9.0',
).replace(
    'position="2"} 3.0', 'position="2"} 10.0\n'
    'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="ngram4",position="2"} 5.0',
).replace(
    'position="3"} 1.0', 'position="3"} 5.0\n'
    'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="ngram4",position="3"} 1.0',
)


def spec_lines(c: SpecCounters, engine: str = "0", model: str = "m") -> str:
    """The spec-decoding part of a /metrics page, in prometheus_client's exposition format."""
    labels = f'engine="{engine}",model_name="{model}"'
    out = []
    for family, value in ((NUM_DRAFTS, c.num_drafts), (NUM_DRAFT_TOKENS, c.num_draft_tokens),
                          (NUM_ACCEPTED, c.num_accepted_tokens)):
        out += [f"# TYPE {family}_total counter", f"{family}_total{{{labels}}} {value!r}",
                f"# TYPE {family}_created gauge", f"{family}_created{{{labels}}} 1.7e+09"]
    out.append(f"# TYPE {ACCEPTED_PER_POS}_total counter")
    out += [f'{ACCEPTED_PER_POS}_total{{{labels},position="{i}"}} {v!r}'
            for i, v in enumerate(c.accepted_per_pos)]
    return "\n".join(out) + "\n"


# --- parsing ---------------------------------------------------------------------------------

def test_parse_realistic_page() -> None:
    assert parse_spec_counters(PAGE) == SpecCounters(10.0, 40.0, 16.0, (7.0, 5.0, 3.0, 1.0))


def test_created_gauges_are_not_counted() -> None:
    """Only `<family>_total` samples count; the `_created` timestamps (1.75e9) must not leak in."""
    c = parse_spec_counters(PAGE)
    assert c is not None
    assert max((c.num_drafts, c.num_draft_tokens, c.num_accepted_tokens) + c.accepted_per_pos) < 1e3


def test_two_engines_are_summed() -> None:
    assert parse_spec_counters(PAGE_TWO_ENGINES) == SpecCounters(50.0, 200.0, 80.0, (35.0, 24.0, 15.0, 6.0))


def test_sample_order_does_not_matter() -> None:
    """Positions listed out of order (and counters listed before their siblings) parse the same."""
    lines = PAGE.splitlines()
    pos = [i for i, line in enumerate(lines) if line.startswith(ACCEPTED_PER_POS + "_total{")]
    reordered = lines[:pos[0]] + [lines[i] for i in reversed(pos)] + lines[pos[-1] + 1:]
    assert parse_spec_counters("\n".join(reordered) + "\n") == parse_spec_counters(PAGE)


def test_missing_position_counts_as_zero() -> None:
    page = PAGE.replace('position="1"} 5.0', 'position="9"} 0.0').replace(
        f'{ACCEPTED_PER_POS}_created{{engine="0",model_name="ngram4",position="1"}} 1.75e+09\n',
        "")
    c = parse_spec_counters(page)
    assert c is not None and c.accepted_per_pos == (7.0, 0.0, 3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_page_without_spec_families_returns_none() -> None:
    plain = "\n".join(line for line in PAGE.splitlines() if "spec_decode" not in line) + "\n"
    assert "vllm:generation_tokens_total" in plain
    assert parse_spec_counters(plain) is None
    assert parse_spec_counters("") is None


def test_only_some_spec_families_fill_the_rest_with_zeros() -> None:
    page = f'# TYPE {NUM_DRAFTS}_total counter\n{NUM_DRAFTS}_total{{engine="0"}} 4.0\n'
    assert parse_spec_counters(page) == SpecCounters(4.0, 0.0, 0.0, ())


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>404 Not Found</body></html>",
        "garbage here",
        "vllm:spec_decode_num_drafts_total{engine=0} 1.0",       # unquoted label value
        'vllm:spec_decode_num_drafts_total{engine="0" 1.0',        # unclosed label set
        "# TYPE vllm:spec_decode_num_drafts_total counter\nvllm:spec_decode_num_drafts_total abc\n",
        '{"detail": "Unauthorized"}',
    ],
)
def test_garbage_raises_metrics_error(text: str) -> None:
    with pytest.raises(MetricsError, match="not valid Prometheus text"):
        parse_spec_counters(text)


@pytest.mark.parametrize("labels", ['engine="0"', 'engine="0",position="x"'])
def test_bad_position_label_raises_metrics_error(labels: str) -> None:
    page = f"# TYPE {ACCEPTED_PER_POS}_total counter\n{ACCEPTED_PER_POS}_total{{{labels}}} 3.0\n"
    with pytest.raises(MetricsError):
        parse_spec_counters(page)


# --- deltas and acceptance -------------------------------------------------------------------

def test_delta_between_two_scrapes() -> None:
    before, after = parse_spec_counters(PAGE), parse_spec_counters(PAGE_TWO_ENGINES)
    assert before is not None and after is not None
    assert after - before == SpecCounters(40.0, 160.0, 64.0, (28.0, 19.0, 12.0, 5.0))


def test_delta_pads_shorter_position_lists() -> None:
    assert SpecCounters(5, 10, 6, (4.0, 2.0)) - SpecCounters(1, 2, 1, ()) == SpecCounters(4, 8, 5, (4.0, 2.0))
    assert (SpecCounters(5, 10, 6, (4.0,)) - SpecCounters(1, 2, 1, (1.0, 0.0))
            == SpecCounters(4, 8, 5, (3.0, 0.0)))


def test_acceptance_exact_values() -> None:
    before, after = parse_spec_counters(PAGE), parse_spec_counters(PAGE_TWO_ENGINES)
    assert before is not None and after is not None
    a = acceptance(after - before)
    assert a == Acceptance(rate=64 / 160, length=1 + 64 / 40,
                           per_position=(28 / 40, 19 / 40, 12 / 40, 5 / 40),
                           drafts=40.0, draft_tokens=160.0, accepted_tokens=64.0)
    assert (a.rate, a.length) == (0.4, 2.6)


def test_acceptance_of_a_single_scrape() -> None:
    c = parse_spec_counters(PAGE)
    assert c is not None
    a = acceptance(c)
    assert (a.rate, a.length, a.per_position) == (0.4, 2.6, (0.7, 0.5, 0.3, 0.1))


def test_acceptance_of_a_perfect_self_draft() -> None:
    """Every draft accepted: length k + 1, rate 1, every position 1."""
    a = acceptance(SpecCounters(25.0, 100.0, 100.0, (25.0,) * 4))
    assert (a.rate, a.length, a.per_position) == (1.0, 5.0, (1.0, 1.0, 1.0, 1.0))


def test_acceptance_with_nothing_accepted() -> None:
    a = acceptance(SpecCounters(8.0, 32.0, 0.0, (0.0,) * 4))
    assert (a.rate, a.length, a.per_position) == (0.0, 1.0, (0.0, 0.0, 0.0, 0.0))


@pytest.mark.parametrize("delta", [SpecCounters(), SpecCounters(0.0, 0.0, 0.0, (0.0,) * 4),
                                   SpecCounters(3.0, 0.0, 0.0), SpecCounters(0.0, 12.0, 4.0)])
def test_no_drafts_raises(delta: SpecCounters) -> None:
    with pytest.raises(MetricsError, match="no drafts were made during the round"):
        acceptance(delta)


def test_page_minus_itself_has_no_drafts() -> None:
    c = parse_spec_counters(PAGE)
    assert c is not None
    with pytest.raises(MetricsError, match="acceptance is undefined"):
        acceptance(c - c)


# --- Hypothesis ------------------------------------------------------------------------------

@st.composite
def counters(draw: st.DrawFn) -> SpecCounters:
    """Consistent cumulative counters: draft tokens = k x drafts, accepted at position i <= drafts."""
    k = draw(st.integers(1, 8))
    drafts = draw(st.integers(0, 10**6))
    per_pos = draw(st.lists(st.integers(0, drafts), min_size=k, max_size=k))
    per_pos.sort(reverse=True)   # a position is reached only when the one before it was accepted
    return SpecCounters(float(drafts), float(k * drafts), float(sum(per_pos)),
                        tuple(float(x) for x in per_pos))


@PROPS
@given(c=counters())
def test_acceptance_bounds(c: SpecCounters) -> None:
    k = len(c.accepted_per_pos)
    if c.num_drafts == 0:
        with pytest.raises(MetricsError):
            acceptance(c)
        return
    a = acceptance(c)
    assert 0.0 <= a.rate <= 1.0
    assert 1.0 <= a.length <= k + 1
    assert all(0.0 <= p <= 1.0 for p in a.per_position)
    assert math.isclose(a.length, 1.0 + sum(a.per_position), rel_tol=1e-12)
    assert math.isclose(a.rate * k, a.length - 1.0, rel_tol=1e-12, abs_tol=1e-12)


@PROPS
@given(c=counters(), engines=st.integers(1, 3))
def test_page_round_trip_and_self_subtraction(c: SpecCounters, engines: int) -> None:
    page = PAGE.split("# HELP vllm:spec_decode")[0]   # the unrelated families only
    page += "".join(spec_lines(c, engine=str(e)) for e in range(engines))
    parsed = parse_spec_counters(page)
    assert parsed is not None
    assert parsed == SpecCounters(c.num_drafts * engines, c.num_draft_tokens * engines,
                                  c.num_accepted_tokens * engines,
                                  tuple(x * engines for x in c.accepted_per_pos))
    zero = parsed - parsed
    assert zero == SpecCounters(0.0, 0.0, 0.0, (0.0,) * len(c.accepted_per_pos))


@PROPS
@given(before=counters(), more=counters())
def test_delta_of_growing_counters_is_the_growth(before: SpecCounters, more: SpecCounters) -> None:
    n = max(len(before.accepted_per_pos), len(more.accepted_per_pos))
    pad = lambda t: t + (0.0,) * (n - len(t))  # noqa: E731
    after = SpecCounters(before.num_drafts + more.num_drafts, before.num_draft_tokens + more.num_draft_tokens,
                         before.num_accepted_tokens + more.num_accepted_tokens,
                         tuple(x + y for x, y in zip(pad(before.accepted_per_pos),
                                                     pad(more.accepted_per_pos))))
    assert after - before == SpecCounters(more.num_drafts, more.num_draft_tokens, more.num_accepted_tokens,
                                          pad(more.accepted_per_pos))


_PROM_ALPHABET = st.sampled_from(list('abz_:{}=",. 0123456789#\n-+eE') + ["TYPE", "HELP", "counter", "_total",
                                                                            NUM_DRAFTS, ACCEPTED_PER_POS])


@PROPS
@given(text=st.lists(_PROM_ALPHABET, max_size=40).map("".join))
def test_arbitrary_text_is_counters_none_or_metrics_error(text: str) -> None:
    try:
        result = parse_spec_counters(text)
    except MetricsError:
        return
    assert result is None or isinstance(result, SpecCounters)
