"""The pytest plugin: options, cell parametrization, server-grouped ordering, fixtures, summary.

Loaded by the top-level ``conftest.py``. Typical runs::

    pytest -m cpu --benchmark-json out.json                 # the embedded tiny CPU matrix
    pytest -m gpu --matrix fixtures/matrices/gemma4-h100.toml --benchmark-json out.json
    pytest -m lossless                                      # greedy equivalence only
    pytest -m gpu --shard 2/8 --results-dir s2 --benchmark-json s2/benchmark.json   # one CI runner's part
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from specguard.plugin import shard as sharding
from specguard.plugin.distributed import make_scheduler, param_id, worker_slot
from specguard.store.benchjson import write_merged
from specguard.config.errors import SpecguardError
from specguard.judge.gate import GateCase, group_server
from specguard.lossless.compare import lossless_cases, lossless_pairs
from specguard.config.matrix import Cell, ServerConfig
from specguard.plugin.progress import Progress, last_run_seconds, plan_line
from specguard.store.results import read_records
from specguard.measure.runner import RoundSample
from specguard.serving.secret import secret
from specguard.serving.server import vllm_distribution
from specguard.plugin.session import Options, SpecguardSession, cuda_vllm_available, default_matrix

SESSION_KEY = pytest.StashKey[SpecguardSession]()
ERROR_KEY = pytest.StashKey[str]()
SHARD_KEY = pytest.StashKey[sharding.Shard]()
# Within one server's cells: throughput (measures) before speedup and acceptance (judge), lossless last.
# A two-server generated-prompt test comes first in its speculative server's group, while the plain
# server (the group before) is still live.
_KIND_ORDER = {"generated": -1, "throughput": 0, "speedup": 1, "acceptance": 2, "aggregate": 2.5, "gate": 2.7,
               "lossless": 3, "security": 4}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("specguard", "specguard: speculative-decoding regression suite")
    group.addoption("--matrix", metavar="PATH", type=Path, default=None,
                    help="Matrix TOML of servers and workloads. Default: tiny-gpu.toml with a CUDA vLLM "
                         "and a GPU, else the embedded fixtures/matrices/tiny-cpu.toml.")
    group.addoption("--vllm-url", metavar="[NAME=]URL", action="append", default=[],
                    help="Measure already-running servers instead of starting them: NAME=URL for the matrix's "
                         "server NAME (repeat per server), or one URL for every server (then speedup and "
                         "lossless are skipped: a server would be compared with itself). Default: none")
    group.addoption("--api-key", metavar="KEY", default=os.environ.get("SPECGUARD_API_KEY"),
                    help="API key for the servers (default: $SPECGUARD_API_KEY, else a fresh random key "
                         "per session for the servers the suite starts).")
    group.addoption("--baseline-dir", metavar="DIR", type=Path, default=None,
                    help="Folder of stored baselines. Default: baselines/ in the suite.")
    group.addoption("--baseline-profile", metavar="NAME", default=None,
                    help="Hardware profile whose baselines to use (e.g. h100-80gb). Default: auto-detected.")
    group.addoption("--update-baselines", action="store_true", default=False,
                    help="Write this run's figures into the profile's baseline file (atomically). "
                         "Default: %(default)r")
    group.addoption("--results-dir", metavar="DIR", type=Path, default=Path("specguard-results"),
                    help="Where per-cell results (JSON lines), server logs and reports go. Default: %(default)s")
    group.addoption("--categories", metavar="LIST", type=_category_list, default=None,
                    help="Comma-separated categories to run, a subset of the matrix's. Default: all of them.")
    group.addoption("--concurrency", metavar="LIST", type=_concurrency_list, default=None,
                    help="Comma-separated concurrencies of the performance cells to run, a subset of the "
                         "matrix's (lossless tests keep all of them). Default: all of them.")
    group.addoption("--rounds", metavar="N", type=_positive_int, default=None,
                    help="Rounds per cell, overriding the matrix. Default: the matrix's `rounds`.")
    group.addoption("--shard", metavar="K/N", type=_shard_spec, default=None,
                    help="Run shard K of N (one CI runner's part): families x category groups, balanced by "
                         "the results folder's recorded durations (else the baseline's tok/s, else cells x "
                         "max_tokens); see specguard/plugin/shard.py. Default: the whole selection.")


def _category_list(text: str) -> list[str]:
    items = [c.strip() for c in text.split(",") if c.strip()]
    if not items:
        raise pytest.UsageError(f"--categories: could not parse {text!r}; expected e.g. 'coding,math'")
    return items


def _concurrency_list(text: str) -> list[int]:
    try:
        items = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        items = []
    if not items or min(items) < 1:
        raise pytest.UsageError(f"--concurrency: could not parse {text!r}; expected e.g. '1' or '1,4'")
    return items


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise pytest.UsageError(f"--rounds: could not parse {text!r}; expected a positive integer") from None
    if value < 1:
        raise pytest.UsageError(f"--rounds: expected a positive integer, got {value}")
    return value


def _shard_spec(text: str) -> tuple[int, int]:
    try:
        return sharding.parse_shard(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--shard: {exc}") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): keep tests of one server family on one worker")
    config.addinivalue_line("markers", "specguard_cells(kind): parametrize `cell` with 'all' or 'speculative' cells")
    suite = Path(__file__).resolve().parents[2]
    bench_json = config.getoption("benchmark_json", None)
    options = Options(
        matrix=config.getoption("matrix") or default_matrix(),
        baseline_dir=config.getoption("baseline_dir") or suite / "baselines",
        results_dir=config.getoption("results_dir"),
        profile=config.getoption("baseline_profile"),
        update_baselines=config.getoption("update_baselines"),
        vllm_urls=tuple(config.getoption("vllm_url") or ()),
        api_key=secret(config.getoption("api_key")),
        rounds=config.getoption("rounds"),
        categories=config.getoption("categories"),
        concurrency=config.getoption("concurrency"),
        benchmark_json=_benchmark_json_path(bench_json),
        run_id=_run_id(config),
        worker=worker_slot(getattr(config, "workerinput", None)),
    )
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "specguard-xdist")
    try:
        config.stash[SESSION_KEY] = SpecguardSession.create(options)
        if config.getoption("shard") is not None:
            # Planned before any test runs, from the records there are now (every xdist worker too).
            config.stash[SHARD_KEY] = _shard(config.stash[SESSION_KEY], *config.getoption("shard"))
    except SpecguardError as exc:
        raise pytest.UsageError(f"specguard: {exc}") from None


def _benchmark_json_path(option: Any) -> Path | None:
    """The --benchmark-json file: pytest-benchmark 5.x gives a path (whose ``.name`` is only the
    file's name: taking it wrote the xdist controller's file, and lossless.json, into the current
    folder), older releases an open file (whose ``.name`` is its path)."""
    if option is None:
        return None
    return Path(option if isinstance(option, (str, os.PathLike)) else option.name)


def _shard(s: SpecguardSession, index: int, count: int) -> sharding.Shard:
    durations = sharding.recorded_durations(read_records(s.results_path))
    stored = sharding.stored_throughputs(s.matrix, s.cells(), s.baseline, s.stored_aggregates)
    plan = sharding.plan(s.matrix, s.cells(), durations, count, stored)
    category = {c.id: c.category for c in s.cells()}
    units = {pid: plan.unit_for(group, category.get(pid)).id for pid, group in _server_groups(s).items()}
    return sharding.Shard(index, plan, units)


def _run_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    if workerinput and "specguard_run" in workerinput:
        return str(workerinput["specguard_run"])
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


class _XdistHooks:
    """Registered only when pytest-xdist is present (its hooks are unknown otherwise)."""

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["specguard_run"] = session_of(node.config).options.run_id

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getoption("dist") != "loadgroup":
            return None
        return make_scheduler(config, log, _server_groups(session_of(config)))


def _family(s: SpecguardSession, server: Any) -> str:
    """The scheduling group of a server: its plain server, so that a speculative server's speedup
    and lossless comparisons are measured on the same worker (and GPU) as the figures they divide."""
    base = s.matrix.baseline_of(server)
    return (base or server).name


def _server_groups(s: SpecguardSession) -> dict[str, str]:
    """Parameter id → scheduling group, for every parametrized test of the suite."""
    groups = {c.id: _family(s, c.server) for c in s.cells()}
    groups.update({c.id: _family(s, c.server) for c in lossless_cases(s.matrix)})
    groups.update({f"{s.matrix.id_prefix}-{p[1].name}-generated": _family(s, p[1]) for p in lossless_pairs(s.matrix)})
    groups.update({f"{s.matrix.id_prefix}-{c.name}": _family(s, c) for c in s.matrix.server_order()})
    groups.update({c.id: _family(s, c.server) for c in s.aggregate_cases()})
    groups.update({g.id: _family(s, s.matrix.server(group_server(g, s.matrix))) for g in s.gate_cases()})
    return groups


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no" \
        and bool(getattr(config.option, "numprocesses", None))


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Load the prompts before the first test when any server test will run, so a bad or
    unreachable source stops the run with one usage error instead of failing every cell."""
    s = session.config.stash.get(SESSION_KEY, None)
    if s is None or session.config.option.collectonly or _skip_reason(s):
        return
    needs = ("cell", "lossless_case", "lossless_pair", "gate_case")
    if any(name in item.fixturenames for item in session.items for name in needs):
        try:
            _ = s.prompts
        except SpecguardError as exc:
            raise pytest.UsageError(f"specguard: {exc}") from None


def session_of(config: pytest.Config) -> SpecguardSession:
    return config.stash[SESSION_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    s = session_of(metafunc.config)
    if "cell" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("specguard_cells")
        kind = marker.args[0] if marker else "all"
        cells = [c for c in s.cells() if kind == "all" or c.server.is_speculative]
        metafunc.parametrize("cell", [_param(c, c.id, _family(s, c.server), s.matrix.marker) for c in cells])
    # Lossless tests carry only the `lossless` marker: `-m cpu` / `-m gpu` select performance cells.
    if "lossless_case" in metafunc.fixturenames:
        cases = lossless_cases(s.matrix)
        metafunc.parametrize("lossless_case", [_param(c, c.id, _family(s, c.server), None) for c in cases])
    if "aggregate_case" in metafunc.fixturenames:
        aggs = s.aggregate_cases()
        metafunc.parametrize("aggregate_case", [_param(a, a.id, _family(s, a.server), s.matrix.marker) for a in aggs])
    if "server_config" in metafunc.fixturenames:
        # Only servers with performance cells carry the matrix's marker: `-m cpu` must not start a
        # lossless-only server just to check its sockets (the full test command checks them all).
        metafunc.parametrize("server_config", [_param(c, f"{s.matrix.id_prefix}-{c.name}", _family(s, c),
                                                      s.matrix.marker if c.perf else None)
                                               for c in s.matrix.server_order()])
    if "gate_case" in metafunc.fixturenames:
        cases = s.gate_cases()
        metafunc.parametrize("gate_case", [_param(g, g.id, _family(s, s.matrix.server(group_server(g, s.matrix))), None)
                                           for g in cases])
    if "lossless_pair" in metafunc.fixturenames:
        pairs = lossless_pairs(s.matrix)
        metafunc.parametrize("lossless_pair", [_param(p, f"{s.matrix.id_prefix}-{p[1].name}-generated",
                                                      _family(s, p[1]), None) for p in pairs])


def _param(value: Any, id_: str, server: str, marker: str | None) -> Any:
    marks = [pytest.mark.xdist_group(server)] + ([getattr(pytest.mark, marker)] if marker else [])
    return pytest.param(value, id=id_, marks=marks)


def _order_key(s: SpecguardSession, item: pytest.Item) -> tuple[Any, ...]:
    params = getattr(getattr(item, "callspec", None), "params", {})
    # An empty parametrization (e.g. a matrix without generated-prompt pairs) leaves pytest's
    # NOTSET placeholder, not a value of ours: such an item only reports its skip.
    params = {k: v for k, v in params.items()
              if isinstance(v, (Cell, GateCase, ServerConfig, tuple)) or hasattr(v, "server")}
    after: str | None = None   # another server whose tests this one must follow
    if "cell" in params:
        value = params["cell"]
        kind, server = item.module.__name__.rsplit("test_", 1)[-1], value.server.name
    elif "aggregate_case" in params:
        value, kind = params["aggregate_case"], "aggregate"
        server = value.server.name
        # A speculative aggregate's speedup divides by its plain server's cells: it goes after
        # both servers' cells, wherever the pairing puts them.
        plain = s.matrix.baseline_of(value.server)
        after = plain.name if plain is not None else None
    elif "lossless_case" in params:
        value, kind = params["lossless_case"], "lossless"
        server = value.server.name
    elif "lossless_pair" in params:
        value, kind = params["lossless_pair"], "generated"
        server = value[1].name
    elif "gate_case" in params:
        value, kind = params["gate_case"], "gate"
        server = group_server(value, s.matrix)
    elif "server_config" in params:
        value, kind = params["server_config"], "security"
        server = value.name
    elif "vllm_servers" in item.fixturenames:
        # A check on the session's live servers that is no cell of the matrix (the sharded and the
        # xdist runs): after every test that needs no server, before the cells, so the servers it
        # asks for are the first ones started and stay live for the cells that follow.
        return (-0.5,)
    else:
        return (-1,)   # unit tests and the reliability cases first: they need none of the session's servers
    servers = s.matrix.server_order()
    order = [srv.name for srv in servers]

    def position(name: str) -> float:
        if s.matrix.workload.pairing == "interleaved":
            # A plain server's own tests go after its speculative servers' tests: its cells reuse
            # the plain rounds that those cells' pairs measured, and the family's first test then
            # asks for the pair (which a CPU pool launches together).
            config = s.matrix.server(name)
            family = [i for i, srv in enumerate(servers) if s.matrix.baseline_of(srv) == config]
            if family:
                return max(family) + 0.5
        return order.index(name)

    where = position(server) if after is None else max(position(server), position(after))
    return (where, _KIND_ORDER.get(kind, 9), getattr(value, "concurrency", 0), getattr(value, "category", ""))


@pytest.hookimpl(trylast=True)   # after -m/-k: a shard takes its part of what they selected
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group every test of one server config together, in start order, so each starts once; with
    --shard, deselect the tests of the other shards' units."""
    s = session_of(config)
    items.sort(key=lambda item: _order_key(s, item))   # stable: collection order breaks ties
    shard = config.stash.get(SHARD_KEY, None)
    if shard is not None:
        kept, drop = [], []
        for item in items:
            (kept if shard.keeps(param_id(item.nodeid)) else drop).append(item)
        shard.offered, shard.deselected = len(items), len(drop)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = kept

    reason = _skip_reason(s)
    if reason:
        for item in items:
            if any(name in item.fixturenames
                   for name in ("cell", "aggregate_case", "lossless_case", "lossless_pair", "gate_case")):
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_collection_finish(session: pytest.Session) -> None:
    """After -k/-m deselection: the plain cells that selected speculative cells divide by."""
    s = session.config.stash.get(SESSION_KEY, None)
    if s is None:
        return
    selected = {item.callspec.params["cell"] for item in session.items
                if hasattr(item, "callspec") and isinstance(item.callspec.params.get("cell"), Cell)}
    needed = {s.baseline_cell(c) for c in selected} - {None} - selected
    s.needed_plain = sorted(needed, key=lambda c: (c.concurrency, c.category))
    shard = session.config.stash.get(SHARD_KEY, None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if shard is not None and reporter is not None and not hasattr(session.config, "workerinput"):
        reporter.write_line(f"specguard: {shard.plan.describe(shard.index)}")
    if selected and not hasattr(session.config, "workerinput"):
        _announce(session.config, s, selected)


def pytest_sessionstart(session: pytest.Session) -> None:
    """With --shard, a record of what this shard runs, for ``python -m specguard merge``."""
    s, shard = session.config.stash.get(SESSION_KEY, None), session.config.stash.get(SHARD_KEY, None)
    if s is None or shard is None or hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return
    s.record("shard", shard.start_record(s.matrix, s.environment, s.options.update_baselines))


def _announce(config: pytest.Config, s: SpecguardSession, selected: set[Cell]) -> None:
    """The run's size before it starts, and a progress bar over its cells (on a terminal)."""
    servers = {c.server.name for c in selected} | {b.server.name for b in s.needed_plain}
    try:
        last = last_run_seconds(read_records(s.results_path), s.options.run_id)
    except SpecguardError:
        last = None
    line = plan_line(len(selected), sum(c.server.is_speculative for c in selected), len(servers), last)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    if not s.distributed:
        s.progress = Progress(len(selected))


def _skip_reason(s: SpecguardSession) -> str | None:
    if s.options.vllm_urls:
        return None
    dist = vllm_distribution()
    if s.matrix.marker == "gpu" and not cuda_vllm_available():
        have = f"{dist[0]} {dist[1]}" if dist else "no vLLM"
        return f"matrix {s.matrix.name!r} needs a CUDA build of vLLM and a GPU (found: {have})"
    if s.matrix.marker == "cpu" and dist is None:
        return f"matrix {s.matrix.name!r} needs vLLM (pip install 'specguard[cpu]')"
    return None


@pytest.fixture(scope="session")
def specguard(request: pytest.FixtureRequest) -> SpecguardSession:
    """The session object: matrix, prompts, baselines, and the session-scoped server pool.

    Example::

        def test_x(specguard, cell):
            server = specguard.pool.get(cell.server)
    """
    return session_of(request.config)


@pytest.fixture(scope="session")
def vllm_servers(specguard: SpecguardSession) -> Any:
    """The session-scoped vLLM server pool: one live server, started once per config and shared by
    every perf and lossless test of that config; the last one is stopped at session end."""
    yield specguard.pool
    specguard.pool.stop()


@pytest.fixture
def measured(cell: Cell, specguard: SpecguardSession, vllm_servers: Any, request: pytest.FixtureRequest) -> Any:
    """The cell's measurement: the first test of a cell measures it under pytest-benchmark
    (one round, or one pair of rounds, per benchmark round), later tests of the same cell reuse it
    (and do not ask for the benchmark fixture, which would warn that it went unused)."""
    first = cell.id not in specguard.measurements
    benchmark = request.getfixturevalue("benchmark") if first else None

    def run_rounds(one_round: Any, n: int) -> list[RoundSample]:
        samples: list[RoundSample] = []
        try:
            benchmark.pedantic(lambda: samples.append(one_round()), rounds=n, iterations=1, warmup_rounds=0)
        except BaseException:
            _forget_unfinished(request.config, benchmark)
            raise
        return samples

    m = specguard.measure(cell, run_rounds if first else _no_rounds)
    if benchmark is not None:
        benchmark.extra_info.update(specguard.cell_info(m))
    return m


def _forget_unfinished(config: pytest.Config, benchmark: Any) -> None:
    """An unfinished cell (a dead server, Ctrl-C) is no result: its pytest-benchmark entry goes. Left
    in, an entry with no round made pytest-benchmark's --benchmark-json writer fail at the end of
    the session (``min()`` of no data), losing the finished cells' file and pytest's summary."""
    session = getattr(config, "_benchmarksession", None)
    stats = getattr(benchmark, "stats", None)
    if session is not None and stats is not None and stats in session.benchmarks:
        session.benchmarks.remove(stats)


def _no_rounds(one_round: Any, n: int) -> list[RoundSample]:  # pragma: no cover - never measures
    raise AssertionError("cell already measured")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = session.config.stash.get(SESSION_KEY, None)
    if s is None:
        return
    if s.progress is not None:
        s.progress.close()
    s.pool.stop()
    shard = session.config.stash.get(SHARD_KEY, None)
    if shard is not None and not hasattr(session.config, "workerinput"):
        # pytest exits 5 when nothing is selected; a shard left without tests by the split is not an error.
        why = shard.why_empty() if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED else None
        if why is not None:
            session.exitstatus = pytest.ExitCode.OK
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"specguard: {why}; exit status 0")
        if not session.config.option.collectonly:
            s.record("shard_end", shard.end_record(session.exitstatus, session.testsfailed, why))
    if s.options.update_baselines and not hasattr(session.config, "workerinput"):
        path = s.update_baselines()
        if path is not None:
            session.config.stash[ERROR_KEY] = f"baselines written to {path}"


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Under xdist, pytest-benchmark is off: the controller writes --benchmark-json from the
    workers' merged records (after pytest-benchmark wrote its empty file)."""
    s = config.stash.get(SESSION_KEY, None)
    if s is None or not _is_xdist_controller(config) or s.options.benchmark_json is None:
        return
    write_merged(s.options.benchmark_json, read_records(s.results_path), s.options.run_id)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The run's table, from the records every worker appended (so it is complete under xdist too)."""
    s = config.stash.get(SESSION_KEY, None)
    if s is None:
        return
    records = [r for r in read_records(s.results_path) if r.get("run") == s.options.run_id]
    starts = [r for r in records if r["kind"] == "server"]
    cells = [r for r in records if r["kind"] == "cell"]
    if not starts and not cells:
        return
    tr = terminalreporter
    tr.section("specguard")
    tr.write_line(f"matrix {s.matrix.name} ({s.matrix.path}), profile {s.profile}, device {s.device}, "
                  f"vLLM {s.environment.get('vllm_version')}")
    tr.write_line(f"vLLM servers started: {sum(st['ok'] for st in starts)}")
    for st in starts:
        mem = st.get("memory_bytes")
        tr.write_line(f"  {st['name']}: " + (f"{st['startup_s']:.1f} s" if st.get("startup_s") is not None else "-")
                      + ("" if st["ok"] else f" FAILED: {st.get('error')}")
                      + ("" if mem is None else f", {mem / 2**30:.2f} GiB resident")
                      + (f" (worker {st['worker']})" if s.distributed or _is_xdist_controller(config) else ""))
    if cells:
        tr.write_line(f"{'cell':<40} {'tok/s':>8} {'speedup':>18} {'accept len':>11} {'rounds':>6}  verdict")
        for r in cells:
            sp, ci, acc = r.get("speedup"), r.get("speedup_ci"), r.get("acceptance_length")
            sp_text = "-" if sp is None else f"{sp:.2f} [{ci[0]:.2f},{ci[1]:.2f}]"
            tr.write_line(f"{r['cell']:<40} {r['output_throughput']:>8.1f} {sp_text:>18} "
                          f"{'-' if acc is None else f'{acc:.2f}':>11} {r['rounds']:>6}  "
                          f"{_verdict_text(r)}")
            for w in r.get("warnings", []):
                tr.write_line(f"  warning: {w}")
    if cells:
        tr.write_line(judged_line(s, cells))
    for r in records:
        if r["kind"] == "lossless":
            tr.write_line(f"lossless {r['case']}: {r['compared']} prompts, {r['identical']} identical, "
                          f"{r['near_ties']} near-ties, {r['real_divergences']} real divergences ({r['mode']})")
    tr.write_line(f"per-cell results: {s.results_path}")
    note = config.stash.get(ERROR_KEY, None)
    if note:
        tr.write_line(note)


def _verdict_text(r: dict[str, Any]) -> str:
    against = r.get("judged_against") or []
    advisory = r.get("advisory") or {}
    verdict = r.get("verdict") or ("not judged" if advisory else "no baseline")
    parts = [verdict] + [f"vs {', '.join(against)}"] * bool(against)
    if advisory:
        parts.append("(advisory: " + ", ".join(f"{k} {v}" for k, v in sorted(advisory.items())) + ")")
    return " ".join(parts)


def judged_line(s: SpecguardSession, cells: list[dict[str, Any]]) -> str:
    """How many cells were judged, against which profile, how many comparisons were advisory, and
    what --update-baselines would pin."""
    own = sum(s.profile in (r.get("judged_against") or []) for r in cells)
    ref = s.matrix.reference_profile
    by_ref = sum(ref is not None and ref != s.profile and ref in (r.get("judged_against") or []) for r in cells)
    floor_only = sum(bool(r.get("verdicts")) and not r.get("judged_against") for r in cells)
    none = sum(not r.get("verdicts") for r in cells)
    advisory = sum(len(r.get("advisory") or {}) for r in cells)
    spec = [r for r in cells if r.get("method") not in (None, "none")]
    spec_judged = sum(bool(r.get("verdicts")) for r in spec)
    path = s.options.baseline_dir / s.profile / f"{s.matrix.name}.json"
    parts = [f"judged {len(cells) - none} of {len(cells)} cells ({spec_judged} of {len(spec)} speculative): "
             f"{own} against {s.profile} (this machine)"]
    if ref is not None and ref != s.profile:
        parts.append(f"{by_ref} against the reference {ref} (portable figures only)")
    parts.append(f"{floor_only} by min_speedup alone")
    parts.append(f"{advisory} advisory comparisons")
    pinned = "" if s.options.update_baselines else "would pin"
    return ("; ".join(parts) + f". --update-baselines {pinned or 'pinned'} {len(cells)} cells into {path}"
            + ("" if s.options.update_baselines else f" ({sum(not r.get('judged_against') or s.profile not in r['judged_against'] for r in cells)} not yet there)"))
