"""Files written whole or not at all: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path`` (atomic on POSIX); the temporary file is removed if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any, *, default: Callable[[Any], Any] | None = str,
                      allow_nan: bool = False) -> None:
    """``data`` as indented, key-sorted JSON, written atomically. NaN and infinities are refused
    unless ``allow_nan`` (they are not JSON)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=default, allow_nan=allow_nan) + "\n")
