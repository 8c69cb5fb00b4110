"""Errors the suite raises on bad input: each names the file and the field."""

from __future__ import annotations

from pathlib import Path


class SpecguardError(Exception):
    """Base class of the suite's own errors."""


class InputError(SpecguardError):
    """A file the suite reads (matrix, baseline, dataset) is malformed.

    The message always names the file and the field, e.g.
    ``fixtures/matrices/x.toml: servers[1].dtype: expected a string, got 3``.
    """

    def __init__(self, path: str | Path | None, field: str | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.field = field
        self.problem = problem
        where = ": ".join(part for part in (self.path, field) if part)
        super().__init__(f"{where}: {problem}" if where else problem)
