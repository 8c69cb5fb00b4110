"""specguard.config.prompts: loading SPEED-Bench-shaped rows offline, selection, multi-turn, bad input."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

datasets = pytest.importorskip("datasets", reason="the prompt loader tests need the datasets package")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specguard.config.errors import InputError
from specguard.config.prompts import (
    PLACEHOLDER,
    SPEED_BENCH_CATEGORIES,
    Prompt,
    conversation,
    load_prompts,
    parse_source,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "fixtures" / "prompts" / "speed-sample.jsonl"


def _row(qid: str, category: str = "coding", turns: list[str] | None = None) -> dict[str, Any]:
    return {
        "question_id": qid, "category": category, "sub_category": "x",
        "turns": turns if turns is not None else [f"prompt {qid}"], "source": "unit", "src_id": qid,
        "difficulty": "easy", "multiturn": bool(turns and len(turns) > 1),
    }  # fmt: skip


ROWS = [
    _row("c1", "coding"), _row("m1", "math"), _row("c2", "coding", ["write f", "now test f"]),
    _row("m2", "math"), _row("c3", "coding"), _row("w1", "writing"),
]  # fmt: skip


def _write(path: Path, rows: list[Any]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


# --- the sample fixture -------------------------------------------------------------------------


def test_sample_fixture_has_every_category_six_times() -> None:
    prompts = load_prompts("fixtures/prompts/speed-sample.jsonl", base_dir=REPO)
    assert len(prompts) == 66
    assert Counter(p.category for p in prompts) == {c: 6 for c in SPEED_BENCH_CATEGORIES}
    assert [p.id for p in prompts[:6]] == [f"coding-{i:02d}" for i in range(1, 7)]
    multi = Counter(p.category for p in prompts if len(p.turns) > 1)
    assert set(multi.values()) <= {1} and all(len(p.turns) <= 2 for p in prompts)
    assert all(p.system is None for p in prompts)


def test_sample_fixture_rows_are_well_formed() -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        assert row["source"] == "specguard-sample" and row["src_id"] and row["difficulty"] and row["sub_category"]
        assert row["multiturn"] is (len(row["turns"]) > 1)
        assert PLACEHOLDER not in json.dumps(row)


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p.jsonl", "p.json", "p.parquet", "p_disk"])
def test_every_local_format_gives_the_same_prompts(tmp_path: Path, name: str) -> None:
    _write(tmp_path / name, ROWS)
    prompts = load_prompts(name, base_dir=tmp_path)
    assert [p.id for p in prompts] == ["c1", "m1", "c2", "m2", "c3", "w1"]
    assert prompts[2] == Prompt("c2", "coding", ("write f", "now test f"))


def test_save_to_disk_dataset_dict_uses_the_test_split(tmp_path: Path) -> None:
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:1]), "test": datasets.Dataset.from_list(ROWS[1:3])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [p.id for p in load_prompts(str(tmp_path / "dd"), base_dir=Path("/nonexistent"))] == ["m1", "c2"]


def test_integer_question_ids_become_strings(tmp_path: Path) -> None:
    _write(tmp_path / "p.jsonl", [{"question_id": 7, "category": "qa", "turns": ["Why?"]}])
    assert load_prompts("p.jsonl", base_dir=tmp_path) == [Prompt("7", "qa", ("Why?",))]


# --- selection ----------------------------------------------------------------------------------


def test_category_filter_keeps_file_order(tmp_path: Path) -> None:
    _write(tmp_path / "p.jsonl", ROWS)
    prompts = load_prompts("p.jsonl", base_dir=tmp_path, categories=["writing", "coding"])
    assert [p.id for p in prompts] == ["c1", "c2", "c3", "w1"]


def test_unknown_category_lists_the_present_ones(tmp_path: Path) -> None:
    _write(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(InputError, match=r"p\.jsonl: categories: .*'poetry'.*'coding', 'math', 'writing'"):
        load_prompts("p.jsonl", base_dir=tmp_path, categories=["coding", "poetry"])


def test_limit_per_category_takes_the_first_n(tmp_path: Path) -> None:
    _write(tmp_path / "p.jsonl", ROWS)
    assert [p.id for p in load_prompts("p.jsonl", base_dir=tmp_path, limit_per_category=1)] == ["c1", "m1", "w1"]
    sample = load_prompts(str(SAMPLE), base_dir=tmp_path, categories=["rag", "math"], limit_per_category=2)
    assert [p.id for p in sample] == ["math-01", "math-02", "rag-01", "rag-02"]


@pytest.mark.parametrize("limit", [0, -1, True])
def test_limit_must_be_positive(tmp_path: Path, limit: int) -> None:
    with pytest.raises(ValueError, match="limit_per_category"):
        load_prompts(str(SAMPLE), base_dir=tmp_path, limit_per_category=limit)


@pytest.mark.parametrize("categories", [[], "coding"])
def test_categories_must_be_a_non_empty_list_of_names(tmp_path: Path, categories: Any) -> None:
    with pytest.raises(ValueError, match="categories"):
        load_prompts(str(SAMPLE), base_dir=tmp_path, categories=categories)


# --- multi-turn ---------------------------------------------------------------------------------


def test_conversation_appends_replies_then_the_next_turn() -> None:
    p = Prompt("q", "math", ("What is 2+2?", "Times 3?", "Minus 1?"), system="Be brief.")
    assert p.first_messages() == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
    ]  # fmt: skip
    assert conversation(p, ["4", "12"]) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
        {"role": "user", "content": "Times 3?"}, {"role": "assistant", "content": "12"},
        {"role": "user", "content": "Minus 1?"},
    ]  # fmt: skip
    assert Prompt("s", "qa", ("Hi",)).first_messages() == [{"role": "user", "content": "Hi"}]


def test_conversation_refuses_more_replies_than_turns_allow() -> None:
    p = Prompt("q", "math", ("a", "b"))
    with pytest.raises(ValueError, match="at most 1"):
        conversation(p, ["x", "y"])
    with pytest.raises(TypeError):
        conversation(p, "x")


@pytest.mark.parametrize("turns", [(), ("",), ["a"]])
def test_prompt_rejects_bad_turns(turns: Any) -> None:
    with pytest.raises(ValueError):
        Prompt("q", "qa", turns)


# --- placeholder rows ---------------------------------------------------------------------------


def _placeholder_rows() -> list[dict[str, Any]]:
    rows = [_row(f"r{i}", "coding" if i % 2 else "qa") for i in range(14)]
    rows[12] = _row("speed-q12", "qa", [f"Context. {PLACEHOLDER}"])
    return rows


@pytest.mark.parametrize(("name", "field"), [("p.jsonl", "line 13: turns[0]"), ("p.parquet", "rows[12].turns[0]")])
def test_placeholder_row_is_refused_with_the_fix(tmp_path: Path, name: str, field: str) -> None:
    _write(tmp_path / name, _placeholder_rows())
    with pytest.raises(InputError) as info:
        load_prompts(name, base_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / name) in message and f": {field}: " in message and "'speed-q12'" in message
    assert "prepare_data.py" in message and "`prompts`" in message


def test_placeholder_in_a_later_turn_or_a_system_message_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "a.json", [_row("a", "qa", ["ok", PLACEHOLDER])])
    with pytest.raises(InputError, match=r"rows\[0\]\.turns\[1\]"):
        load_prompts("a.json", base_dir=tmp_path)
    nemo = {"id": "n", "category": "qa", "messages": [
        {"role": "system", "content": PLACEHOLDER.lower()}, {"role": "user", "content": "hi"}]}  # fmt: skip
    _write(tmp_path / "b.json", [nemo])
    with pytest.raises(InputError, match=r"rows\[0\]\.messages\[0\]\.content"):
        load_prompts("b.json", base_dir=tmp_path)


def test_placeholder_rows_left_out_by_the_selection_are_not_refused(tmp_path: Path) -> None:
    _write(tmp_path / "p.jsonl", _placeholder_rows())
    assert len(load_prompts("p.jsonl", base_dir=tmp_path, categories=["coding"])) == 7
    assert len(load_prompts("p.jsonl", base_dir=tmp_path, limit_per_category=3)) == 6


# --- NeMo-Skills messages form ------------------------------------------------------------------


def test_nemo_skills_messages_form(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"id": 3, "category": "chat", "messages": [
            {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]},
        {"question_id": "q2", "category": "chat", "messages": [{"role": "user", "content": "Only one"}]},
    ]  # fmt: skip
    _write(tmp_path / "n.jsonl", rows)
    expected = [Prompt("3", "chat", ("Hi", "Bye"), system="You are terse."), Prompt("q2", "chat", ("Only one",))]
    assert load_prompts("n.jsonl", base_dir=tmp_path) == expected
    # A table has every column in every row: row 0 gets question_id None next to its id.
    # (Dataset.from_list takes its columns from the first row only, so give them all there.)
    _write(tmp_path / "n.parquet", [{"question_id": None, "id": None, **r} for r in rows])
    assert load_prompts("n.parquet", base_dir=tmp_path) == expected


_SYSTEM_RULE = "at most one system message, before the first user message"
_ROLE = r"expected \{role: system\|user\|assistant, content\}"
_USER, _SYSTEM = {"role": "user", "content": "a"}, {"role": "system", "content": "s"}


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "assistant", "content": "x"}],
         r"messages: expected at least one user message, got \[\{'role': 'assistant', 'content': 'x'\}\]"),
        ([], r"messages: expected at least one user message, got \[\]"),
        ([{"role": "tool", "content": "x"}],
         rf"messages\[0\]: {_ROLE}, got \{{'role': 'tool', 'content': 'x'\}}"),
        (["hi"], rf"messages\[0\]: {_ROLE}, got 'hi'"),
        ([{"role": "user", "content": 3}], r"messages\[0\]\.content: expected a non-empty string, got 3"),
        ([{"role": "user", "content": ""}], r"messages\[0\]\.content: expected a non-empty string, got ''"),
        ([{"role": "user"}], r"messages\[0\]\.content: expected a non-empty string, got None"),
        ([{"role": "assistant", "content": 3}, _USER],
         r"messages\[0\]\.content: expected a non-empty string, got 3"),
        ([_USER, _SYSTEM],
         rf"messages\[1\]: {_SYSTEM_RULE}, got \{{'role': 'system', 'content': 's'\}}"),
        ([_SYSTEM, {"role": "system", "content": "t"}, _USER],
         rf"messages\[1\]: {_SYSTEM_RULE}, got \{{'role': 'system', 'content': 't'\}}"),
        ("hello", r"messages: expected a list of \{role, content\}, got 'hello'"),
    ],
)
def test_bad_messages_are_input_errors(tmp_path: Path, messages: Any, match: str) -> None:
    _write(tmp_path / "n.jsonl", [{"id": "a", "category": "chat", "messages": messages}])
    with pytest.raises(InputError, match=r"n\.jsonl: line 1: " + match):
        load_prompts("n.jsonl", base_dir=tmp_path)


def test_empty_assistant_replies_and_an_assistant_before_the_system_message_are_fine(tmp_path: Path) -> None:
    reply = {"role": "assistant", "content": ""}
    msgs = [reply, _SYSTEM, _USER, reply, {"role": "user", "content": "b"}]
    _write(tmp_path / "n.json", [{"id": "x", "category": "chat", "messages": msgs}])
    assert load_prompts("n.json", base_dir=tmp_path) == [Prompt("x", "chat", ("a", "b"), system="s")]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"category": "chat"}, r"question_id: missing required key \(or 'id'\)$"),
        ({"question_id": None, "category": "chat"}, r"question_id: missing required key \(or 'id'\)$"),
        ({"question_id": None, "id": None, "category": "chat"},
         "id: expected a non-empty string or an integer, got None"),
        ({"id": True, "category": "chat"}, "id: expected a non-empty string or an integer, got True"),
        ({"id": "a"}, "category: missing required key$"),
        ({"id": "a", "category": ""}, "category: expected a non-empty string, got ''"),
    ],
)
def test_bad_nemo_skills_ids_and_categories(tmp_path: Path, row: dict[str, Any], match: str) -> None:
    _write(tmp_path / "n.json", [{**row, "messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(InputError, match=r"n\.json: rows\[0\]\." + match):
        load_prompts("n.json", base_dir=tmp_path)


def test_columns_of_the_other_form_and_unknown_ones_are_ignored_even_nan(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(
        '{"question_id": "a", "category": "qa", "turns": ["hi"], "id": NaN, "messages": NaN, "x": NaN}\n'
        '{"question_id": "b", "category": "qa", "turns": ["t"], "messages": [{"role": "user"}]}\n'
        '{"question_id": null, "id": "c", "category": "qa", "turns": null, "src_id": -Infinity,'
        ' "messages": [{"role": "user", "content": "u", "name": NaN}]}\n', encoding="utf-8")
    assert load_prompts("p.jsonl", base_dir=tmp_path) == [
        Prompt("a", "qa", ("hi",)), Prompt("b", "qa", ("t",)), Prompt("c", "qa", ("u",))]


# --- bad input ----------------------------------------------------------------------------------


def test_duplicate_question_id(tmp_path: Path) -> None:
    _write(tmp_path / "p.json", [_row("a"), _row("b"), _row("a")])
    with pytest.raises(InputError, match=r"p\.json: rows\[2\]\.question_id: duplicate .*rows\[0\]"):
        load_prompts("p.json", base_dir=tmp_path)


_TURNS, _ID = "expected a non-empty list of non-empty strings", "expected a non-empty string or an integer"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"question_id": "a", "category": "qa", "turns": "hi"}\n', f"line 1: turns: {_TURNS}, got 'hi'"),
        ('{"question_id": "a", "category": "qa", "turns": ["hi"]}\n{"question_id": "b", "cat', "line 2: invalid"),
        ('{"question_id": NaN, "category": "qa", "turns": ["hi"]}\n', f"line 1: question_id: {_ID}, got nan"),
        ('{"question_id": "a", "category": "qa", "turns": [Infinity]}\n', rf"line 1: turns: {_TURNS}, got \[inf\]"),
        ('\n\n{"category": "qa", "turns": ["hi"]}\n', "line 3: question_id: missing required key$"),
        ('{"question_id": "a", "category": "qa"}\n', r"line 1: turns: missing required key \(or give 'messages'\)$"),
        ('{"question_id": "a", "category": 3, "turns": ["hi"]}\n', "line 1: category: expected a non-empty string, got 3"),
        ("[1, 2]\n", "line 1: expected an object, got list"),
        ("\n", "no rows"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "bad.jsonl").write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl: " + match):
        load_prompts("bad.jsonl", base_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("bad.parquet", b"PAR1 not really parquet", "could not read"),
        ("bad.json", b'{"rows": []}', "expected a JSON list"),
        ("bad.jsonl", b"\xff\xfe\x00", "could not read as UTF-8"),
        ("bad.csv", b"a,b\n", "unsupported source"),
    ],
)
def test_unreadable_files_are_input_errors(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=f"{name}: {match}"):
        load_prompts(name, base_dir=tmp_path)


def test_missing_file_and_bad_disk_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.jsonl: no such file"):
        load_prompts("nope.jsonl", base_dir=tmp_path)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="empty_dir: could not read"):
        load_prompts("empty_dir", base_dir=tmp_path)


def test_parquet_with_wrong_column_types(tmp_path: Path) -> None:
    _write(tmp_path / "p.parquet", [{"question_id": 1.5, "category": "qa", "turns": ["x"]}])
    with pytest.raises(InputError, match=r"p\.parquet: rows\[0\]\.question_id: expected .*, got 1\.5"):
        load_prompts("p.parquet", base_dir=tmp_path)


_CORRUPTIONS = ("drop", "wrong_type", "truncate", "non_string_turn", "empty_turns", "nan", "empty_turn")
_REQUIRED = ("question_id", "category", "turns")


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(ROWS) - 1),
    corruption=st.sampled_from(_CORRUPTIONS),
    key=st.sampled_from(_REQUIRED),
    bad=st.sampled_from([None, 1.5, True, [], {}, [1], ["ok", None]]),
    cut=st.integers(1, 40),
    as_json_list=st.booleans(),
)
def test_corrupted_rows_always_raise_input_error_naming_the_file(
    index: int, corruption: str, key: str, bad: Any, cut: int, as_json_list: bool
) -> None:
    rows: list[Any] = [dict(r) for r in ROWS]
    row = rows[index]
    if corruption == "drop":
        del row[key]
    elif corruption == "wrong_type":
        row[key] = bad
    elif corruption == "non_string_turn":
        row["turns"] = [*row["turns"], bad]
    elif corruption == "empty_turns":
        row["turns"] = []
    elif corruption == "empty_turn":
        row["turns"] = [""]
    elif corruption == "nan":
        row[key] = float("nan")
    lines = [json.dumps(r) for r in rows]  # json.dumps writes NaN, which the loader must refuse
    if corruption == "truncate":
        lines[index] = lines[index][: min(cut, len(lines[index]) - 1)]
    name = "corrupt.json" if as_json_list and corruption != "truncate" else "corrupt.jsonl"
    text = "[" + ",".join(lines) + "]" if name.endswith(".json") else "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_text(text, encoding="utf-8")
        with pytest.raises(InputError) as info:
            load_prompts(name, base_dir=Path(tmp))
    assert name in str(info.value)
    location = f"line {index + 1}" if name.endswith(".jsonl") else f"rows[{index}]"
    assert location in str(info.value)


_TEXT = st.text(min_size=1, max_size=12)
_JUNK = st.none() | st.just(float("nan")) | st.integers() | st.text(max_size=4) | st.lists(st.booleans())
_IGNORED = st.dictionaries(st.sampled_from(["sub_category", "src_id", "difficulty", "x"]), _JUNK, max_size=3)


@st.composite
def _valid_row(draw: st.DrawFn, qid: int | str) -> tuple[dict[str, Any], Prompt]:
    """A valid row of either form with ignored columns (NaN among them), and the prompt it must give."""
    category = draw(st.sampled_from(["coding", "math", "qa"]))
    turns = draw(st.lists(_TEXT, min_size=1, max_size=3))
    row: dict[str, Any] = {**draw(_IGNORED), "category": category}
    if draw(st.booleans()):  # SPEED-Bench: an id or messages column beside turns is ignored
        other_form = draw(st.dictionaries(st.sampled_from(["id", "messages"]), _JUNK))
        row.update(question_id=qid, turns=turns, **other_form)
        return row, Prompt(str(qid), category, tuple(turns))
    system = draw(st.none() | _TEXT)
    messages = [{"role": "assistant", "content": draw(st.text(max_size=3))}] if draw(st.booleans()) else []
    messages += [{"role": "system", "content": system}] if system is not None else []
    for i, turn in enumerate(turns):
        messages.append({"role": "user", "content": turn})
        if i < len(turns) - 1 or draw(st.booleans()):  # a stored reply, possibly empty, is dropped
            messages.append({"role": "assistant", "content": draw(st.text(max_size=3))})
    ids = draw(st.sampled_from([{"id": qid}, {"question_id": qid}, {"question_id": None, "id": qid},
                                {"question_id": qid, "id": float("nan")}]))
    table = draw(st.sampled_from([{}, {"turns": None}]))  # a table has both forms' columns
    row.update(messages=messages, **ids, **table)
    return row, Prompt(str(qid), category, tuple(turns), system)


@st.composite
def _valid_rows(draw: st.DrawFn) -> list[tuple[dict[str, Any], Prompt]]:
    ids = st.lists(st.integers() | st.text(min_size=1, max_size=6), min_size=1, max_size=6, unique_by=str)
    return [draw(_valid_row(qid)) for qid in draw(ids)]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_valid_rows(), as_json_list=st.booleans())
def test_random_valid_rows_round_trip(rows: list[tuple[dict[str, Any], Prompt]], as_json_list: bool) -> None:
    name = "rows.json" if as_json_list else "rows.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp) / name, [row for row, _ in rows])  # json.dumps writes NaN, which the loader parses
        assert load_prompts(name, base_dir=Path(tmp)) == [prompt for _, prompt in rows]


def test_rows_and_messages_may_be_any_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import MappingProxyType as Frozen

    rows = [Frozen(_row("a", "qa")), Frozen({"id": "b", "category": "qa", "messages": [Frozen(
        {"role": "user", "content": "hi"})]})]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: rows)
    expected = [Prompt("a", "qa", ("prompt a",)), Prompt("b", "qa", ("hi",))]
    assert load_prompts("hf:a/b", base_dir=Path(".")) == expected


# --- hub sources --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("hf:nvidia/SPEED-Bench:qualitative", ("nvidia/SPEED-Bench", "qualitative")),
        ("hf:nvidia/SPEED-Bench:throughput_1k", ("nvidia/SPEED-Bench", "throughput_1k")),
        ("hf:org/data", ("org/data", None)),
    ],
)
def test_parse_source(source: str, expected: tuple[str, str | None]) -> None:
    assert parse_source(source) == expected


@pytest.mark.parametrize("source", ["hf:", "hf:nvidia", "hf:/x", "hf:a/b:", "hf:a/b:c:d", "hf:a/b/c", "nvidia/x"])
def test_parse_source_refuses_malformed(source: str) -> None:
    with pytest.raises(InputError, match="prompts: expected 'hf:"):
        parse_source(source)


def test_hf_source_calls_load_dataset_with_test_split_and_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(repo: str, config: str | None, *, split: str, revision: str | None) -> list[Any]:
        calls.append((repo, config, split, revision))
        return [_row("a", "qa"), _row("b", "qa", [PLACEHOLDER])]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = "hf:nvidia/SPEED-Bench:qualitative"
    assert [p.id for p in load_prompts(source, base_dir=Path("."), limit_per_category=1, revision="abc")] == ["a"]
    assert calls == [("nvidia/SPEED-Bench", "qualitative", "test", "abc")]
    with pytest.raises(InputError, match=r"hf:nvidia/SPEED-Bench:qualitative: rows\[1\]\.turns\[0\]: .*"
                       r"prepare_data\.py --dataset speed --config qualitative"):
        load_prompts(source, base_dir=Path("."))


def test_hf_load_failure_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(InputError, match="hf:a/b: could not load .*no network"):
        load_prompts("hf:a/b", base_dir=Path("."))
