"""Atomic writes: what was written reads back whole; a failure mid-write leaves the old file and no
temporary file behind; NaN is refused unless asked for."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard import files
from specguard.files import write_json_atomic, write_text_atomic


@settings(max_examples=30, deadline=None)
@given(text=st.text())
def test_text_reads_back_whole(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("w") / "sub" / "f.txt"
    write_text_atomic(path, text)
    assert path.read_bytes().decode("utf-8") == text
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "baseline.json"
    path.write_text("old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new " * 1000)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json"]


def test_json_is_sorted_indented_and_refuses_nan_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"b": 1, "a": Path("p")})
    assert path.read_text() == '{\n  "a": "p",\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        write_json_atomic(path, {"x": math.nan})
    assert json.loads(path.read_text()) == {"a": "p", "b": 1}
    write_json_atomic(path, {"x": math.nan}, allow_nan=True)
    assert "NaN" in path.read_text()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"p": Path("p")}, default=None)
    assert os.listdir(tmp_path) == ["x.json"]
