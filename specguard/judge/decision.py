"""When to stop measuring a cell: a sequential decision whose false-alarm rate counts every look.

A cell is judged first after ``rounds`` pairs (or rounds, for a plain cell). While any check is
UNKNOWN (its interval straddles a bound) more pairs run, and the cell is judged again, up to
``max_rounds``. Each extra look is another chance for noise to cross a bound, so the looks are
fixed in advance (``rounds``, ``2 × rounds``, …, ``max_rounds``) and every look uses the
Bonferroni-adjusted confidence ``1 − (1 − confidence) / looks``: by the union bound, the chance
that *any* look puts an interval wholly below a bound that the truth sits on is at most
``(1 − confidence) / 2`` (one side of a two-sided interval), whatever the data.

With ``rounds == max_rounds`` there is one look at the nominal confidence (a fixed design).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sequential:
    """The look schedule and per-look confidence of one cell.

    >>> Sequential(3, 6).looks
    (3, 6)
    >>> round(Sequential(3, 6).look_confidence, 4)
    0.975
    """

    rounds: int
    max_rounds: int
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not (isinstance(self.rounds, int) and self.rounds >= 1):
            raise ValueError(f"rounds must be a positive integer, got {self.rounds!r}")
        if not (isinstance(self.max_rounds, int) and self.max_rounds >= self.rounds):
            raise ValueError(f"max_rounds must be an integer >= rounds ({self.rounds}), got {self.max_rounds!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")

    @property
    def looks(self) -> tuple[int, ...]:
        """Sample sizes at which the cell is judged: every ``rounds`` more, and the cap."""
        out = list(range(self.rounds, self.max_rounds + 1, self.rounds))
        if out[-1] != self.max_rounds:
            out.append(self.max_rounds)
        return tuple(out)

    @property
    def look_confidence(self) -> float:
        """The confidence of each look's interval (Bonferroni over the looks)."""
        return 1 - (1 - self.confidence) / len(self.looks)

    @property
    def false_alarm_bound(self) -> float:
        """Upper bound on P(REGRESSED) when the truth lies exactly on the bound, over all looks."""
        return (1 - self.confidence) / 2

    def next_look(self, done: int) -> int | None:
        """The sample size of the next look after ``done``, or None at the cap."""
        if done < 0:
            raise ValueError(f"done must be >= 0, got {done!r}")
        return next((n for n in self.looks if n > done), None)
