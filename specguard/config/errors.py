"""Errors the suite raises on bad input: each names the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


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


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the suite names fields: ``("servers", 1, "dtype")`` is
    ``servers[1].dtype``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def from_validation(path: str | Path | None, exc: "ValidationError", prefix: str = "") -> InputError:
    """The first error of a pydantic ``ValidationError`` as an InputError naming the file and the
    field; the message is pydantic's (or a validator's own), followed by the value it got."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    field = ".".join(p for p in (prefix, field_path(loc)) if p) or None
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] != "missing" and "got " not in msg:
        value = err.get("input")
        shown = repr(value)
        msg = f"{msg}, got {shown if len(shown) <= 80 else shown[:77] + '...'}"
    return InputError(path, field, msg)
