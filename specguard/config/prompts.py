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
from typing import Any

from specguard.config.errors import InputError

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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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


def _parse_row(row: Any, where: _Loc, label: str) -> tuple[Prompt, str | None]:
    """A row as a Prompt, plus the field holding the placeholder text (None if none does)."""
    if not isinstance(row, Mapping):
        raise InputError(label, where.name, f"expected an object, got {type(row).__name__}")
    use_messages = row.get("messages") is not None and row.get("turns") is None
    id_key = "question_id" if row.get("question_id") is not None or not use_messages else "id"
    if id_key not in row:
        raise InputError(label, where("question_id"), "missing required key" + " (or 'id')" * use_messages)
    qid = row[id_key]
    if isinstance(qid, bool) or not (isinstance(qid, int) or (isinstance(qid, str) and qid)):
        raise InputError(label, where(id_key), f"expected a non-empty string or an integer, got {_short(qid)}")
    category = row.get("category")
    if not (isinstance(category, str) and category):
        got = f"expected a non-empty string, got {_short(category)}"
        raise InputError(label, where("category"), got if "category" in row else "missing required key")
    if use_messages:
        system, turns = _from_messages(row["messages"], where, label)
    else:
        system, raw = None, row.get("turns")
        if "turns" not in row:
            raise InputError(label, where("turns"), "missing required key (or give 'messages')")
        if not (isinstance(raw, list) and raw and all(isinstance(t, str) and t for t in raw)):
            got = f"expected a non-empty list of non-empty strings, got {_short(raw)}"
            raise InputError(label, where("turns"), got)
        turns = [(t, where(f"turns[{i}]")) for i, t in enumerate(raw)]
    placeholder = next((f for t, f in turns if PLACEHOLDER.lower() in t.lower()), None)
    if system is not None and placeholder is None and PLACEHOLDER.lower() in system[0].lower():
        placeholder = system[1]
    prompt = Prompt(str(qid), category, tuple(t for t, _ in turns), system[0] if system else None)
    return prompt, placeholder


Located = tuple[str, str]  # (text, field it came from)


def _from_messages(messages: Any, where: _Loc, label: str) -> tuple[Located | None, list[Located]]:
    """(system text and field, [(user turn, field)]) from a NeMo-Skills ``messages`` list."""
    if not isinstance(messages, list):
        got = f"expected a list of {{role, content}}, got {_short(messages)}"
        raise InputError(label, where("messages"), got)
    system: Located | None = None
    turns: list[Located] = []
    for i, msg in enumerate(messages):
        field = where(f"messages[{i}]")
        if not isinstance(msg, Mapping) or msg.get("role") not in ("system", "user", "assistant"):
            got = f"expected {{role: system|user|assistant, content}}, got {_short(msg)}"
            raise InputError(label, field, got)
        content, role = msg.get("content"), msg["role"]
        if not isinstance(content, str) or (role != "assistant" and not content):
            raise InputError(label, f"{field}.content", f"expected a non-empty string, got {_short(content)}")
        if role == "system":
            if system is not None or turns:
                raise InputError(label, field, "at most one system message, before the first user message")
            system = (content, f"{field}.content")
        elif role == "user":
            turns.append((content, f"{field}.content"))
    if not turns:
        raise InputError(label, where("messages"), "expected at least one user message")
    return system, turns
