"""Benchmark prompts: load SPEED-Bench-shaped rows and build the chat messages sent.

Sources (``load_prompts(source, base_dir=...)``):

* a local ``.jsonl`` (one row per line), ``.json`` (a list of rows) or ``.parquet`` file, or a
  folder written by ``save_to_disk`` (a Dataset, or a DatasetDict: its ``test`` split, or its only
  one); relative paths resolve against ``base_dir``;
* ``hf:<repo>[:<config>]``, e.g. ``hf:nvidia/SPEED-Bench:qualitative``, loaded with
  ``datasets.load_dataset(repo, config, split="test", revision=revision)``.

Rows take one of two forms:

* SPEED-Bench: ``question_id`` (str or int), ``category`` (str) and ``turns`` (a non-empty list of
  non-empty user turns); ``sub_category``, ``source``, ``src_id``, ``difficulty`` and
  ``multiturn`` are optional and ignored (not checked: NaN there is harmless).
* NeMo-Skills: ``messages`` (a list of ``{role, content}``), ``category`` and ``question_id`` or
  ``id``. A system message (at most one, before the first user message) becomes
  ``Prompt.system``; user messages become the turns. Assistant messages are dropped: the suite
  measures drafting on the served model's own replies, so stored replies are never sent.

Rows whose source forbids redistribution hold SPEED-Bench's placeholder text instead of the prompt;
a selected placeholder row is an :class:`InputError` (never a prompt, never silently skipped, since
skipping would change the benchmark's composition). Rows filtered out by ``categories`` or
``limit_per_category`` are still checked for shape, but not refused for being placeholders.

Multi-turn: a row with several turns is one conversation, played as specdec_bench's ``run.py``
does. Turn 1 is sent; the model's reply is appended as an assistant message, then turn 2, and so
on. Each turn is one request of the load, and turn k+1 cannot be sent before turn k's reply is in.
:func:`conversation` builds the messages of the next request from the replies so far.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from specguard.config.errors import InputError, from_validation
from specguard.config.schema import Int, Name, Schema, Str, error_at, expect, must_be

SPEED_BENCH_CATEGORIES = (
    "coding", "humanities", "math", "multilingual", "qa", "rag",
    "reasoning", "roleplay", "stem", "summarization", "writing",
)  # fmt: skip
PLACEHOLDER = "FULL BENCHMARK DATA SHOULD BE FETCHED FROM THE SOURCE USING SPECDEC_BENCH"
_HF_PREFIX = "hf:"


@dataclass(frozen=True)
class Prompt:
    """One benchmark question: ``turns`` are the user turns, in order."""

    id: str
    category: str
    turns: tuple[str, ...]
    system: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.turns, tuple) and self.turns):
            raise ValueError(f"prompt {self.id!r}: turns must be a non-empty tuple, got {self.turns!r}")
        if not all(isinstance(t, str) and t for t in self.turns):
            raise ValueError(f"prompt {self.id!r}: every turn must be a non-empty string")

    def first_messages(self) -> list[dict[str, str]]:
        """The messages of the first request: ``[system?] + first user turn``."""
        return conversation(self, ())


def conversation(prompt: Prompt, replies: Sequence[str]) -> list[dict[str, str]]:
    """Messages for the next request of ``prompt``, given the model's ``replies`` so far.

    >>> p = Prompt("q1", "math", ("2+2?", "Times 3?"))
    >>> [m["role"] for m in conversation(p, ["4"])]
    ['user', 'assistant', 'user']
    """
    if isinstance(replies, str):  # a str is a Sequence[str]; one reply must still be in a list
        raise TypeError("replies must be a sequence of strings, not a string")
    if len(replies) > len(prompt.turns) - 1:
        raise ValueError(
            f"prompt {prompt.id!r} has {len(prompt.turns)} turn(s), so at most "
            f"{len(prompt.turns) - 1} reply(ies) can precede a next turn; got {len(replies)}"
        )
    messages = [{"role": "system", "content": prompt.system}] if prompt.system is not None else []
    messages.append({"role": "user", "content": prompt.turns[0]})
    for reply, turn in zip(replies, prompt.turns[1:]):
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": turn}]
    return messages


def parse_source(source: str) -> tuple[str, str | None]:
    """Split ``hf:<repo>[:<config>]`` into ``(repo, config)``; config is None when absent."""
    if not source.startswith(_HF_PREFIX):
        raise InputError(source, "prompts", f"expected 'hf:<repo>[:<config>]', got {source!r}")
    repo, sep, config = source[len(_HF_PREFIX):].partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")) or (sep and not config) or ":" in config:
        raise InputError(source, "prompts", f"expected 'hf:<owner>/<name>[:<config>]' such as "
                         f"'hf:nvidia/SPEED-Bench:qualitative', got {source!r}")
    return repo, config or None


def load_prompts(
    source: str,
    *,
    base_dir: Path,
    categories: Sequence[str] | None = None,
    limit_per_category: int | None = None,
    revision: str | None = None,
) -> list[Prompt]:
    """Load, check and select prompts, keeping file order (see the module docstring)."""
    if limit_per_category is not None and (isinstance(limit_per_category, bool) or limit_per_category < 1):
        raise ValueError(f"limit_per_category must be a positive integer, got {limit_per_category!r}")
    if isinstance(categories, str) or (categories is not None and not categories):
        raise ValueError(f"categories must be a non-empty sequence of names (None for all), got {categories!r}")
    config = None
    if source.startswith(_HF_PREFIX):
        repo, config = parse_source(source)
        label, rows = source, _hf_rows(source, repo, config, revision)
    else:
        path = Path(source) if Path(source).is_absolute() else base_dir / source
        label, rows = str(path), _local_rows(path)
    parsed: list[tuple[Prompt, str | None]] = []
    first_seen: dict[str, str] = {}
    for where, row in rows:
        prompt, placeholder_field = _parse_row(row, where, label)
        if prompt.id in first_seen:
            raise InputError(label, where("question_id"),
                             f"duplicate question_id {prompt.id!r} (first at {first_seen[prompt.id]})")
        first_seen[prompt.id] = where("question_id")
        parsed.append((prompt, placeholder_field))
    if not parsed:
        raise InputError(label, None, "no rows")
    selected = _select(parsed, categories, limit_per_category, label)
    bad = [(p, f) for p, f in selected if f is not None]
    if bad:
        prompt, field = bad[0]
        more = f" ({len(bad) - 1} more selected row(s) are placeholders too)" if len(bad) > 1 else ""
        cfg = config or "<config>"
        raise InputError(label, field, (
            f"question_id {prompt.id!r} holds SPEED-Bench's placeholder {PLACEHOLDER!r} instead of the "
            f"prompt: its source forbids redistribution{more}. Resolve it: run NVIDIA's specdec_bench "
            f"`python3 prepare_data.py --dataset speed --config {cfg}` (Model-Optimizer, examples/"
            f"specdec_bench) and point the matrix's `prompts` at the resolved local copy "
            f"(e.g. data/speed/{cfg}/test.parquet)."
        ))
    return [p for p, _ in selected]


def _select(
    parsed: list[tuple[Prompt, str | None]], categories: Sequence[str] | None, limit: int | None, label: str
) -> list[tuple[Prompt, str | None]]:
    """Rows of the wanted categories, the first ``limit`` of each, in file order."""
    present = list(dict.fromkeys(p.category for p, _ in parsed))
    unknown = [c for c in categories or () if c not in present]
    if unknown:
        raise InputError(label, "categories", f"requested categories {unknown!r} are not in the data; "
                         f"categories present: {present!r}")
    wanted = set(categories or present)
    taken: Counter[str] = Counter()
    selected = []
    for prompt, placeholder_field in parsed:
        if prompt.category in wanted and taken[prompt.category] < (limit or math.inf):
            taken[prompt.category] += 1
            selected.append((prompt, placeholder_field))
    return selected


@dataclass(frozen=True)
class _Loc:
    """Where a row sits: ``rows[3]`` (fields ``rows[3].turns``) or ``line 7`` (``line 7: turns``)."""

    name: str
    sep: str = "."

    def __call__(self, key: str) -> str:
        return f"{self.name}{self.sep}{key}"


Rows = Iterable[tuple[_Loc, Any]]


def _hf_rows(source: str, repo: str, config: str | None, revision: str | None) -> Rows:
    import datasets  # heavy import, only for sources that need it

    try:
        ds = datasets.load_dataset(repo, config, split="test", revision=revision)
        return _indexed(list(ds))
    except Exception as exc:  # network, auth, missing config: name the source, keep the cause
        raise InputError(source, None, f"could not load split 'test' (revision {revision!r}): {exc}") from exc


def _local_rows(path: Path) -> Rows:
    if not path.exists():
        raise InputError(path, None, "no such file or folder")
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".jsonl":
        return _jsonl_rows(path)
    if path.is_file() and suffix == ".json":
        data = _json_loads(_read_text(path), path, None)
        if not isinstance(data, list):
            raise InputError(path, None, f"expected a JSON list of rows, got {type(data).__name__}")
        return _indexed(data)
    if not (path.is_dir() or suffix == ".parquet"):
        raise InputError(path, None, "unsupported source: expected .jsonl, .json, .parquet, "
                         "a datasets save_to_disk folder, or hf:<repo>[:<config>]")
    import datasets  # heavy import, only for sources that need it

    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                split = "test" if "test" in ds else next(iter(ds)) if len(ds) == 1 else None
                if split is None:
                    raise InputError(path, "split", f"no 'test' split and several to choose from: {list(ds)}")
                ds = ds[split]
        else:
            ds = datasets.Dataset.from_parquet(str(path))
        return _indexed(list(ds))
    except InputError:
        raise
    except Exception as exc:  # pyarrow / datasets errors: name the file, keep the cause
        raise InputError(path, None, f"could not read: {type(exc).__name__}: {exc}") from exc


def _indexed(rows: list[Any]) -> Rows:
    return [(_Loc(f"rows[{i}]"), row) for i, row in enumerate(rows)]


def _jsonl_rows(path: Path) -> Rows:
    out = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            out.append((_Loc(f"line {n}", ": "), _json_loads(line, path, f"line {n}")))
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"could not read as UTF-8 text: {exc}") from exc


def _json_loads(text: str, path: Path, field: str | None) -> Any:
    try:
        # NaN/Infinity tokens parse (pandas writes them for missing values); in a required field
        # they fail its type check, which names the row and field, and ignored columns stay ignored.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON (truncated?): {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise InputError(path, field, problem) from exc
    except RecursionError as exc:
        raise InputError(path, field, f"invalid JSON: {exc}") from exc


# --- a row's schema ----------------------------------------------------------------------------------

# A required key's default: validate_default checks it, so a missing key is reported in field order.
_ABSENT: Any = object()


def _required(hint: str = "") -> BeforeValidator:
    """An absent key reads ``missing required key`` (no value is shown: there is none)."""
    def check(value: Any) -> Any:
        if value is _ABSENT:
            raise PydanticCustomError("missing", "missing required key" + hint)
        return value
    return BeforeValidator(check)


_Id = Annotated[Int | Name, expect("a non-empty string or an integer")]
_Category = Annotated[Name, expect("a non-empty string"), _required()]
Located = tuple[str, str]  # (text, field it came from, within the row)


class _Message(Schema):
    role: Literal["system", "user", "assistant"]
    content: Annotated[Str, expect("a non-empty string")] = Field(None, validate_default=True)  # absent: None

    @model_validator(mode="before")
    @classmethod
    def _with_a_role(cls, data: Any) -> Any:   # a bad role is the message's error; any Mapping is an object
        if not (isinstance(data, Mapping) and data.get("role") in ("system", "user", "assistant")):
            raise PydanticCustomError("specguard", "expected {role: system|user|assistant, content}")
        return dict(data)

    @field_validator("content")
    @classmethod
    def _empty_only_for_assistant(cls, content: str, info: ValidationInfo) -> str:
        if not content and info.data["role"] != "assistant":
            raise PydanticCustomError("specguard", "expected a non-empty string")
        return content


class _Row(Schema):
    model_config = ConfigDict(validate_default=True)   # for the _ABSENT defaults

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:   # runs before Schema's own check, which would name the value
        if not isinstance(data, Mapping):
            raise PydanticCustomError("specguard", f"expected an object, got {type(data).__name__}")
        return dict(data)


class _TurnsRow(_Row):
    """SPEED-Bench: ``question_id``, ``category``, ``turns``; any ``messages`` or ``id`` is ignored."""

    question_id: Annotated[_Id, _required()] = _ABSENT
    category: _Category = _ABSENT
    turns: Annotated[list[Name], Field(strict=True, min_length=1),   # strict: a list, not a tuple
                     expect("a non-empty list of non-empty strings"), _required(" (or give 'messages')")] \
        = _ABSENT

    def prompt(self) -> Prompt:
        return Prompt(str(self.question_id), self.category, tuple(self.turns))

    def texts(self) -> list[Located]:
        return [(t, f"turns[{i}]") for i, t in enumerate(self.turns)]


class _MessagesRow(_Row):
    """NeMo-Skills: ``question_id`` (or, where that is absent or null, ``id``), ``category``, ``messages``."""

    question_id: Annotated[_Id, _required(" (or 'id')")] = Field(
        _ABSENT, validation_alias=AliasChoices("question_id", "id"))
    category: _Category = _ABSENT
    messages: Annotated[list[_Message], must_be(lambda m: isinstance(m, list), "a list of {role, content}")]

    @model_validator(mode="before")
    @classmethod
    def _null_question_id_gives_way(cls, data: Any) -> Any:   # a table has both columns, one of them null
        if isinstance(data, Mapping) and data.get("question_id") is None:
            data = {k: v for k, v in data.items() if k != "question_id"}
        return data

    @field_validator("messages")
    @classmethod
    def _system_first_then_users(cls, messages: list[_Message]) -> list[_Message]:
        for i, m in enumerate(messages):
            if m.role == "system" and any(p.role != "assistant" for p in messages[:i]):
                problem = "at most one system message, before the first user message"
                raise error_at((i,), problem, m.model_dump())
        if not any(m.role == "user" for m in messages):
            raise PydanticCustomError("specguard", "expected at least one user message")
        return messages

    def prompt(self) -> Prompt:
        system = next((m.content for m in self.messages if m.role == "system"), None)
        return Prompt(str(self.question_id), self.category,
                      tuple(m.content for m in self.messages if m.role == "user"), system)

    def texts(self) -> list[Located]:
        """The user turns, then the system message: where a placeholder is looked for, in that order."""
        fields = [(m, f"messages[{i}].content") for i, m in enumerate(self.messages)]
        return [(m.content, f) for role in ("user", "system") for m, f in fields if m.role == role]


def _parse_row(row: Any, where: _Loc, label: str) -> tuple[Prompt, str | None]:
    """A row as a Prompt, plus the field holding the placeholder text (None if none does)."""
    messages_form = isinstance(row, Mapping) and row.get("messages") is not None and row.get("turns") is None
    form: type[_TurnsRow | _MessagesRow] = _MessagesRow if messages_form else _TurnsRow
    try:
        parsed = form.model_validate(row)
    except ValidationError as exc:
        err = from_validation(label, exc)   # its field is within the row (`turns`), None for the row itself
        raise InputError(label, where(err.field) if err.field else where.name, err.problem) from None
    placeholder = next((f for t, f in parsed.texts() if PLACEHOLDER.lower() in t.lower()), None)
    return parsed.prompt(), placeholder and where(placeholder)
