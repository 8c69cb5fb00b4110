"""Lossless equivalence: greedy outputs of each speculative server against its plain server, token id
by token id, at concurrency 1 and at the matrix's highest concurrency."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specguard.lossless.compare import compare, compare_all
from specguard.config.prompts import Prompt

pytestmark = pytest.mark.lossless


def test_lossless(lossless_case, specguard, vllm_servers):
    case, ls = lossless_case, specguard.matrix.lossless
    why = specguard.one_url(case.server)
    if why:
        pytest.skip(why)
    plain_server, spec_server = vllm_servers.pair(case.reference, case.server)
    base, spec = specguard.greedy([(case.reference, plain_server), (case.server, spec_server)], case.concurrency)
    for name, outputs in ((case.reference.name, base), (case.server.name, spec)):
        empty = [g.prompt_id for g in outputs if not g.token_ids]
        assert not empty, f"{case.id}: {name} returned no tokens (or no logprobs) for {empty}"
    report = compare_all(case.id, case.server.name, case.reference.name, case.concurrency, case.mode,
                         ls.near_tie_margin, base, spec, dtype=case.server.dtype)
    specguard.record_lossless(report)
    failure = report.failure(ls.min_exact_match)
    if failure:
        pytest.fail(failure, pytrace=False)
    if report.near_ties:
        pytest.xfail(f"near-ties only, reported not failed:\n{report.table()}")


_WORDS = ["red", "blue", "apple", "one", "two", "three", "def", "return", "x", "=", "+", "1", "the", "cat"]
_repetitive = st.builds(lambda words, reps: "Repeat exactly: " + " ".join(words * reps),
                        st.lists(st.sampled_from(_WORDS), min_size=1, max_size=5), st.integers(2, 6))
_free = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.?0123456789", min_size=1, max_size=60).filter(str.strip)


def test_lossless_generated(lossless_pair, specguard, vllm_servers):
    """Generated prompts (repetitive text makes n-gram drafts fire) on both servers at once; a real
    divergence is shrunk by Hypothesis to a small prompt."""
    plain, spec = lossless_pair
    ls = specguard.matrix.lossless
    why = specguard.one_url(spec)
    if why:
        pytest.skip(why)
    plain_server, spec_server = vllm_servers.pair(plain, spec)

    @settings(max_examples=ls.hypothesis_examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(text=st.one_of(_repetitive, _free))
    def check(text: str) -> None:
        prompt = [Prompt("generated", "generated", (text,))]
        base, ours = (g[0] for g in specguard.greedy([(plain, plain_server), (spec, spec_server)], 1, prompt))
        d = compare(base, ours, ls.near_tie_margin, dtype=spec.dtype)
        assert d is None or d.kind == "near-tie", (
            f"real divergence for prompt {text!r} at token {d.index}: plain {d.base_token} vs "
            f"{spec.name} {d.spec_token}; plain top-2 {d.base_top[:2]}, margin {d.margin}")

    check()
