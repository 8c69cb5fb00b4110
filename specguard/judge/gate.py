"""Checks of the gate itself, on real servers (``tests/test_gate.py``): an identical rerun is not
REGRESSED, a planted acceptance drop and a planted slowdown are. Cases come from the matrix's
``[gate_checks]``; each uses the first selected category at the lowest concurrency."""

from __future__ import annotations

from dataclasses import dataclass

from specguard.config.matrix import Cell, Matrix

@dataclass(frozen=True)
class GateCase:
    id: str
    kind: str               # "rerun", "acceptance_drop" or "slowdown"
    candidate: Cell         # the cell judged
    reference: Cell | None  # whose figures are the baseline (None for a rerun: the candidate's own)


def gate_cases(matrix: Matrix, cells: list[Cell]) -> list[GateCase]:
    """The gate's checks among ``cells`` (a session's selection): at their lowest concurrency and
    their first category."""
    g = matrix.gate_checks
    if not cells:
        return []
    conc, cat = min(c.concurrency for c in cells), cells[0].category

    def cell(server: str) -> Cell:
        return next(c for c in cells if c.server.name == server and c.concurrency == conc and c.category == cat)

    out: list[GateCase] = []
    if g.rerun is not None:
        out.append(GateCase(f"{matrix.id_prefix}-gate-rerun-{g.rerun}-c{conc}-{cat}", "rerun", cell(g.rerun), None))
    for kind, pair in (("acceptance_drop", g.acceptance_drop), ("slowdown", g.slowdown)):
        if pair is None:
            continue
        cand, ref = pair
        out.append(GateCase(f"{matrix.id_prefix}-gate-{kind}-{cand}-vs-{ref}-c{conc}-{cat}", kind, cell(cand),
                            cell(ref)))
    return out


def group_server(case: GateCase, matrix: Matrix) -> str:
    """The server whose group the case runs in: the later one in start order, so that both cells
    are measured (and both servers were live) by then."""
    order = [s.name for s in matrix.server_order()]
    names = [case.candidate.server.name] + ([case.reference.server.name] if case.reference else [])
    return max(names, key=order.index)
