"""The pytest plugin: options, cell parametrization, server-grouped ordering, fixtures, summary.

Loaded by the top-level ``conftest.py``. Typical runs::

    pytest -m cpu --benchmark-json out.json                 # the embedded tiny CPU matrix
    pytest -m gpu --matrix fixtures/matrices/gemma4-h100.toml --benchmark-json out.json
    pytest -m lossless                                      # greedy equivalence only
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from specguard.errors import SpecguardError
from specguard.matrix import Cell
from specguard.runner import RoundSample, overall_verdict
from specguard.server import vllm_distribution
from specguard.session import Options, SpecguardSession, cuda_vllm_available, default_matrix

SESSION_KEY = pytest.StashKey[SpecguardSession]()
ERROR_KEY = pytest.StashKey[str]()
# Within one server's cells: throughput (measures) before speedup and acceptance (judge), lossless last.
_KIND_ORDER = {"throughput": 0, "speedup": 1, "acceptance": 2, "lossless": 3}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("specguard", "specguard: speculative-decoding regression suite")
    group.addoption("--matrix", metavar="PATH", type=Path, default=None,
                    help="Matrix TOML of servers and workloads. Default: tiny-gpu.toml with a CUDA vLLM "
                         "and a GPU, else the embedded fixtures/matrices/tiny-cpu.toml.")
    group.addoption("--vllm-url", metavar="URL", default=None,
                    help="Measure this already-running server instead of starting one. Default: %(default)r")
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
    group.addoption("--rounds", metavar="N", type=_positive_int, default=None,
                    help="Rounds per cell, overriding the matrix. Default: the matrix's `rounds`.")


def _category_list(text: str) -> list[str]:
    items = [c.strip() for c in text.split(",") if c.strip()]
    if not items:
        raise pytest.UsageError(f"--categories: could not parse {text!r}; expected e.g. 'coding,math'")
    return items


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise pytest.UsageError(f"--rounds: could not parse {text!r}; expected a positive integer") from None
    if value < 1:
        raise pytest.UsageError(f"--rounds: expected a positive integer, got {value}")
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): keep tests of one server config on one worker")
    config.addinivalue_line("markers", "specguard_cells(kind): parametrize `cell` with 'all' or 'speculative' cells")
    suite = Path(__file__).resolve().parent.parent
    bench_json = config.getoption("benchmark_json", None)
    options = Options(
        matrix=config.getoption("matrix") or default_matrix(),
        baseline_dir=config.getoption("baseline_dir") or suite / "baselines",
        results_dir=config.getoption("results_dir"),
        profile=config.getoption("baseline_profile"),
        update_baselines=config.getoption("update_baselines"),
        vllm_url=config.getoption("vllm_url"),
        api_key=config.getoption("api_key"),
        rounds=config.getoption("rounds"),
        categories=config.getoption("categories"),
        benchmark_json=Path(bench_json.name) if bench_json is not None else None,
    )
    try:
        config.stash[SESSION_KEY] = SpecguardSession.create(options)
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
        metafunc.parametrize("cell", [_param(s, c, c.id, c.server.name) for c in cells])
    if "lossless_case" in metafunc.fixturenames:
        from specguard.lossless import lossless_cases
        cases = lossless_cases(s.matrix)
        metafunc.parametrize("lossless_case", [_param(s, c, c.id, c.server.name) for c in cases])


def _param(s: SpecguardSession, value: Any, id_: str, server: str) -> Any:
    return pytest.param(value, id=id_, marks=[getattr(pytest.mark, s.matrix.marker), pytest.mark.xdist_group(server)])


def _order_key(s: SpecguardSession, item: pytest.Item) -> tuple[Any, ...]:
    params = getattr(getattr(item, "callspec", None), "params", {})
    value = params.get("cell") or params.get("lossless_case")
    if value is None:
        return (-1,)   # unit tests first: they need no server
    order = [srv.name for srv in s.matrix.server_order()]
    kind = "lossless" if "lossless_case" in params else item.module.__name__.rsplit("test_", 1)[-1]
    return (order.index(value.server.name), _KIND_ORDER.get(kind, 9), getattr(value, "concurrency", 0),
            getattr(value, "category", ""))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group every test of one server config together, in start order, so each starts once."""
    s = session_of(config)
    items.sort(key=lambda item: _order_key(s, item))   # stable: collection order breaks ties
    reason = _skip_reason(s)
    if reason:
        for item in items:
            if item.get_closest_marker(s.matrix.marker) and ("cell" in item.fixturenames
                                                           or "lossless_case" in item.fixturenames):
                item.add_marker(pytest.mark.skip(reason=reason))


def _skip_reason(s: SpecguardSession) -> str | None:
    if s.options.vllm_url:
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
def measured(cell: Cell, specguard: SpecguardSession, vllm_servers: Any, benchmark: Any) -> Any:
    """The cell's measurement: the first test of a cell measures it under pytest-benchmark
    (one round per benchmark round), later tests of the same cell reuse it."""
    first = cell.id not in specguard.measurements

    def run_rounds(one_round: Any, n: int) -> list[RoundSample]:
        samples: list[RoundSample] = []
        benchmark.pedantic(lambda: samples.append(one_round()), rounds=n, iterations=1, warmup_rounds=0)
        return samples

    m = specguard.measure(cell, run_rounds if first else _no_rounds)
    if first:
        benchmark.extra_info.update(m.extra_info(specguard.environment))
    return m


def _no_rounds(one_round: Any, n: int) -> list[RoundSample]:  # pragma: no cover - never measures
    raise AssertionError("cell already measured")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = session.config.stash.get(SESSION_KEY, None)
    if s is None:
        return
    s.pool.stop()
    if s.options.update_baselines and not hasattr(session.config, "workerinput"):
        path = s.update_baselines()
        if path is not None:
            session.config.stash[ERROR_KEY] = f"baselines written to {path}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    s = config.stash.get(SESSION_KEY, None)
    if s is None or (not s.measurements and not s.pool.starts):
        return
    tr = terminalreporter
    tr.section("specguard")
    tr.write_line(f"matrix {s.matrix.name} ({s.matrix.path}), profile {s.profile}, device {s.device}, "
                  f"vLLM {s.environment.get('vllm_version')}")
    tr.write_line(f"vLLM servers started: {s.pool.started}" + "".join(
        f"\n  {st.name}: {'%.1f s' % st.startup_s if st.startup_s is not None else '-'}"
        f"{'' if st.ok else ' FAILED: ' + (st.error or '')}"
        f"{'' if st.memory_bytes is None else ', %.2f GiB resident' % (st.memory_bytes / 2**30)}"
        for st in s.pool.starts))
    if s.measurements:
        tr.write_line(f"{'cell':<40} {'tok/s':>8} {'speedup':>18} {'accept len':>11} {'rounds':>6}  verdict")
        for m in s.measurements.values():
            tput = m.interval("output_throughput")
            sp = m.interval("speedup")
            acc = m.interval("acceptance_length")
            sp_text = "-" if sp is None else f"{sp.estimate:.2f} [{sp.low:.2f},{sp.high:.2f}]"
            verdict = overall_verdict(m.checks.values()).value if m.checks else "no baseline"
            tr.write_line(f"{m.cell.id:<40} {tput.estimate if tput else 0:>8.1f} {sp_text:>18} "
                          f"{'-' if acc is None else f'{acc.estimate:.2f}':>11} {len(m.samples):>6}  {verdict}")
            for w in m.warnings():
                tr.write_line(f"  warning: {w}")
        tr.write_line(f"per-cell results: {s.results_path}")
    note = config.stash.get(ERROR_KEY, None)
    if note:
        tr.write_line(note)
