"""An API key that stays out of tracebacks, reprs and logs.

pytest's long tracebacks print every frame's arguments, and dataclass reprs print every field: a
plain ``str`` key passed down the measuring path would land in a CI log with the first failed
cell. A :class:`Secret` is the key everywhere it is used (headers, the server's environment) and
``'***'`` wherever something is only shown.
"""

from __future__ import annotations


class Secret(str):
    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def secret(value: str | None) -> Secret | None:
    """``value`` as a Secret (None and the empty string stay None)."""
    return Secret(value) if value else None
