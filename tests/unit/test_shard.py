"""--shard K/N: families × category groups over N shards, balanced by greedy LPT, on the Gemma 4
matrix (two families, 11 categories) and the tiny CPU matrix; the plugin's wiring through a real
collection."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.config.matrix import Matrix, load_matrix
from specguard.plugin import hooks
from specguard.plugin import shard as sharding
from specguard.plugin.session import Options, SpecguardSession

ROOT = Path(__file__).resolve().parents[2]
GEMMA = ROOT / "fixtures" / "matrices" / "gemma4-h100.toml"
TINY = ROOT / "fixtures" / "matrices" / "tiny-cpu.toml"


@pytest.fixture(scope="module")
def gemma() -> Matrix:
    return load_matrix(GEMMA)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> SpecguardSession:
    """The Gemma matrix's session, as the plugin builds it (its parameter ids → families)."""
    tmp = tmp_path_factory.mktemp("gemma")
    return SpecguardSession.create(Options(matrix=GEMMA, baseline_dir=ROOT / "baselines", results_dir=tmp / "r",
                                           profile="h100-80gb"))


def _cells(m: Matrix) -> list:
    return m.cells(list(m.workload.categories))


# --- parsing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("1/1", (1, 1)), ("2/8", (2, 8)), (" 3 / 3 ", (3, 3))])
def test_shard_values(text: str, expected: tuple[int, int]) -> None:
    assert hooks._shard_spec(text) == expected


@pytest.mark.parametrize("text, says", [("0/3", "1 <= K <= N"), ("4/3", "1 <= K <= N"), ("x", "could not parse"),
                                        ("1/0", "N >= 1"), ("1/", "could not parse"), ("-1/3", "could not parse"),
                                        ("1.5/3", "could not parse")])
def test_bad_shard_values_are_usage_errors_naming_the_option(text: str, says: str) -> None:
    with pytest.raises(pytest.UsageError) as err:
        hooks._shard_spec(text)
    assert str(err.value).startswith("--shard: ") and says in str(err.value) and repr(text) in str(err.value)


# --- the Gemma matrix, N = 1..8 ----------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 9))
def test_every_cell_in_exactly_one_shard(gemma: Matrix, n: int) -> None:
    cells = _cells(gemma)
    plan = sharding.plan(gemma, cells, {}, n)
    per_shard = [[c for u in plan.units_of(k) for c in u.cells] for k in range(1, n + 1)]
    everything = [c for cs in per_shard for c in cs]
    assert sorted(everything) == sorted(c.id for c in cells)
    assert set(plan.shard_of.values()) <= set(range(1, n + 1))
    assert sharding.select(gemma, cells, {}, 1, n) == [u.id for u in plan.units_of(1)]


@pytest.mark.parametrize("n", range(1, 9))
def test_a_family_and_its_tests_are_never_split(session: SpecguardSession, n: int) -> None:
    """Every parametrized test (cells, lossless, aggregates, security, gate) is kept by exactly one
    of the N shards, the one of its unit; a speculative cell's plain cell is in its shard, and a
    family's tests of no category are in the shard of its first category."""
    shards = [hooks._shard(session, k, n) for k in range(1, n + 1)]
    groups = hooks._server_groups(session)
    plan = shards[0].plan
    for pid in groups:
        keepers = [s.index for s in shards if s.keeps(pid)]
        assert keepers == [plan.shard_of[shards[0].unit_of_test[pid]]], pid
    where = {pid: next(s.index for s in shards if s.keeps(pid)) for pid in groups}
    for c in session.cells():
        base = session.baseline_cell(c)
        if base is not None:
            assert where[base.id] == where[c.id], (c.id, base.id)
    first = session.categories[0]
    for pid, family in groups.items():
        if pid not in {c.id for c in session.cells()}:   # a test of no category
            plain = session.matrix.server(family)
            assert where[pid] == where[f"gemma4-{plain.name}-c1-{first}"], pid
    for u in plan.units:   # a unit's cells are one family's, in its categories only
        assert {session.matrix.baseline_of(c.server) or c.server for c in session.cells() if c.id in u.cells} \
            == {session.matrix.server(u.family)}
        assert all(c.category in u.categories for c in session.cells() if c.id in u.cells)


def test_two_families_on_eight_shards_leave_none_empty(gemma: Matrix) -> None:
    plan = sharding.plan(gemma, _cells(gemma), {}, 8)
    assert all(plan.units_of(k) for k in range(1, 9)), plan.shard_of
    assert len({u.family for u in plan.units}) == 2


@pytest.mark.parametrize("n", range(1, 9))
def test_the_plan_is_deterministic(gemma: Matrix, n: int) -> None:
    cells = _cells(gemma)
    a, b = sharding.plan(gemma, cells, {}, n), sharding.plan(gemma, list(reversed(cells))[::-1], {}, n)
    assert a.digest() == b.digest() and dict(a.shard_of) == dict(b.shard_of)


def test_one_shard_is_one_unit_per_family(gemma: Matrix) -> None:
    plan = sharding.plan(gemma, _cells(gemma), {}, 1)
    assert [u.id for u in plan.units] == ["31b-baseline:" + "+".join(gemma.workload.categories),
                                          "26b-a4b-baseline:" + "+".join(gemma.workload.categories)]


def test_proxy_balance_on_the_gemma_matrix(gemma: Matrix) -> None:
    """Without records: cells × max_tokens. 132 cells of 6 per category and family."""
    loads = {n: [round(x / gemma.workload.max_tokens) for x in sharding.plan(gemma, _cells(gemma), {}, n).loads()]
             for n in range(1, 9)}
    assert loads[1] == [132] and loads[2] == [66, 66] and loads[4] == [36, 36, 30, 30]
    assert max(loads[8]) == 18 and sum(loads[8]) == 132


def test_recorded_durations_balance_a_heavy_family(gemma: Matrix) -> None:
    """The 31B family takes ~3x the 26B's time: its categories are spread over more shards."""
    cells = _cells(gemma)
    durations = {c.id: (3000.0 if c.server.name.startswith("31b") else 1000.0) for c in cells}
    plan = sharding.plan(gemma, cells, durations, 4)
    assert plan.seconds and plan.basis == "recorded durations"
    loads = plan.loads()
    assert max(loads) <= 1.05 * sum(loads) / 4
    heavy = [k for k in range(1, 5) if any(u.family == "31b-baseline" for u in plan.units_of(k))]
    assert len(heavy) == 4


def test_durations_come_from_the_latest_cell_record() -> None:
    records = [{"kind": "cell", "cell": "a", "round_durations_s": [1.0, 2.0]},
               {"kind": "server", "name": "x", "startup_s": 50},
               {"kind": "cell", "cell": "a", "round_durations_s": [3.0, 4.0]},
               {"kind": "cell", "cell": "b", "round_durations_s": []}]
    assert sharding.recorded_durations(records) == {"a": 7.0}


def test_missing_durations_get_the_recorded_mean(gemma: Matrix) -> None:
    cells = _cells(gemma)
    costs, seconds, basis = sharding.cell_costs(gemma, cells, {cells[0].id: 10.0, cells[1].id: 30.0})
    assert seconds and costs[cells[0].id] == 10.0 and costs[cells[5].id] == 20.0
    assert "2 of 132 cells" in basis


def test_before_any_record_the_baseline_throughputs_weigh_the_cells(session: SpecguardSession) -> None:
    """The Gemma baseline's published tok/s per server and concurrency: the 31B family (40 tok/s
    plain at c=1) weighs about three times the 26B MoE's, so 4 shards come out even, not 2 of them
    with the 31B's cells and 2 with the 26B's."""
    cells = session.cells()
    tps = sharding.stored_throughputs(session.matrix, cells, session.baseline, session.stored_aggregates)
    assert len(tps) == len(cells) and tps["gemma4-31b-baseline-c1-coding"] == 40.3
    plan = sharding.plan(session.matrix, cells, {}, 4, tps)
    assert plan.seconds and plan.upper_bound and "baseline's tok/s" in plan.basis
    loads = plan.loads()
    assert max(loads) <= 1.05 * sum(loads) / 4
    assert "at most about" in plan.describe(1)
    proxy = sharding.plan(session.matrix, cells, {}, 4)
    assert not proxy.seconds and [len(proxy.units_of(k)) for k in range(1, 5)] == [1, 1, 1, 1]
    # Recorded durations come first: a single one makes the plan use them.
    recorded = sharding.plan(session.matrix, cells, {cells[0].id: 100.0}, 4, tps)
    assert recorded.basis.startswith("recorded durations") and not recorded.upper_bound


# --- Hypothesis: random durations --------------------------------------------------------------------

def _makespan(costs: dict[str, float], assign: dict[str, int], n: int) -> float:
    loads = [0.0] * n
    for item, k in assign.items():
        loads[k - 1] += costs[item]
    return max(loads)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(1.0, 10_000.0), min_size=132, max_size=132), st.integers(1, 8))
def test_random_durations(durations: list[float], n: int) -> None:
    m = load_matrix(GEMMA)
    cells = _cells(m)
    d = {c.id: x for c, x in zip(cells, durations)}
    plan = sharding.plan(m, cells, d, n)
    # Every cell in one unit of one shard; a unit is one family's cells, its categories whole.
    owners = [u.id for u in plan.units for _ in u.cells]
    assert sorted(c for u in plan.units for c in u.cells) == sorted(d) and len(owners) == 132
    for u in plan.units:
        assert {c.category for c in cells if c.id in u.cells} == set(u.categories)
        assert sum(1 for c in cells if c.category in u.categories
                   and (m.baseline_of(c.server) or c.server).name == u.family) == len(u.cells)
    loads = plan.loads()
    assert math.isclose(sum(loads), math.fsum(d.values()), rel_tol=1e-9)
    costs = {u.id: u.cost for u in plan.units}
    # The assignment is greedy LPT over the plan's units, with its guarantees: no shard is more than
    # the costliest unit above another, and the longest is within Graham's bound of the mean.
    assert dict(plan.shard_of) == sharding.lpt(costs, n)
    biggest = max(costs.values())
    assert max(loads) - min(loads) <= biggest + 1e-6
    assert max(loads) <= sum(loads) / n + (1 - 1 / n) * biggest + 1e-6
    # The grouping: within CLOSE of LPT over the finest units (every family × category on its own).
    finest = {f"{u}:{cat}": 0.0 for u in {x.family for x in plan.units} for cat in m.workload.categories}
    for c in cells:
        finest[f"{(m.baseline_of(c.server) or c.server).name}:{c.category}"] += d[c.id]
    assert max(loads) <= (1 + sharding.CLOSE) * _makespan(finest, sharding.lpt(finest, n), n) + 1e-6


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(0.1, 100.0), min_size=1, max_size=7), st.integers(1, 3))
def test_lpt_within_its_bound_of_the_optimum(costs: list[float], n: int) -> None:
    """LPT's longest bin is at most 4/3 - 1/(3N) times the optimum's (Graham 1969), checked by brute force."""
    items = {f"u{i}": c for i, c in enumerate(costs)}
    assign = sharding.lpt(items, n)
    assert sorted(assign) == sorted(items) and set(assign.values()) <= set(range(1, n + 1))
    best = min(_makespan(items, dict(zip(items, choice)), n)
               for choice in itertools.product(range(1, n + 1), repeat=len(items)))
    assert _makespan(items, assign, n) <= (4 / 3 - 1 / (3 * n)) * best + 1e-9


def test_lpt_ties_break_by_name() -> None:
    assert sharding.lpt({"b": 1.0, "a": 1.0, "c": 2.0}, 2) == {"c": 1, "a": 2, "b": 2}


# --- the tiny CPU matrix: a lossless-only family, gate cases, an empty shard --------------------------

def test_tiny_cpu_units() -> None:
    m = load_matrix(TINY)
    cells = m.cells(["coding", "math"])
    plan = sharding.plan(m, cells, {}, 3)
    # The bf16 diagnostic family has no performance cells: one unit, only its lossless and security tests.
    assert sorted(u.id for u in plan.units) == ["baseline-bf16", "baseline:coding", "baseline:math"]
    assert sharding.families(m, cells)["self4"] == "baseline"
    assert all(plan.units_of(k) for k in (1, 2, 3))
    two = sharding.plan(m, m.cells(["coding"]), {}, 3)
    shard = sharding.Shard(3, two, {})
    assert not two.units_of(3) and "shard 3/3 is empty" in (shard.why_empty() or "")
    assert sharding.Shard(1, two, {}, offered=0).why_empty() is None   # nothing selected anyway: not the shard's doing


def test_tests_in_no_unit_run_in_shard_one() -> None:
    m = load_matrix(TINY)
    plan = sharding.plan(m, m.cells(["coding"]), {}, 2)
    assert [sharding.Shard(k, plan, {}).keeps(None) for k in (1, 2)] == [True, False]
    assert [sharding.Shard(k, plan, {}).keeps("test_x[1]") for k in (1, 2)] == [True, False]


# --- through pytest ----------------------------------------------------------------------------------

def _pytest(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPECGUARD_MATRIX", "PYTEST_ADDOPTS")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=",
                           "--results-dir", str(tmp / "results"), *args],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _ids(out: str) -> list[str]:
    return [line.split("::", 1)[1] for line in out.splitlines() if "::" in line and " " not in line]


def test_collected_shards_partition_the_collection(tmp_path: Path) -> None:
    files = [f"tests/test_{name}.py" for name in ("throughput", "speedup", "aggregates", "lossless", "security")]
    args = ("--collect-only", "-q", "-m", "gpu or lossless", "--matrix", str(GEMMA), "--baseline-profile",
            "h100-80gb", *files)
    whole = _pytest(tmp_path, *args)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    parts = []
    for k in (1, 2, 3):
        done = _pytest(tmp_path, *args, "--shard", f"{k}/3")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"specguard: shard {k}/3: " in done.stdout
        parts.append(_ids(done.stdout))
    assert sorted(i for part in parts for i in part) == sorted(_ids(whole.stdout))
    assert not (tmp_path / "results" / "cells.jsonl").exists()   # --collect-only writes no shard record


def test_an_empty_shard_exits_zero_and_says_why(tmp_path: Path) -> None:
    """No test of it runs, so no server starts (vLLM need not even be installed)."""
    done = _pytest(tmp_path, "-q", "-m", "cpu or lossless", "--matrix", str(TINY), "--categories", "coding",
                   "--shard", "3/3", "tests/test_throughput.py", "tests/test_lossless.py")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "shard 3/3 is empty: the matrix splits into 2 unit(s)" in out and "exit status 0" in out
    from specguard.store.results import read_records
    kinds = [r["kind"] for r in read_records(tmp_path / "results" / "cells.jsonl")]
    assert kinds == ["shard", "shard_end"]


def test_a_bad_shard_value_is_a_usage_error(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "--collect-only", "-q", "--shard", "4/3", "tests/test_throughput.py")
    assert done.returncode == 4 and "--shard: expected 1 <= K <= N, got '4/3'" in done.stderr, done.stderr
