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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag,
                      TypeAdapter, ValidationError, WrapValidator, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from specguard.config.errors import InputError, from_validation
from specguard.config.schema import error_at
from specguard.config.tolerance import Tolerance

SUPPORTED_VERSIONS = (1,)
MARKERS = ("cpu", "gpu")


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


# --- the schema: one pydantic model per TOML table -------------------------------------------

_TYPE_WORDS = {   # pydantic's messages in the suite's words (a validator's own message wins)
    "missing": "missing", "string_type": "expected a string", "int_type": "expected an integer",
    "float_type": "expected a number", "bool_type": "expected true or false", "dict_type": "expected a table",
    "model_type": "expected a table", "list_type": "expected a list", "literal_error": "expected {expected}",
    "finite_number": "expected a finite number", "invalid-json-value": "expected a JSON value",
}
_NOT_KEYS = ("[key]", "<number>", "<table>")   # parts of a pydantic location that name no key
_JSON_TABLE = TypeAdapter(dict[str, JsonValue])


def _say(message: str, *, types: bool = False) -> WrapValidator:
    """The value's own errors (not its items') as ``message``, type errors too if ``types``."""
    def wrap(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["loc"] or (not types and err["type"] in _TYPE_WORDS):
                raise
            raise PydanticCustomError("invalid", message) from None
    return WrapValidator(wrap)


def _not_suite_flag(arg: str) -> str:
    for flag in ("--host", "--port", "--speculative-config", "--model", "--api-key"):
        if arg == flag or arg.startswith(flag + "="):
            raise PydanticCustomError("suite_flag", f"{flag} is set by the suite; remove it from args")
    return arg


PositiveInt = Annotated[int, Field(gt=0), _say("expected a positive number")]
PositiveFloat = Annotated[float, Field(gt=0), _say("expected a positive number")]
NonNegativeInt = Annotated[int, Field(ge=0), _say("expected >= 0")]
# min_speedup: 1.1 | { c1 = 1.1 } | { c1 = { coding = 1.2, rag = 1.3 } }, a number or a table by its type
_BY_TYPE = Discriminator(lambda v: "<table>" if isinstance(v, dict) else "<number>")
_Speedup = Annotated[float, Field(gt=0), _say("expected a speedup > 0 such as 1.1", types=True),
                     Tag("<number>")]
_Categories = Annotated[dict[str, _Speedup], Field(min_length=1),
                        _say("expected a number or a table of category = number"), Tag("<table>")]
_Concurrency = Annotated[str, Field(pattern=r"^c[0-9]*[1-9][0-9]*$"),
                         _say("expected a concurrency key such as c1 or c16")]
MinSpeedup = Annotated[_Speedup | Annotated[dict[_Concurrency, Annotated[_Speedup | _Categories, _BY_TYPE]],
                                            Tag("<table>")], _BY_TYPE]


class _Table(BaseModel):
    """A TOML table: strict types (no string for a number, no true for an integer), no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    _unknown: ClassVar[str] = "unknown key (allowed: {allowed})"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        for key in data if isinstance(data, dict) else ():
            if key not in cls.model_fields:
                allowed = ", ".join(sorted(cls.model_fields))
                raise error_at((key,), cls._unknown.format(allowed=allowed), data[key], "unknown_key")
        return data


class SpeculativeConfig(BaseModel):
    """vLLM's ``--speculative-config``: keys other than these two are passed on as they are."""

    model_config = ConfigDict(extra="allow", strict=True)
    method: str
    num_speculative_tokens: Annotated[int, Field(gt=0),
                                      _say("expected a positive integer", types=True)] | None = None

    @model_validator(mode="after")
    def _json_values(self) -> SpeculativeConfig:
        _JSON_TABLE.validate_python(self.model_extra)   # they reach vLLM as JSON
        return self


class DefaultsTable(_Table):
    """``[defaults]``: merged into every ``[[servers]]`` entry (any server key but ``name``)."""

    model: str | None = None
    dtype: str = "auto"
    max_model_len: PositiveInt | None = None
    args: list[Annotated[str, AfterValidator(_not_suite_flag)]] = []
    env: dict[str, str] = {}
    speculative_config: SpeculativeConfig | None = None   # none: plain decoding
    baseline: str | None = None   # the plain server its speedup is measured against
    trust_remote_code: bool = False
    enable_prefix_caching: bool = False
    startup_timeout_s: PositiveFloat = 900.0
    tensor_parallel_size: PositiveInt = 1
    perf: bool = True
    lossless: Literal["strict", "diagnostic", "off"] = "strict"
    min_acceptance_length: Annotated[float, Field(ge=1), _say(
        "expected a positive number >= 1 (a mean acceptance length)")] | None = None
    min_speedup: MinSpeedup | None = None


class ServerTable(DefaultsTable):
    """One ``[[servers]]`` entry; ``model`` is needed here or in ``[defaults]``."""

    model_config = ConfigDict(json_schema_extra=lambda schema: schema["required"].remove("model"))
    name: Annotated[str, Field(pattern=r"^[\w.-]+$"), _say("use letters, digits, '-', '_' or '.'")]
    model: str


class WorkloadTable(_Table):
    prompts: str
    categories: Annotated[list[str], Field(min_length=1),
                          _say("expected a non-empty list of strings", types=True)] | None = None
    concurrency: Annotated[list[Annotated[int, Field(gt=0), _say("expected a positive integer", types=True)]],
                           Field(min_length=1),
                           _say("expected a non-empty list of positive integers", types=True)] = [1]
    max_tokens: PositiveInt = 64
    num_prompts: PositiveInt = 4
    warmup_requests: NonNegativeInt = 1
    rounds: PositiveInt = 3
    max_rounds: PositiveInt = 6
    request_timeout_s: PositiveFloat = 600.0
    ignore_eos: bool = True
    pairing: Literal["interleaved", "sequential"] = "interleaved"
    confidence: Annotated[float, Field(ge=0.5, lt=1),
                          _say("expected a fraction in [0.5, 1) such as 0.95")] = 0.95
    warmup_rel: Annotated[float, Field(gt=0, lt=1), _say("expected a fraction in (0, 1) such as 0.05")] = 0.05
    warmup_max_rounds: PositiveInt = 5
    requests_per_concurrency: PositiveInt = 4

    @model_validator(mode="after")
    def _max_rounds(self) -> WorkloadTable:
        if self.max_rounds < self.rounds:
            raise error_at(("max_rounds",), f"must be >= rounds ({self.rounds}), got {self.max_rounds}",
                         self.max_rounds)
        return self


class LosslessTable(_Table):
    prompts: str | None = None   # default: the workload's prompts
    num_prompts: PositiveInt = 12
    max_tokens: PositiveInt = 48
    top_logprobs: Annotated[int, Field(ge=2, le=20), _say("expected 2..20")] = 5
    near_tie_margin: Annotated[float, Field(ge=0), _say("expected a finite number >= 0")] = 0.05
    min_exact_match: Annotated[float, Field(ge=0, le=1), _say("expected a fraction in [0, 1]")] = 0.9
    seed: int = 0
    hypothesis_examples: NonNegativeInt = 0


class ToleranceTable(_Table):
    """``{ rel = 0.05, direction = "higher" }``, or the bare number ``rel``; ``advisory = true``:
    compared and reported, never deciding a verdict, on any profile."""

    rel: Annotated[float, Field(ge=0, lt=1), _say("expected a fraction in [0, 1) such as 0.05", types=True)]
    direction: Literal["higher", "lower"] = "higher"
    advisory: bool = False


def _bare_rels(schema: dict[str, Any]) -> None:
    """In the JSON Schema too, a metric's tolerance may be the bare number ``rel``."""
    for metric, table in schema["properties"].items():
        schema["properties"][metric] = {"anyOf": [{"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                                  table]}


class TolerancesTable(_Table):
    """How far each metric may move from its baseline."""

    model_config = ConfigDict(json_schema_extra=_bare_rels)
    _unknown: ClassVar[str] = "unknown metric (known: {allowed})"
    output_throughput: ToleranceTable | None = None
    speedup: ToleranceTable | None = None
    acceptance_length: ToleranceTable | None = None
    acceptance_rate: ToleranceTable | None = None
    per_position_acceptance: ToleranceTable | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _bare_rel(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
            raise PydanticCustomError("invalid", "expected a number or a table")
        return value if isinstance(value, dict) else {"rel": value}


_Pair = Annotated[list[str], Field(min_length=2, max_length=2),
                  _say("expected [candidate, reference]", types=True)]


class GateChecksTable(_Table):
    """Real checks of the gate itself (tests/test_gate.py), by server name."""

    rerun: str | None = None
    acceptance_drop: _Pair | None = None
    slowdown: _Pair | None = None


class MatrixFile(_Table):
    """A specguard matrix: which vLLM servers to start and which workloads to send them."""

    model_config = ConfigDict(title="specguard matrix")
    version: Annotated[int, Field(ge=min(SUPPORTED_VERSIONS), le=max(SUPPORTED_VERSIONS)),
                       _say(f"unsupported version (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")]
    name: str
    id_prefix: str | None = None   # default: name
    marker: Literal["cpu", "gpu"]
    description: str = ""
    defaults: DefaultsTable = DefaultsTable()
    servers: Annotated[list[ServerTable], Field(min_length=1), _say("at least one server is needed")]
    workload: WorkloadTable
    tolerances: TolerancesTable = TolerancesTable()
    lossless: LosslessTable = LosslessTable()
    reference_profile: Annotated[str, Field(pattern=r"^[^./][^/]*$"),
                                 _say("expected a profile name such as 'cpu-amd-epyc-2c'")] | None = None
    gate_checks: GateChecksTable = GateChecksTable()

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        """Each server entry gets the ``[defaults]`` it does not set (in new dicts, not in the input)."""
        defaults = data.get("defaults", {}) if isinstance(data, dict) else None
        if isinstance(defaults, dict) and isinstance(data.get("servers"), list):
            servers = [{**defaults, **s} if isinstance(s, dict) else s for s in data["servers"]]
            data = {**data, "servers": servers}
        return data

    @model_validator(mode="after")
    def _cross_references(self) -> MatrixFile:
        names = [s.name for s in self.servers]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise error_at(("servers", i, "name"), "duplicate server name", n)
        known = f"expected a server name of this matrix ({', '.join(names)})"
        for key, value in self.gate_checks:
            for j, v in list(enumerate(value)) if isinstance(value, list) else [(None, value)]:
                if v is not None and v not in names:
                    raise error_at(("gate_checks", key) + (() if j is None else (j,)), known, v)
            if isinstance(value, list) and value[0] == value[1]:
                raise error_at(("gate_checks", key), "candidate and reference must differ", value)
        for i, s in enumerate(self.servers):
            if s.baseline is not None and s.baseline not in names:
                raise error_at(("servers", i, "baseline"), known, s.baseline)
            if s.baseline is not None and self.servers[names.index(s.baseline)].speculative_config:
                raise error_at(("servers", i, "baseline"), "expected a plain server, not a speculative one",
                             s.baseline)
        return self


def matrix_json_schema() -> dict[str, Any]:
    """The JSON Schema of a matrix file (``python -m specguard schema``, docs/matrix.schema.json)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **MatrixFile.model_json_schema()}


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
    """Validate parsed TOML; the first problem raises InputError naming the file and the field."""
    try:
        m = MatrixFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        words = _TYPE_WORDS.get(err["type"])
        loc = tuple(p for p in err["loc"] if p not in _NOT_KEYS)
        message = err["msg"] if words is None else words.format(**err.get("ctx", {}))
        raise from_validation(path, error_at(loc, message, err["input"], err["type"])) from None
    return Matrix(
        path=path, name=m.name, id_prefix=m.name if m.id_prefix is None else m.id_prefix, marker=m.marker,
        servers=tuple(_server_config(s) for s in m.servers), workload=Workload(**_fields(m.workload)),
        tolerances={k: Tolerance(t.rel, t.direction, t.advisory)   # in the file's order
                    for k in raw.get("tolerances", {}) if (t := getattr(m.tolerances, k)) is not None},
        lossless=LosslessSettings(**_fields(m.lossless)), description=m.description,
        reference_profile=m.reference_profile, gate_checks=GateChecks(**_fields(m.gate_checks)))


def _fields(table: BaseModel) -> dict[str, Any]:
    """A table's values for its frozen dataclass: lists as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in table}


def _server_config(s: ServerTable) -> ServerConfig:
    spec = None if s.speculative_config is None else s.speculative_config.model_dump(exclude_unset=True)
    by_key: dict[str, Any] = s.min_speedup if isinstance(s.min_speedup, dict) else {"c0": s.min_speedup}
    floors = sorted(((int(key[1:]), category), x) for key, value in by_key.items() if value is not None
                    for category, x in (value.items() if isinstance(value, dict) else [("", value)]))
    return ServerConfig(**{
        **_fields(s), "env": tuple(sorted(s.env.items())), "min_speedup": tuple(floors),
        "speculative_config": None if spec is None else json.dumps(spec, sort_keys=True),
    })
