"""The matrix: which vLLM servers to start and which workloads to send them.

A matrix is a TOML file (see ``fixtures/matrices/tiny-cpu.toml``)::

    version = 1
    name = "tiny-cpu"          # names the baseline file: baselines/<profile>/<name>.json
    id_prefix = "tiny"         # cell ids: <id_prefix>-<server>-c<concurrency>-<category>
    marker = "cpu"             # "cpu" or "gpu": the pytest marker its cells carry

    [defaults]                 # merged into every [[servers]] entry
    model = "builtin:smollm2-135m-instruct"
    dtype = "float32"

    [[servers]]
    name = "ngram4"
    speculative_config = { method = "ngram", num_speculative_tokens = 4 }

    [workload]
    prompts = "../prompts/speed-sample.jsonl"
    concurrency = [1, 4]

Every cell (server x concurrency x category) is one test case. Parsing never
mutates shared state: each server gets its own argument list.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specguard.config.errors import InputError
from specguard.config.tolerance import Tolerance

SUPPORTED_VERSIONS = (1,)
MARKERS = ("cpu", "gpu")

_SERVER_KEYS = {
    "name", "model", "dtype", "max_model_len", "args", "env", "speculative_config",
    "baseline", "trust_remote_code", "enable_prefix_caching", "startup_timeout_s",
    "tensor_parallel_size", "perf", "lossless", "min_acceptance_length", "min_speedup",
}
_WORKLOAD_KEYS = {
    "prompts", "categories", "concurrency", "max_tokens", "num_prompts",
    "warmup_requests", "rounds", "max_rounds", "request_timeout_s", "ignore_eos",
    "pairing", "confidence", "warmup_rel", "warmup_max_rounds", "requests_per_concurrency",
}
_PAIRINGS = ("interleaved", "sequential")
_GATE_KEYS = {"rerun", "acceptance_drop", "slowdown"}
_LOSSLESS_KEYS = {"prompts", "num_prompts", "max_tokens", "top_logprobs", "near_tie_margin",
                  "min_exact_match", "seed", "hypothesis_examples"}
_TOP_KEYS = {"version", "name", "id_prefix", "marker", "description", "defaults", "servers",
             "workload", "tolerances", "lossless", "reference_profile", "gate_checks"}
_TOLERANCE_METRICS = ("output_throughput", "speedup", "acceptance_length", "acceptance_rate",
                      "per_position_acceptance")
_LOSSLESS_MODES = ("strict", "diagnostic", "off")


@dataclass(frozen=True)
class ServerConfig:
    """One ``vllm serve`` configuration; ``speculative_config`` None means plain decoding."""

    name: str
    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    speculative_config: str | None = None   # canonical JSON, so the config stays hashable
    baseline: str | None = None             # name of the plain server its speedup is measured against
    trust_remote_code: bool = False
    enable_prefix_caching: bool = False
    startup_timeout_s: float = 900.0
    tensor_parallel_size: int = 1
    perf: bool = True                       # has performance cells
    lossless: str = "strict"                # strict | diagnostic | off
    min_acceptance_length: float | None = None  # sanity floor, e.g. 4.5 of 5 for a self-draft
    # "Does it still pay": ((concurrency or 0, category or ""), floor) from the most general to
    # the most specific; a same-run check that needs no baseline.
    min_speedup: tuple[tuple[tuple[int, str], float], ...] = ()

    def speedup_floor(self, concurrency: int, category: str) -> float | None:
        """The most specific ``min_speedup`` for a cell: category at this concurrency, then the
        concurrency, then the server's plain number; None where none is set."""
        found: dict[tuple[int, str], float] = dict(self.min_speedup)
        for key in ((concurrency, category), (concurrency, ""), (0, "")):
            if key in found:
                return found[key]
        return None

    @property
    def is_speculative(self) -> bool:
        return self.speculative_config is not None

    @property
    def spec(self) -> dict[str, Any] | None:
        return None if self.speculative_config is None else json.loads(self.speculative_config)

    @property
    def num_speculative_tokens(self) -> int | None:
        spec = self.spec
        return None if spec is None else spec.get("num_speculative_tokens")


@dataclass(frozen=True)
class Workload:
    prompts: str
    categories: tuple[str, ...] | None = None   # None: every category in the prompt set
    concurrency: tuple[int, ...] = (1,)
    max_tokens: int = 64
    num_prompts: int = 4          # per cell (per category); at least the concurrency is sent
    warmup_requests: int = 1
    rounds: int = 3
    max_rounds: int = 6           # cap for extra rounds when the verdict is UNKNOWN
    request_timeout_s: float = 600.0
    ignore_eos: bool = True       # equal output lengths, as `vllm bench serve` does
    # interleaved: a speculative cell's rounds alternate with its plain server's (both live);
    # sequential: the plain cell's own rounds are the reference (one server at a time).
    pairing: str = "interleaved"
    confidence: float = 0.95      # of the whole sequential decision (see specguard/judge/decision.py)
    warmup_rel: float = 0.05      # a server is warm when two warm-up rounds agree within this
    warmup_max_rounds: int = 5
    requests_per_concurrency: int = 4   # a round sends >= this × concurrency requests (steady state)

    def requests_per_round(self, concurrency: int) -> int:
        return max(self.num_prompts, self.requests_per_concurrency * concurrency)


@dataclass(frozen=True)
class LosslessSettings:
    prompts: str | None = None    # default: the workload's prompts
    num_prompts: int = 12
    max_tokens: int = 48
    top_logprobs: int = 5
    near_tie_margin: float = 0.05  # nats between the baseline's top-1 and top-2 logprobs
    min_exact_match: float = 0.9
    seed: int = 0
    hypothesis_examples: int = 0   # generated-prompt examples; needs room for two servers at once


@dataclass(frozen=True)
class GateChecks:
    """Real checks of the gate itself (``tests/test_gate.py``), by server name; empty = not run."""

    rerun: str | None = None                          # measured twice: must not be REGRESSED
    acceptance_drop: tuple[str, str] | None = None    # (candidate, better): candidate's acceptance REGRESSED
    slowdown: tuple[str, str] | None = None           # (candidate, faster): candidate's speedup REGRESSED


@dataclass(frozen=True)
class Cell:
    """One parametrized performance test case."""

    id: str
    server: ServerConfig
    concurrency: int
    category: str


@dataclass(frozen=True)
class Matrix:
    path: Path
    name: str
    id_prefix: str
    marker: str
    servers: tuple[ServerConfig, ...]
    workload: Workload
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    lossless: LosslessSettings = LosslessSettings()
    description: str = ""
    reference_profile: str | None = None   # whose baseline file judges portable figures elsewhere
    gate_checks: GateChecks = GateChecks()

    def server(self, name: str) -> ServerConfig:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def baseline_of(self, server: ServerConfig) -> ServerConfig | None:
        """The plain server a speculative server is compared with (None for plain servers)."""
        if not server.is_speculative:
            return None
        if server.baseline is not None:
            return self.server(server.baseline)
        plain = [s for s in self.servers if not s.is_speculative and s.model == server.model
                 and s.dtype == server.dtype]
        return plain[0] if plain else None

    def server_order(self) -> list[ServerConfig]:
        """Servers in start order: each plain server right before the servers compared with it."""
        order: list[ServerConfig] = []
        for server in self.servers:
            base = self.baseline_of(server)
            if base is not None and base not in order:
                order.append(base)
            if server not in order:
                order.append(server)
        return order

    def cells(self, categories: list[str]) -> list[Cell]:
        return [
            Cell(f"{self.id_prefix}-{s.name}-c{c}-{cat}", s, c, cat)
            for s in self.server_order() if s.perf
            for c in self.workload.concurrency
            for cat in categories
        ]


# --- parsing ---------------------------------------------------------------------------------

def load_matrix(path: str | Path) -> Matrix:
    """Read and validate a matrix file; any problem raises InputError naming the file and key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "no such matrix file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, None, f"not valid TOML: {exc}") from None
    return parse_matrix(raw, path)


def parse_matrix(raw: dict[str, Any], path: Path) -> Matrix:
    p = str(path)
    _no_unknown(raw, _TOP_KEYS, p, "")
    version = _get(raw, "version", int, p, "version")
    if version not in SUPPORTED_VERSIONS:
        raise InputError(p, "version", f"unsupported version {version!r} (supported: {SUPPORTED_VERSIONS})")
    name = _get(raw, "name", str, p, "name")
    id_prefix = _get(raw, "id_prefix", str, p, "id_prefix", default=name)
    marker = _get(raw, "marker", str, p, "marker")
    if marker not in MARKERS:
        raise InputError(p, "marker", f"expected one of {MARKERS}, got {marker!r}")
    description = _get(raw, "description", str, p, "description", default="")

    defaults = _get(raw, "defaults", dict, p, "defaults", default={})
    _no_unknown(defaults, _SERVER_KEYS - {"name"}, p, "defaults")
    servers_raw = _get(raw, "servers", list, p, "servers")
    if not servers_raw:
        raise InputError(p, "servers", "at least one server is needed")
    servers = tuple(_parse_server(defaults, s, p, f"servers[{i}]") for i, s in enumerate(servers_raw))
    names = [s.name for s in servers]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise InputError(p, f"servers[{i}].name", f"duplicate server name {n!r}")

    workload = _parse_workload(_get(raw, "workload", dict, p, "workload"), p)
    tolerances_raw = _get(raw, "tolerances", dict, p, "tolerances", default={})
    tolerances = {}
    for metric, tol in tolerances_raw.items():
        if metric not in _TOLERANCE_METRICS:
            raise InputError(p, f"tolerances.{metric}", f"unknown metric (known: {', '.join(_TOLERANCE_METRICS)})")
        tolerances[metric] = Tolerance.parse(tol, path=p, field=f"tolerances.{metric}")
    lossless = _parse_lossless(_get(raw, "lossless", dict, p, "lossless", default={}), p)

    reference = _get(raw, "reference_profile", str, p, "reference_profile", default=None)
    if reference is not None and (not reference or "/" in reference or reference.startswith(".")):
        raise InputError(p, "reference_profile", f"expected a profile name such as 'cpu-amd-epyc-2c', got {reference!r}")
    gate = _parse_gate(_get(raw, "gate_checks", dict, p, "gate_checks", default={}), p, names)
    matrix = Matrix(path=path, name=name, id_prefix=id_prefix, marker=marker, servers=servers,
                    workload=workload, tolerances=tolerances, lossless=lossless, description=description,
                    reference_profile=reference, gate_checks=gate)
    for i, server in enumerate(servers):
        if server.baseline is not None:
            if server.baseline not in names:
                raise InputError(p, f"servers[{i}].baseline", f"no server named {server.baseline!r}")
            if matrix.server(server.baseline).is_speculative:
                raise InputError(p, f"servers[{i}].baseline", f"{server.baseline!r} is itself speculative")
    return matrix


def _parse_server(defaults: dict[str, Any], raw: Any, p: str, where: str) -> ServerConfig:
    if not isinstance(raw, dict):
        raise InputError(p, where, f"expected a table, got {raw!r}")
    _no_unknown(raw, _SERVER_KEYS, p, where)
    merged = {**defaults, **raw}

    def get(key: str, typ: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        return _get(merged, key, typ, p, f"{where}.{key}", default=default)

    name = get("name", str)
    if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise InputError(p, f"{where}.name", f"use letters, digits, '-', '_' or '.', got {name!r}")
    args = get("args", list, [])
    if not all(isinstance(a, str) for a in args):
        raise InputError(p, f"{where}.args", "expected a list of strings")
    for flag in ("--host", "--port", "--speculative-config", "--model", "--api-key"):
        if any(a == flag or a.startswith(flag + "=") for a in args):
            raise InputError(p, f"{where}.args", f"{flag} is set by the suite; remove it from args")
    env = get("env", dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise InputError(p, f"{where}.env", "expected a table of strings")
    spec = get("speculative_config", dict, None)
    if spec is not None:
        if not isinstance(spec.get("method"), str):
            raise InputError(p, f"{where}.speculative_config.method", "missing or not a string")
        k = spec.get("num_speculative_tokens")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InputError(p, f"{where}.speculative_config.num_speculative_tokens",
                             f"expected a positive integer, got {k!r}")
    max_model_len = get("max_model_len", int, None)
    _positive(max_model_len, p, f"{where}.max_model_len")
    tp = get("tensor_parallel_size", int, 1)
    _positive(tp, p, f"{where}.tensor_parallel_size")
    timeout = get("startup_timeout_s", (int, float), 900.0)
    _positive(timeout, p, f"{where}.startup_timeout_s")
    floor = get("min_acceptance_length", (int, float), None)
    if floor is not None and floor < 1:
        raise InputError(p, f"{where}.min_acceptance_length",
                         f"expected a positive number >= 1 (a mean acceptance length), got {floor!r}")
    lossless = get("lossless", str, "strict")
    if lossless not in _LOSSLESS_MODES:
        raise InputError(p, f"{where}.lossless", f"expected one of {_LOSSLESS_MODES}, got {lossless!r}")
    return ServerConfig(
        name=name,
        model=get("model", str),
        dtype=get("dtype", str, "auto"),
        max_model_len=max_model_len,
        args=tuple(args),
        env=tuple(sorted(env.items())),
        speculative_config=None if spec is None else json.dumps(spec, sort_keys=True),
        baseline=get("baseline", str, None),
        trust_remote_code=get("trust_remote_code", bool, False),
        enable_prefix_caching=get("enable_prefix_caching", bool, False),
        startup_timeout_s=float(timeout),
        tensor_parallel_size=tp,
        perf=get("perf", bool, True),
        lossless=lossless,
        min_acceptance_length=_opt_float(floor),
        min_speedup=_parse_min_speedup(get("min_speedup", (int, float, dict), None), p, f"{where}.min_speedup"),
    )


def _parse_min_speedup(raw: Any, p: str, where: str) -> tuple[tuple[tuple[int, str], float], ...]:
    """``1.1`` | ``{ c1 = 1.1 }`` | ``{ c1 = { coding = 1.2, rag = 1.3 } }`` (values > 0)."""
    if raw is None:
        return ()

    def value(v: Any, at: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise InputError(p, at, f"expected a speedup > 0 such as 1.1, got {v!r}")
        return float(v)

    if not isinstance(raw, dict):
        return (((0, ""), value(raw, where)),)
    out: list[tuple[tuple[int, str], float]] = []
    for key, v in raw.items():
        at = f"{where}.{key}"
        if not (key.startswith("c") and key[1:].isdigit() and int(key[1:]) > 0):
            raise InputError(p, at, "expected a concurrency key such as c1 or c16")
        conc = int(key[1:])
        if isinstance(v, dict):
            if not v:
                raise InputError(p, at, "expected a number or a table of category = number")
            out.extend(((conc, cat), value(x, f"{at}.{cat}")) for cat, x in v.items())
        else:
            out.append(((conc, ""), value(v, at)))
    return tuple(sorted(out))


def _parse_gate(raw: dict[str, Any], p: str, names: list[str]) -> GateChecks:
    _no_unknown(raw, _GATE_KEYS, p, "gate_checks")

    def server(v: Any, at: str) -> str:
        if not isinstance(v, str) or v not in names:
            raise InputError(p, at, f"expected a server name of this matrix ({', '.join(names)}), got {v!r}")
        return v

    def two(key: str) -> tuple[str, str] | None:
        v = raw.get(key)
        if v is None:
            return None
        if not isinstance(v, list) or len(v) != 2:
            raise InputError(p, f"gate_checks.{key}", f"expected [candidate, reference], got {v!r}")
        pair = (server(v[0], f"gate_checks.{key}[0]"), server(v[1], f"gate_checks.{key}[1]"))
        if pair[0] == pair[1]:
            raise InputError(p, f"gate_checks.{key}", "candidate and reference must differ")
        return pair

    rerun = raw.get("rerun")
    return GateChecks(rerun=None if rerun is None else server(rerun, "gate_checks.rerun"),
                      acceptance_drop=two("acceptance_drop"), slowdown=two("slowdown"))


def _parse_workload(raw: dict[str, Any], p: str) -> Workload:
    _no_unknown(raw, _WORKLOAD_KEYS, p, "workload")

    def get(key: str, typ: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        return _get(raw, key, typ, p, f"workload.{key}", default=default)

    categories = get("categories", list, None)
    if categories is not None and (not categories or not all(isinstance(c, str) for c in categories)):
        raise InputError(p, "workload.categories", "expected a non-empty list of strings")
    concurrency = get("concurrency", list, [1])
    if not concurrency or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in concurrency):
        raise InputError(p, "workload.concurrency", f"expected a list of positive integers, got {concurrency!r}")
    w = Workload(
        prompts=get("prompts", str),
        categories=None if categories is None else tuple(categories),
        concurrency=tuple(concurrency),
        max_tokens=get("max_tokens", int, 64),
        num_prompts=get("num_prompts", int, 4),
        warmup_requests=get("warmup_requests", int, 1),
        rounds=get("rounds", int, 3),
        max_rounds=get("max_rounds", int, 6),
        request_timeout_s=float(get("request_timeout_s", (int, float), 600.0)),
        ignore_eos=get("ignore_eos", bool, True),
        pairing=get("pairing", str, "interleaved"),
        confidence=float(get("confidence", (int, float), 0.95)),
        warmup_rel=float(get("warmup_rel", (int, float), 0.05)),
        warmup_max_rounds=get("warmup_max_rounds", int, 5),
        requests_per_concurrency=get("requests_per_concurrency", int, 4),
    )
    if w.pairing not in _PAIRINGS:
        raise InputError(p, "workload.pairing", f"expected one of {_PAIRINGS}, got {w.pairing!r}")
    if not 0.5 <= w.confidence < 1:
        raise InputError(p, "workload.confidence", f"expected a fraction in [0.5, 1) such as 0.95, got {w.confidence}")
    if not 0 < w.warmup_rel < 1:
        raise InputError(p, "workload.warmup_rel", f"expected a fraction in (0, 1) such as 0.05, got {w.warmup_rel}")
    for key in ("warmup_max_rounds", "requests_per_concurrency"):
        _positive(getattr(w, key), p, f"workload.{key}")
    for key in ("max_tokens", "num_prompts", "rounds", "max_rounds", "request_timeout_s"):
        _positive(getattr(w, key), p, f"workload.{key}")
    if w.warmup_requests < 0:
        raise InputError(p, "workload.warmup_requests", f"expected >= 0, got {w.warmup_requests}")
    if w.max_rounds < w.rounds:
        raise InputError(p, "workload.max_rounds", f"must be >= rounds ({w.rounds}), got {w.max_rounds}")
    return w


def _parse_lossless(raw: dict[str, Any], p: str) -> LosslessSettings:
    _no_unknown(raw, _LOSSLESS_KEYS, p, "lossless")

    def get(key: str, typ: type | tuple[type, ...], default: Any) -> Any:
        return _get(raw, key, typ, p, f"lossless.{key}", default=default)

    s = LosslessSettings(
        prompts=get("prompts", str, None),
        num_prompts=get("num_prompts", int, 12),
        max_tokens=get("max_tokens", int, 48),
        top_logprobs=get("top_logprobs", int, 5),
        near_tie_margin=float(get("near_tie_margin", (int, float), 0.05)),
        min_exact_match=float(get("min_exact_match", (int, float), 0.9)),
        seed=get("seed", int, 0),
        hypothesis_examples=get("hypothesis_examples", int, 0),
    )
    if s.hypothesis_examples < 0:
        raise InputError(p, "lossless.hypothesis_examples", f"expected >= 0, got {s.hypothesis_examples}")
    for key in ("num_prompts", "max_tokens"):
        _positive(getattr(s, key), p, f"lossless.{key}")
    if not 2 <= s.top_logprobs <= 20:
        raise InputError(p, "lossless.top_logprobs", f"expected 2..20, got {s.top_logprobs}")
    if not (math.isfinite(s.near_tie_margin) and s.near_tie_margin >= 0):
        raise InputError(p, "lossless.near_tie_margin", f"expected a finite number >= 0, got {s.near_tie_margin}")
    if not 0 <= s.min_exact_match <= 1:
        raise InputError(p, "lossless.min_exact_match", f"expected a fraction in [0, 1], got {s.min_exact_match}")
    return s


class _Missing:
    pass


_MISSING: Any = _Missing()


def _get(raw: dict[str, Any], key: str, typ: type | tuple[type, ...], p: str, where: str,
         default: Any = _MISSING) -> Any:
    if key not in raw:
        if default is _MISSING:
            raise InputError(p, where, "missing")
        return default
    value = raw[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    # bool is an int in Python; a TOML `true` where a number belongs is a mistake.
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise InputError(p, where, f"expected {names}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(p, where, f"expected a finite number, got {value!r}")
    return value


def _no_unknown(raw: dict[str, Any], allowed: set[str], p: str, where: str) -> None:
    for key in raw:
        if key not in allowed:
            field_name = f"{where}.{key}" if where else key
            raise InputError(p, field_name, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _positive(value: float | None, p: str, where: str) -> None:
    if value is not None and value <= 0:
        raise InputError(p, where, f"expected a positive number, got {value!r}")
