"""specguard.config.matrix: the tiny-cpu matrix, every error path (file + dotted field), corruption fuzzing."""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specguard.config.errors import InputError
from specguard.config.matrix import Matrix, ServerConfig, load_matrix, parse_matrix
from specguard.config.tolerance import Tolerance

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "fixtures" / "matrices" / "tiny-cpu.toml"
TINY_TEXT = TINY.read_text(encoding="utf-8")
PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tiny() -> Matrix:
    return load_matrix(TINY)


def tiny_raw() -> dict[str, Any]:
    """A fresh, mutable copy of the tiny-cpu matrix as parsed TOML."""
    return tomllib.loads(TINY_TEXT)


def minimal_raw() -> dict[str, Any]:
    return {
        "version": 1, "name": "m", "marker": "cpu",
        "servers": [{"name": "plain", "model": "org/model"}],
        "workload": {"prompts": "p.jsonl"},
    }  # fmt: skip


FAKE = Path("/matrices/fake.toml")


def assert_input_error(raw: dict[str, Any], field: str | None, *fragments: str) -> InputError:
    """parse_matrix raises InputError naming the file and exactly ``field``."""
    with pytest.raises(InputError) as info:
        parse_matrix(raw, FAKE)
    err = info.value
    assert err.path == str(FAKE)
    assert err.field == field
    message = str(err)
    assert message.startswith(f"{FAKE}: {field}: " if field else f"{FAKE}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return err


# --- the tiny-cpu matrix ---------------------------------------------------------------------

def test_tiny_loads(tiny: Matrix) -> None:
    assert tiny.path == TINY
    assert (tiny.name, tiny.id_prefix, tiny.marker) == ("tiny-cpu", "tiny", "cpu")
    assert [s.name for s in tiny.servers] == ["baseline", "ngram4", "self4", "baseline-bf16", "ngram4-bf16"]
    assert tiny.workload.concurrency == (1, 4)
    assert tiny.workload.prompts == "../prompts/speed-sample.jsonl"
    assert (tiny.workload.max_tokens, tiny.workload.num_prompts, tiny.workload.rounds,
            tiny.workload.max_rounds, tiny.workload.warmup_requests) == (32, 4, 5, 5, 1)
    assert tiny.tolerances["speedup"] == Tolerance(0.20, "higher")
    assert tiny.tolerances["acceptance_length"] == Tolerance(0.05, "higher")
    assert set(tiny.tolerances) == {"speedup", "acceptance_length", "acceptance_rate",
                                    "per_position_acceptance", "output_throughput"}
    assert tiny.lossless.near_tie_margin == 0.05
    assert tiny.lossless.top_logprobs == 5


def test_tiny_servers(tiny: Matrix) -> None:
    base, ngram, self4 = tiny.server("baseline"), tiny.server("ngram4"), tiny.server("self4")
    bf16, ngram_bf16 = tiny.server("baseline-bf16"), tiny.server("ngram4-bf16")
    # defaults merged into every server
    assert {s.model for s in tiny.servers} == {"builtin:smollm2-135m-instruct"}
    assert all(s.max_model_len == 2048 and s.startup_timeout_s == 900.0 for s in tiny.servers)
    assert base.dtype == ngram.dtype == self4.dtype == "float32"
    assert bf16.dtype == ngram_bf16.dtype == "bfloat16"
    assert base.args == ("-O0", "--gpu-memory-utilization", "0.25", "--max-num-seqs", "8")
    assert self4.args == ("-O0", "--gpu-memory-utilization", "0.35", "--max-num-seqs", "8")
    assert not base.is_speculative and base.spec is None and base.num_speculative_tokens is None
    assert ngram.spec == {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4,
                          "prompt_lookup_min": 2}
    assert ngram.num_speculative_tokens == 4 and self4.num_speculative_tokens == 4
    assert self4.spec is not None and self4.spec["method"] == "draft_model"
    assert self4.min_acceptance_length == 4.5 and ngram.min_acceptance_length is None
    assert (bf16.perf, ngram_bf16.perf, base.perf) == (False, False, True)
    assert (bf16.lossless, ngram_bf16.lossless, self4.lossless) == ("diagnostic", "diagnostic", "strict")
    with pytest.raises(KeyError):
        tiny.server("nope")


def test_tiny_baseline_of(tiny: Matrix) -> None:
    """The plain server with the same model and dtype."""
    s = tiny.server
    assert tiny.baseline_of(s("ngram4")) == s("baseline")
    assert tiny.baseline_of(s("self4")) == s("baseline")
    assert tiny.baseline_of(s("ngram4-bf16")) == s("baseline-bf16")
    assert tiny.baseline_of(s("baseline")) is None
    assert tiny.baseline_of(s("baseline-bf16")) is None


def test_tiny_server_order(tiny: Matrix) -> None:
    order = [s.name for s in tiny.server_order()]
    assert order == ["baseline", "ngram4", "self4", "baseline-bf16", "ngram4-bf16"]
    for i, server in enumerate(tiny.server_order()):
        base = tiny.baseline_of(server)
        if base is not None:
            assert order.index(base.name) < i


def test_tiny_cells(tiny: Matrix) -> None:
    cells = tiny.cells(["coding", "math"])
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids)) == 3 * 2 * 2   # perf servers x concurrency x categories
    assert ids[:4] == ["tiny-baseline-c1-coding", "tiny-baseline-c1-math",
                       "tiny-baseline-c4-coding", "tiny-baseline-c4-math"]
    assert "tiny-ngram4-c4-coding" in ids and "tiny-self4-c1-math" in ids
    cell = cells[ids.index("tiny-ngram4-c4-coding")]
    assert (cell.server.name, cell.concurrency, cell.category) == ("ngram4", 4, "coding")
    # perf = false servers have no cells
    assert not any("bf16" in i for i in ids)
    assert {c.server.name for c in cells} == {"baseline", "ngram4", "self4"}
    assert tiny.cells([]) == []


def test_server_order_puts_plain_first_when_listed_after() -> None:
    raw = minimal_raw()
    raw["servers"] = [
        {"name": "spec-a", "model": "m1",
         "speculative_config": {"method": "ngram", "num_speculative_tokens": 3}},
        {"name": "spec-b", "model": "m2", "speculative_config": {"method": "ngram"}, "baseline": "plain-2"},
        {"name": "plain-1", "model": "m1"},
        {"name": "plain-2", "model": "m2"},
        {"name": "lonely", "model": "m3", "speculative_config": {"method": "ngram"}},
    ]
    m = parse_matrix(raw, FAKE)
    assert [s.name for s in m.server_order()] == ["plain-1", "spec-a", "plain-2", "spec-b", "lonely"]
    assert m.baseline_of(m.server("lonely")) is None   # no plain server with that model
    assert m.baseline_of(m.server("spec-b")) == m.server("plain-2")


def test_explicit_baseline_overrides_model_match() -> None:
    raw = minimal_raw()
    raw["servers"] = [
        {"name": "a", "model": "m"}, {"name": "b", "model": "m", "dtype": "float16"},
        {"name": "s", "model": "m", "dtype": "float16", "speculative_config": {"method": "ngram"}},
        {"name": "t", "model": "m", "dtype": "float16", "speculative_config": {"method": "ngram"},
         "baseline": "a"},
    ]
    m = parse_matrix(raw, FAKE)
    assert m.baseline_of(m.server("s")) == m.server("b")   # same model and dtype
    assert m.baseline_of(m.server("t")) == m.server("a")   # named explicitly


def test_minimal_defaults() -> None:
    m = parse_matrix(minimal_raw(), FAKE)
    assert m.id_prefix == "m" and m.description == "" and m.tolerances == {}
    s = m.servers[0]
    assert s == ServerConfig(name="plain", model="org/model")
    assert m.workload.concurrency == (1,) and m.workload.categories is None
    assert m.lossless.hypothesis_examples == 0


# --- hashing and no shared state -------------------------------------------------------------

def test_server_configs_are_hashable(tiny: Matrix) -> None:
    by_config = {s: s.name for s in tiny.servers}
    assert len(by_config) == 5
    again = load_matrix(TINY)
    for s in again.servers:
        assert hash(s) == hash(tiny.server(s.name))
        assert by_config[s] == s.name
    assert len({c.server for c in tiny.cells(["coding"])}) == 3


def test_parsing_builds_fresh_args_per_server() -> None:
    raw = tiny_raw()
    before = copy.deepcopy(raw)
    m = parse_matrix(raw, FAKE)
    assert raw == before, "parsing mutated its input"
    base, ngram = m.server("baseline"), m.server("ngram4")
    assert isinstance(base.args, tuple) and isinstance(base.env, tuple)
    assert base.args == ngram.args
    # Mutating the TOML data afterwards reaches no parsed server.
    raw["defaults"]["args"].append("--enforce-eager")
    raw["servers"][2]["args"].append("--enforce-eager")
    assert "--enforce-eager" not in base.args + ngram.args + m.server("self4").args
    # A second parse of the same data yields equal, independent configs.
    m2 = parse_matrix(tiny_raw(), FAKE)
    assert m2.servers == m.servers


def test_spec_property_returns_a_fresh_dict(tiny: Matrix) -> None:
    ngram = tiny.server("ngram4")
    spec = ngram.spec
    assert spec is not None
    spec["num_speculative_tokens"] = 99
    assert ngram.num_speculative_tokens == 4


def test_env_is_sorted_and_per_server() -> None:
    raw = minimal_raw()
    raw["defaults"] = {"env": {"B": "2", "A": "1"}}
    raw["servers"].append({"name": "other", "model": "x", "env": {"C": "3"}})
    m = parse_matrix(raw, FAKE)
    assert m.servers[0].env == (("A", "1"), ("B", "2"))
    assert m.servers[1].env == (("C", "3"),)   # a server's own table replaces the default one


# --- error paths -----------------------------------------------------------------------------

def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set ``a.b[1].c`` in ``raw`` (a fresh copy) to ``value``."""
    raw = copy.deepcopy(raw)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", dotted)
    node: Any = raw
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize(
    ("where", "value", "field", "fragment"),
    [
        # unknown keys
        ("colour", "red", "colour", "unknown key"),
        ("servers[1].colour", "red", "servers[1].colour", "unknown key"),
        ("defaults.name", "x", "defaults.name", "unknown key"),
        ("workload.speed", 1, "workload.speed", "unknown key"),
        ("lossless.temperature", 0.0, "lossless.temperature", "unknown key"),
        # wrong types
        ("version", "1", "version", "expected an integer, got '1'"),
        ("name", 3, "name", "expected a string, got 3"),
        ("marker", "tpu", "marker", "expected 'cpu' or 'gpu', got 'tpu'"),
        ("servers", {"name": "x"}, "servers", "expected a list, got {'name': 'x'}"),
        ("servers", [], "servers", "at least one server is needed, got []"),
        ("servers[0]", "baseline", "servers[0]", "expected a table, got 'baseline'"),
        ("servers[1].dtype", 3, "servers[1].dtype", "expected a string, got 3"),
        ("servers[1].args", "--enforce-eager", "servers[1].args", "expected a list, got '--enforce-eager'"),
        ("servers[1].args", ["--max-num-seqs", 8], "servers[1].args[1]", "expected a string, got 8"),
        ("servers[1].env", {"A": 1}, "servers[1].env.A", "expected a string, got 1"),
        ("servers[1].env", ["A=1"], "servers[1].env", "expected a table, got ['A=1']"),
        ("servers[1].speculative_config", "ngram", "servers[1].speculative_config", "expected a table, got 'ngram'"),
        ("servers[1].speculative_config", {"num_speculative_tokens": 4},
         "servers[1].speculative_config.method", "missing"),
        ("servers[1].speculative_config", {"method": 4}, "servers[1].speculative_config.method",
         "expected a string, got 4"),
        ("servers[1].trust_remote_code", "yes", "servers[1].trust_remote_code", "expected true or false, got 'yes'"),
        ("servers[1].perf", 1, "servers[1].perf", "expected true or false, got 1"),
        ("servers[1].lossless", "loose", "servers[1].lossless",
         "expected 'strict', 'diagnostic' or 'off', got 'loose'"),
        ("workload.concurrency", 4, "workload.concurrency", "expected a non-empty list of positive integers, got 4"),
        ("workload.categories", [], "workload.categories", "expected a non-empty list of strings, got []"),
        ("workload.categories", ["coding", 1], "workload.categories[1]", "expected a string, got 1"),
        ("workload.max_tokens", "32", "workload.max_tokens", "expected an integer, got '32'"),
        ("workload.max_tokens", 32.0, "workload.max_tokens", "expected an integer, got 32.0"),
        ("workload.ignore_eos", "no", "workload.ignore_eos", "expected true or false, got 'no'"),
        ("lossless.prompts", 1, "lossless.prompts", "expected a string, got 1"),
        ("tolerances", 0.1, "tolerances", "expected a table, got 0.1"),
        ("tolerances.speedup", "10%", "tolerances.speedup", "expected a number or a table"),
        ("tolerances.latency", 0.1, "tolerances.latency", "unknown metric"),
        # bool where an int or a float belongs
        ("version", True, "version", "got True"),
        ("servers[1].max_model_len", True, "servers[1].max_model_len", "got True"),
        ("servers[1].tensor_parallel_size", True, "servers[1].tensor_parallel_size", "got True"),
        ("servers[1].startup_timeout_s", True, "servers[1].startup_timeout_s", "got True"),
        ("servers[1].min_acceptance_length", True, "servers[1].min_acceptance_length", "got True"),
        ("servers[1].speculative_config.num_speculative_tokens", True,
         "servers[1].speculative_config.num_speculative_tokens", "positive integer"),
        ("workload.concurrency", [1, True], "workload.concurrency[1]", "expected a positive integer, got True"),
        ("workload.rounds", True, "workload.rounds", "got True"),
        ("workload.request_timeout_s", False, "workload.request_timeout_s", "got False"),
        ("lossless.near_tie_margin", True, "lossless.near_tie_margin", "got True"),
        ("lossless.seed", False, "lossless.seed", "got False"),
        ("tolerances.speedup", True, "tolerances.speedup", "got True"),
        ("tolerances.speedup.rel", True, "tolerances.speedup.rel", "got True"),
        # NaN and infinities
        ("servers[1].startup_timeout_s", math.nan, "servers[1].startup_timeout_s", "finite"),
        ("servers[1].startup_timeout_s", math.inf, "servers[1].startup_timeout_s", "finite"),
        ("servers[2].min_acceptance_length", math.nan, "servers[2].min_acceptance_length", "finite"),
        ("workload.request_timeout_s", -math.inf, "workload.request_timeout_s", "finite"),
        ("lossless.near_tie_margin", math.nan, "lossless.near_tie_margin", "finite"),
        ("lossless.min_exact_match", math.inf, "lossless.min_exact_match", "finite"),
        ("tolerances.speedup.rel", math.nan, "tolerances.speedup.rel", "fraction"),
        ("tolerances.speedup", math.inf, "tolerances.speedup.rel", "fraction"),
        # negative or zero numbers
        ("servers[1].max_model_len", 0, "servers[1].max_model_len", "positive"),
        ("servers[1].max_model_len", -2048, "servers[1].max_model_len", "positive"),
        ("servers[1].tensor_parallel_size", 0, "servers[1].tensor_parallel_size", "positive"),
        ("servers[1].startup_timeout_s", 0, "servers[1].startup_timeout_s", "positive"),
        ("servers[1].startup_timeout_s", -1.5, "servers[1].startup_timeout_s", "positive"),
        ("servers[1].speculative_config.num_speculative_tokens", 0,
         "servers[1].speculative_config.num_speculative_tokens", "positive integer"),
        ("servers[1].speculative_config.num_speculative_tokens", 2.5,
         "servers[1].speculative_config.num_speculative_tokens", "positive integer"),
        ("workload.concurrency", [1, 0], "workload.concurrency[1]", "expected a positive integer, got 0"),
        ("workload.concurrency", [], "workload.concurrency", "expected a non-empty list of positive integers, got []"),
        ("workload.max_tokens", 0, "workload.max_tokens", "positive"),
        ("workload.num_prompts", -4, "workload.num_prompts", "positive"),
        ("workload.rounds", 0, "workload.rounds", "positive"),
        ("workload.request_timeout_s", 0.0, "workload.request_timeout_s", "positive"),
        ("workload.warmup_requests", -1, "workload.warmup_requests", ">= 0"),
        ("workload.max_rounds", 2, "workload.max_rounds", "must be >= rounds"),
        ("lossless.num_prompts", 0, "lossless.num_prompts", "positive"),
        ("lossless.max_tokens", -48, "lossless.max_tokens", "positive"),
        ("lossless.top_logprobs", 1, "lossless.top_logprobs", "2..20"),
        ("lossless.top_logprobs", 21, "lossless.top_logprobs", "2..20"),
        ("lossless.near_tie_margin", -0.01, "lossless.near_tie_margin", ">= 0"),
        ("lossless.min_exact_match", 1.5, "lossless.min_exact_match", "[0, 1]"),
        ("lossless.min_exact_match", -0.1, "lossless.min_exact_match", "[0, 1]"),
        ("lossless.hypothesis_examples", -1, "lossless.hypothesis_examples", ">= 0"),
        # tolerances
        ("tolerances.speedup", {"rel": -0.1}, "tolerances.speedup.rel", "fraction in [0, 1)"),
        ("tolerances.speedup", {"rel": 1.5}, "tolerances.speedup.rel", "fraction in [0, 1)"),
        ("tolerances.speedup", {"rel": 1}, "tolerances.speedup.rel", "fraction in [0, 1)"),
        ("tolerances.speedup", -0.1, "tolerances.speedup.rel", "fraction in [0, 1)"),
        ("tolerances.speedup", {"direction": "higher"}, "tolerances.speedup.rel", "missing"),
        ("tolerances.speedup", {"rel": 0.1, "direction": "sideways"}, "tolerances.speedup.direction",
         "'higher' or 'lower'"),
        ("tolerances.speedup", {"rel": 0.1, "abs": 2}, "tolerances.speedup.abs", "unknown key"),
        # names
        ("servers[1].name", "", "servers[1].name", "letters, digits"),
        ("servers[1].name", "ngram 4", "servers[1].name", "letters, digits"),
        ("servers[1].name", "ngram/4", "servers[1].name", "letters, digits"),
        # version
        ("version", 2, "version", "unsupported version (supported: 1), got 2"),
        ("version", 0, "version", "unsupported version (supported: 1), got 0"),
    ],
)
def test_error_names_file_and_field(where: str, value: Any, field: str, fragment: str) -> None:
    assert_input_error(_set(tiny_raw(), where, value), field, fragment)


@pytest.mark.parametrize("key", ["version", "name", "marker", "servers", "workload"])
def test_missing_required_top_level_key(key: str) -> None:
    raw = tiny_raw()
    del raw[key]
    assert_input_error(raw, key, "missing")


def test_missing_server_name_and_model() -> None:
    raw = tiny_raw()
    del raw["servers"][1]["name"]
    assert_input_error(raw, "servers[1].name", "missing")
    raw = tiny_raw()
    del raw["defaults"]["model"]
    assert_input_error(raw, "servers[0].model", "missing")
    raw = tiny_raw()
    del raw["workload"]["prompts"]
    assert_input_error(raw, "workload.prompts", "missing")


def test_duplicate_server_names() -> None:
    raw = tiny_raw()
    raw["servers"][3]["name"] = "ngram4"
    assert_input_error(raw, "servers[3].name", "duplicate server name, got 'ngram4'")


def test_baseline_naming_a_missing_server() -> None:
    raw = _set(tiny_raw(), "servers[1].baseline", "plain")
    assert_input_error(raw, "servers[1].baseline", "expected a server name of this matrix (baseline, ngram4, self4, "
                       "baseline-bf16, ngram4-bf16), got 'plain'")


def test_baseline_naming_a_speculative_server() -> None:
    raw = _set(tiny_raw(), "servers[4].baseline", "ngram4")
    assert_input_error(raw, "servers[4].baseline", "expected a plain server, not a speculative one, got 'ngram4'")


@pytest.mark.parametrize("flag", ["--port", "--host", "--model", "--api-key", "--speculative-config"])
@pytest.mark.parametrize("form", ["separate", "equals"])
def test_args_must_not_set_suite_flags(flag: str, form: str) -> None:
    args = ["--max-num-seqs", "8"] + ([flag, "x"] if form == "separate" else [f"{flag}=x"])
    assert_input_error(_set(tiny_raw(), "servers[2].args", args), "servers[2].args[2]",
                       f"{flag} is set by the suite; remove it from args, got {args[2]!r}")


def test_suite_flag_in_defaults_is_reported_in_defaults() -> None:
    raw = _set(tiny_raw(), "defaults.args", ["--port", "8000"])
    assert_input_error(raw, "defaults.args[0]", "--port is set by the suite; remove it from args, got '--port'")


def test_similar_flags_are_allowed() -> None:
    args = ["--port-range", "1", "--hostname", "x", "--model-impl", "vllm"]
    raw = _set(tiny_raw(), "servers[1].args", args)
    assert parse_matrix(raw, FAKE).server("ngram4").args[0] == "--port-range"


@pytest.mark.parametrize("value", [0, -4.5])
def test_min_acceptance_length_must_be_positive(value: float) -> None:
    raw = _set(tiny_raw(), "servers[2].min_acceptance_length", value)
    assert_input_error(raw, "servers[2].min_acceptance_length", "positive")


def test_tolerance_forms() -> None:
    raw = _set(tiny_raw(), "tolerances",
               {"speedup": 0.1, "output_throughput": {"rel": 0, "direction": "lower"}})
    m = parse_matrix(raw, FAKE)
    assert m.tolerances == {"speedup": Tolerance(0.1, "higher"), "output_throughput": Tolerance(0.0, "lower")}
    assert list(m.tolerances) == ["speedup", "output_throughput"]   # in the file's order


def test_an_advisory_tolerance() -> None:
    raw = _set(tiny_raw(), "tolerances", {"output_throughput": {"rel": 0.35, "advisory": True}})
    assert parse_matrix(raw, FAKE).tolerances == {"output_throughput": Tolerance(0.35, "higher", advisory=True)}
    err = assert_input_error(_set(raw, "tolerances.output_throughput.advisory", "yes"),
                             "tolerances.output_throughput.advisory")
    assert "true or false" in str(err), str(err)


def test_rounds_message_is_exact() -> None:
    """tests/test_reliability.py checks this text through pytest --collect-only."""
    err = assert_input_error(_set(tiny_raw(), "workload.rounds", -2), "workload.rounds")
    assert str(err) == f"{FAKE}: workload.rounds: expected a positive number, got -2"


_TOP_KEYS = ("defaults, description, gate_checks, id_prefix, lossless, marker, name, reference_profile, servers, "
             "tolerances, version, workload")
_SERVER_KEYS = ("args, baseline, dtype, enable_prefix_caching, env, lossless, max_model_len, min_acceptance_length, "
                "min_speedup, model, perf, speculative_config, startup_timeout_s, tensor_parallel_size, "
                "trust_remote_code")


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("colour", f"unknown key (allowed: {_TOP_KEYS})"),
        ("defaults.colour", f"unknown key (allowed: {_SERVER_KEYS})"),
        ("servers[3].colour", f"unknown key (allowed: {_SERVER_KEYS.replace('model, ', 'model, name, ')})"),
        ("workload.colour", "unknown key (allowed: categories, concurrency, confidence, ignore_eos, max_rounds, "
                            "max_tokens, num_prompts, pairing, prompts, request_timeout_s, requests_per_concurrency, "
                            "rounds, warmup_max_rounds, warmup_rel, warmup_requests)"),
        ("lossless.colour", "unknown key (allowed: hypothesis_examples, max_tokens, min_exact_match, "
                            "near_tie_margin, num_prompts, prompts, seed, top_logprobs)"),
        ("tolerances.colour", "unknown metric (known: acceptance_length, acceptance_rate, output_throughput, "
                              "per_position_acceptance, speedup)"),
        ("tolerances.speedup.colour", "unknown key (allowed: advisory, direction, rel)"),
        ("gate_checks.colour", "unknown key (allowed: acceptance_drop, rerun, slowdown)"),
    ],
)
def test_unknown_keys_at_every_level(where: str, problem: str) -> None:
    """Every table refuses keys it does not know, naming the key, the allowed ones and the value."""
    err = assert_input_error(_set(tiny_raw(), where, "red"), where)
    assert str(err) == f"{FAKE}: {where}: {problem}, got 'red'"


def test_speculative_config_passes_other_keys_on_but_only_json_values() -> None:
    spec = {"method": "mtp", "model": "org/drafter", "num_speculative_tokens": 2, "extra": {"a": [1, 2.5]}}
    m = parse_matrix(_set(tiny_raw(), "servers[1].speculative_config", spec), FAKE)
    assert m.server("ngram4").spec == spec
    dated = tomllib.loads('speculative_config = { method = "ngram", since = 2026-12-01 }')["speculative_config"]
    err = assert_input_error(_set(tiny_raw(), "servers[1].speculative_config", dated),
                             "servers[1].speculative_config.since", "expected a JSON value")
    assert str(err).endswith("got datetime.date(2026, 12, 1)")


# --- Hypothesis: what the schema accepts round-trips, what it refuses names the field ---------

@PROPS
@given(rounds=st.integers(1, 2**62), extra=st.integers(0, 2**62))
def test_any_positive_rounds_round_trip(rounds: int, extra: int) -> None:
    raw = _set(_set(minimal_raw(), "workload.rounds", rounds), "workload.max_rounds", rounds + extra)
    w = parse_matrix(raw, FAKE).workload
    assert (w.rounds, w.max_rounds) == (rounds, rounds + extra)


@PROPS
@given(rounds=st.integers(max_value=0) | st.floats() | st.booleans() | st.text(max_size=3))
def test_rounds_that_are_no_positive_integer_name_the_field(rounds: Any) -> None:
    err = assert_input_error(_set(minimal_raw(), "workload.rounds", rounds), "workload.rounds")
    positive_int = isinstance(rounds, int) and not isinstance(rounds, bool)
    expected = "expected a positive number" if positive_int else "expected an integer"
    assert str(err) == f"{FAKE}: workload.rounds: {expected}, got {rounds!r}"


@PROPS
@given(floor=st.floats(min_value=0, exclude_min=True, allow_infinity=False),
       concurrency=st.integers(1, 512), category=st.text(min_size=1, max_size=8))
def test_any_positive_min_speedup_round_trips(floor: float, concurrency: int, category: str) -> None:
    for form, cell, expected in [
        (floor, (concurrency, category), floor),
        ({f"c{concurrency}": floor}, (concurrency, category), floor),
        ({f"c{concurrency}": {category: floor}}, (concurrency, category), floor),
        ({f"c{concurrency}": {category: floor}}, (concurrency + 1, category), None),
    ]:
        server = parse_matrix(_set(tiny_raw(), "servers[1].min_speedup", form), FAKE).server("ngram4")
        assert server.speedup_floor(*cell) == expected, form


@PROPS
@given(name=st.text(st.characters(categories=["Lu", "Ll", "Nd"], max_codepoint=0x2FF) | st.sampled_from("-_."),
                    min_size=1, max_size=12))
def test_any_server_name_of_letters_digits_and_dashes_round_trips(name: str) -> None:
    raw = _set(minimal_raw(), "servers[0].name", name)
    assert parse_matrix(raw, FAKE).servers[0].name == name


# --- the JSON Schema ---------------------------------------------------------------------------

SCHEMA_FILE = REPO / "docs" / "matrix.schema.json"


def test_committed_schema_is_the_generated_one() -> None:
    """docs/matrix.schema.json is ``python -m specguard schema --out docs/matrix.schema.json``."""
    from specguard.config.matrix import matrix_json_schema

    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == matrix_json_schema(), (
        "docs/matrix.schema.json is stale: run python -m specguard schema --out docs/matrix.schema.json")


def test_schema_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from specguard.__main__ import main

    assert main(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == SCHEMA_FILE.read_text(encoding="utf-8")
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "s.json").read_text(encoding="utf-8") == printed and capsys.readouterr().out == ""


@pytest.mark.parametrize("path", sorted((REPO / "fixtures" / "matrices").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_matrices_satisfy_the_json_schema(path: Path) -> None:
    """The schema describes the file as written: a server's model may come from [defaults]."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    assert [e.message for e in validator.iter_errors(raw)] == []
    raw["workload"]["rounds"], raw["servers"][0]["colour"] = -2, "red"
    assert {tuple(e.path) for e in validator.iter_errors(raw)} == {("workload", "rounds"), ("servers", 0)}


# --- load_matrix: file-level errors ----------------------------------------------------------

def write(tmp_path: Path, text: str, name: str = "m.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(InputError, match=re.escape(f"{path}: no such matrix file")) as info:
        load_matrix(path)
    assert info.value.field is None


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, TINY_TEXT.replace('name = "ngram4"', 'name = "ngram4'))
    with pytest.raises(InputError, match=re.escape(f"{path}: not valid TOML")):
        load_matrix(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(TINY_TEXT.encode("utf-8") + b'\n# caf\xe9\n')
    with pytest.raises(InputError, match=re.escape(f"{path}: cannot read")):
        load_matrix(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: cannot read")):
        load_matrix(tmp_path)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("startup_timeout_s = 900", "startup_timeout_s = nan", "defaults.startup_timeout_s"),
        ("startup_timeout_s = 900", "startup_timeout_s = inf", "defaults.startup_timeout_s"),
        ("startup_timeout_s = 900", "startup_timeout_s = 1e400", "defaults.startup_timeout_s"),
        ("speedup = { rel = 0.20", "speedup = { rel = nan", "tolerances.speedup.rel"),
        ("speedup = { rel = 0.20", "speedup = { rel = -0.1", "tolerances.speedup.rel"),
        ("speedup = { rel = 0.20", "speedup = { rel = 1.5", "tolerances.speedup.rel"),
        ("max_model_len = 2048", "max_model_len = true", "defaults.max_model_len"),
        ("version = 1", "version = 2", "version"),
        ('marker = "cpu"', 'marker = "cpu"\nextra = 1', "extra"),
    ],
)
def test_toml_text_errors(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in TINY_TEXT
    path = write(tmp_path, TINY_TEXT.replace(old, new, 1))
    with pytest.raises(InputError) as info:
        load_matrix(path)
    assert str(info.value).startswith(f"{path}: {field}: "), str(info.value)


# --- Hypothesis: corrupted TOML never escapes as another exception ---------------------------

_VALUE_LINE = re.compile(r"^(\s*[A-Za-z_][\w-]*\s*=\s*)(.+)$", re.M)
_VALUE_SPANS = [(m.start(2), m.end(2)) for m in _VALUE_LINE.finditer(TINY_TEXT)]
_REL_SPANS = [(m.start(1), m.end(1)) for m in re.finditer(r"rel = ([0-9.]+)", TINY_TEXT)]
_LINE_STARTS = [0] + [m.end() for m in re.finditer(r"\n", TINY_TEXT)]
WRONG_VALUES = ["true", "false", '"x"', '""', "0", "-1", "3", "2.5", "-0.0", "nan", "-inf", "inf", "1e400",
                "[]", "[1, 2]", '["a", 1]', "[true]", "{}", "{ a = 1 }", '{ method = 3 }', '{ rel = "x" }',
                "1979-05-27", '"../nope"', "9223372036854775807"]
UNKNOWN_KEYS = ["bogus = 1", "colour = \"red\"", "[bogus]", "[[bogus]]", "[workload.extra]", "rel = 0.1",
                "name = \"dup\"", "[[servers]]", "[[servers]]\nname = \"new\""]
BAD_RELS = ["-0.1", "-1", "nan", "-nan", "inf", "1.5", "1", "-0.0001"]


@st.composite
def corrupted_tiny(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["truncate", "wrong-type", "unknown-key", "bad-tolerance"]))
    text = TINY_TEXT
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if kind == "wrong-type":
        start, end = draw(st.sampled_from(_VALUE_SPANS))
        return text[:start] + draw(st.sampled_from(WRONG_VALUES)) + text[end:]
    if kind == "unknown-key":
        at = draw(st.sampled_from(_LINE_STARTS))
        return text[:at] + draw(st.sampled_from(UNKNOWN_KEYS)) + "\n" + text[at:]
    start, end = draw(st.sampled_from(_REL_SPANS))
    return text[:start] + draw(st.sampled_from(BAD_RELS)) + text[end:]


@PROPS
@given(text=corrupted_tiny())
def test_corrupted_matrix_raises_only_input_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text, "corrupt.toml")
    try:
        matrix = load_matrix(path)
    except InputError as exc:
        assert str(path) in str(exc)
        assert exc.path == str(path)
    else:
        assert matrix.servers and matrix.workload.concurrency


@PROPS
@given(rel=st.floats() | st.integers(-5, 5) | st.booleans() | st.text(max_size=3))
def test_tolerance_rel_is_a_fraction_or_an_input_error(rel: Any) -> None:
    raw = _set(tiny_raw(), "tolerances.speedup", {"rel": rel})
    try:
        m = parse_matrix(raw, FAKE)
    except InputError as exc:
        assert exc.field == "tolerances.speedup.rel" and exc.path == str(FAKE)
    else:
        assert 0 <= m.tolerances["speedup"].rel < 1


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "matrices").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_matrix_loads_and_names_its_builtins(path: Path) -> None:
    from specguard.serving.model import BUILTINS

    m = load_matrix(path)
    assert m.servers and m.workload.concurrency
    for s in m.servers:
        if s.model.startswith("builtin:"):
            assert s.model.removeprefix("builtin:") in BUILTINS, f"{path.name}: {s.name} names {s.model}"
