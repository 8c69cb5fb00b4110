"""Command-line options → one session object; the fixtures read only from it."""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from specguard.judge.aggregate import AggregateCase, StoredAggregate, aggregate_cases, aggregates_from_cells, parse_aggregates
from specguard.store.baselines import (BaselineFile, CellBaseline, baseline_path, detect_devices,
                                 detect_profile, device_description, load_baseline, write_baseline)
from specguard.plugin.distributed import device_env, pair_cores_env
from specguard.config.errors import InputError
from specguard.judge.gate import GateCase, gate_cases
from specguard.measure.load import round_prompts, run_sync
from specguard.config.matrix import Cell, Matrix, ServerConfig, load_matrix
from specguard.serving.pool import ServerPool
from specguard.plugin.progress import Progress
from specguard.config.prompts import Prompt, load_prompts
from specguard.lossless.compare import Greedy, LosslessReport, lossless_prompts
from specguard.lossless.runs import LosslessRuns, Target
from specguard.store.benchjson import LOSSLESS_FILE
from specguard.store.results import append_record, environment, now_iso
from specguard.judge.decision import Sequential
from specguard.judge.rules import Against, choose, deciding, judge_metrics
from specguard.judge.cell import CellMeasurement, cell_baseline
from specguard.measure.runner import Pair, RoundSample, pair_order, run_round
from specguard.serving.secret import secret
from specguard.serving.http import request_json
from specguard.serving.server import vllm_distribution
from specguard.judge.verdict import Verdict

ROOT = Path(__file__).resolve().parents[2]
MATRICES = ROOT / "fixtures" / "matrices"


def default_matrix() -> Path:
    """tiny-gpu on a machine with a CUDA build of vLLM and a GPU; the embedded tiny-cpu otherwise."""
    if os.environ.get("SPECGUARD_MATRIX"):
        return Path(os.environ["SPECGUARD_MATRIX"])
    if cuda_vllm_available():
        return MATRICES / "tiny-gpu.toml"
    return MATRICES / "tiny-cpu.toml"


def cuda_vllm_available() -> bool:
    from specguard.store.baselines import detect_devices
    dist = vllm_distribution()
    return dist is not None and dist[0] == "vllm" and bool(detect_devices())


@dataclass(frozen=True)
class Options:
    """The command line, parsed once (``pytest_configure``); nothing changes it afterwards."""

    matrix: Path
    baseline_dir: Path
    results_dir: Path
    profile: str | None = None
    update_baselines: bool = False
    vllm_urls: tuple[str, ...] = ()            # "URL" (every server) or "NAME=URL", from --vllm-url
    api_key: str | None = None
    rounds: int | None = None
    benchmark_json: Path | None = None
    categories: list[str] | None = None
    concurrency: list[int] | None = None       # performance cells' concurrencies, from --concurrency
    run_id: str = ""                          # the same on every xdist worker of one run
    worker: tuple[int, int] = (0, 1)          # (index, count) under pytest-xdist


@dataclass
class SpecguardSession:
    options: Options
    matrix: Matrix
    categories: list[str]
    loaded_prompts: dict[str, list[Prompt]] | None
    profile: str
    device: str
    api_key: str
    pool: ServerPool
    baseline: BaselineFile | None
    stored_aggregates: dict[str, StoredAggregate]   # the baseline's `aggregates`, by aggregate id
    reference: BaselineFile | None = None           # the matrix's reference_profile file (another machine's)
    environment: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, CellMeasurement] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)   # per-feature session state (lossless refs)
    needed_plain: list[Cell] = field(default_factory=list)  # plain cells the selected cells divide by
    progress: Progress | None = None                         # the terminal's bar, set by the plugin

    @classmethod
    def create(cls, options: Options) -> "SpecguardSession":
        matrix = load_matrix(options.matrix)
        w = matrix.workload
        # With the categories listed in the matrix, prompts load on first use: collecting the
        # cells of a hub-hosted prompt set (e.g. SPEED-Bench) needs no network.
        prompts = None if w.categories else _by_category(
            load_prompts(w.prompts, base_dir=matrix.path.parent, categories=w.categories))
        categories = list(w.categories) if w.categories else list(prompts or {})
        if options.categories is not None:
            unknown = [c for c in options.categories if c not in categories]
            if unknown:
                raise InputError(matrix.path, "workload.categories",
                                 f"--categories names {unknown}, which the matrix does not run (it has {categories})")
            categories = [c for c in categories if c in options.categories]
        if options.concurrency is not None:
            unknown_c = [c for c in options.concurrency if c not in w.concurrency]
            if unknown_c:
                raise InputError(matrix.path, "workload.concurrency",
                                 f"--concurrency names {unknown_c}, which the matrix does not run "
                                 f"(it has {list(w.concurrency)})")
        use_gpu = matrix.marker == "gpu"
        profile = options.profile or detect_profile(use_gpu)
        device = device_description(use_gpu)
        # A fresh key per session unless the user gives one (needed with --vllm-url if that server has one).
        api_key = secret(options.api_key or (None if options.vllm_urls else secrets.token_hex(16)))
        log_dir = options.results_dir / "logs"
        baseline = load_baseline(baseline_path(options.baseline_dir, profile, matrix.name))
        reference = None
        if matrix.reference_profile is not None and matrix.reference_profile != profile:
            ref_path = baseline_path(options.baseline_dir, matrix.reference_profile, matrix.name)
            reference = load_baseline(ref_path)
            if reference is None:
                raise InputError(matrix.path, "reference_profile",
                                 f"names {matrix.reference_profile!r}, but {ref_path} does not exist")
        # Parsed here, so a malformed `aggregates` section is a usage error before any server starts.
        stored_aggregates = ({} if baseline is None else
                             parse_aggregates(baseline.aggregates, baseline.path, matrix.id_prefix))
        index, count = options.worker
        cores = sorted(os.sched_getaffinity(0))
        if count > 1:
            env = {s.name: device_env(index, count, gpus=len(detect_devices()) if use_gpu else 0, cores=cores,
                                      tensor_parallel_size=s.tensor_parallel_size, use_gpu=use_gpu)
                   for s in matrix.servers}
        elif matrix.marker == "cpu" and w.pairing == "interleaved":
            # (a matrix that binds a server itself keeps its binding)
            env = {s.name: pair_cores_env(s.is_speculative, cores) for s in matrix.servers
                   if "VLLM_CPU_OMP_THREADS_BIND" not in dict(s.env)}
        else:
            env = {}
        session = cls(options=options, matrix=matrix, categories=categories, loaded_prompts=prompts,
                      profile=profile, device=device, api_key=api_key or "",
                      pool=ServerPool(log_dir=log_dir, api_key=api_key, external_urls=_urls(options.vllm_urls),
                                      device_env=env, capacity=2 if w.pairing == "interleaved" else 1,
                                      parallel_starts=matrix.marker == "cpu"),
                      baseline=baseline, stored_aggregates=stored_aggregates, reference=reference,
                      environment=environment(device, profile))
        session.pool.on_start = lambda st: session.record("server", asdict(st))
        return session

    @property
    def prompts(self) -> dict[str, list[Prompt]]:
        if self.loaded_prompts is None:
            w = self.matrix.workload
            self.loaded_prompts = _by_category(load_prompts(w.prompts, base_dir=self.matrix.path.parent,
                                                            categories=self.categories))
        return self.loaded_prompts

    @property
    def results_path(self) -> Path:
        return self.options.results_dir / "cells.jsonl"

    @property
    def report_dir(self) -> Path:
        """Where side reports go: next to the benchmark JSON when there is one."""
        if self.options.benchmark_json is not None:
            return self.options.benchmark_json.parent
        return self.options.results_dir

    def cells(self) -> list[Cell]:
        """The performance cells this session runs: the selected categories and concurrencies."""
        cells = self.matrix.cells(self.categories)
        wanted = self.options.concurrency
        return cells if wanted is None else [c for c in cells if c.concurrency in wanted]

    def aggregate_cases(self) -> list[AggregateCase]:
        """The aggregates over this session's cells."""
        return aggregate_cases(self.matrix, self.cells())

    def gate_cases(self) -> list[GateCase]:
        """The gate's checks among this session's cells."""
        return gate_cases(self.matrix, self.cells())

    def rounds(self) -> tuple[int, int]:
        w = self.matrix.workload
        if self.options.rounds is not None:
            return self.options.rounds, max(self.options.rounds, w.max_rounds)
        return w.rounds, w.max_rounds

    def stored(self, cell: Cell) -> CellBaseline | None:
        return None if self.baseline is None else self.baseline.cells.get(cell.id)

    def baseline_cell(self, cell: Cell) -> Cell | None:
        base = self.matrix.baseline_of(cell.server)
        if base is None:
            return None
        return next(c for c in self.matrix.cells(self.categories)
                    if c.server == base and c.concurrency == cell.concurrency and c.category == cell.category)

    def served_model(self, server: Any, config: ServerConfig) -> str:
        if not self.options.vllm_urls:
            return config.name
        models = request_json(f"{server.base_url}/v1/models", api_key=self.api_key or None)
        return str(models["data"][0]["id"])

    def sequential(self) -> Sequential:
        rounds, max_rounds = self.rounds()
        return Sequential(rounds, max_rounds, self.matrix.workload.confidence)

    def paired(self, cell: Cell) -> bool:
        """Whether ``cell`` alternates its rounds with its plain server's (both live)."""
        return (cell.server.is_speculative and self.matrix.workload.pairing == "interleaved"
                and self.baseline_cell(cell) is not None and self.one_url(cell.server) is None)

    def one_url(self, config: ServerConfig) -> str | None:
        """Why ``config`` cannot be compared with its plain server under --vllm-url (one URL for
        both: a server compared with itself), or None when it can."""
        plain = self.matrix.baseline_of(config)
        if not self.pool.external or plain is None:
            return None
        a, b = self.pool.external_url(plain), self.pool.external_url(config)
        if a is None or a != b:
            return None
        return (f"--vllm-url gives one URL ({a}) for {plain.name!r} and {config.name!r}: speedup and lossless "
                f"need one URL per server, e.g. --vllm-url {plain.name}=URL --vllm-url {config.name}=URL")

    def measure(self, cell: Cell, run_rounds: Callable[[Callable[[], Any], int], list[Any]]) -> CellMeasurement:
        """Measure ``cell`` (once per session) with ``run_rounds(one_round, n)`` doing the first look's
        rounds (the plugin passes pytest-benchmark's pedantic runner); later looks add rounds
        (pairs, for a paired cell) until no deciding check is UNKNOWN or the cap is reached."""
        if cell.id not in self.measurements:
            self.measurements[cell.id] = self.measure_fresh(cell, run_rounds)
            self.record("cell", self.cell_info(self.measurements[cell.id]))
            if self.progress is not None:
                self.progress.cell_done()
        return self.measurements[cell.id]

    def measure_fresh(self, cell: Cell, run_rounds: Callable[[Callable[[], Any], int], list[Any]] | None = None,
                      against: Against | None = None, confidence: float | None = None) -> CellMeasurement:
        """A new measurement of ``cell``, judged (against ``against`` when given, else the stored
        baselines) with as many looks as it needs, at ``confidence`` (default the matrix's) over
        all looks; the session's cache is left alone."""
        run_rounds = run_rounds or plain_rounds
        w = self.matrix.workload
        base_cell = self.baseline_cell(cell) if cell.server.is_speculative else None
        if self.paired(cell):
            assert base_cell is not None
            plain_server, server = self.pool.pair(base_cell.server, cell.server)
            m = CellMeasurement(cell, pairing="interleaved")
        else:
            base = None if base_cell is None or self.one_url(cell.server) else self._baseline_throughputs(base_cell)
            server, plain_server = self.pool.get(cell.server), None
            m = CellMeasurement(cell, baseline_throughputs=base,
                                pairing="sequential" if cell.server.is_speculative else None)
            if not cell.server.is_speculative and against is None:
                self._reuse_plain_rounds(m)
        prompts = round_prompts(self.prompts[cell.category], w.requests_per_round(cell.concurrency))
        spec_round = self._round_runner(cell, server, prompts)
        plain_round = None if plain_server is None or base_cell is None else \
            self._round_runner(base_cell, plain_server, prompts)
        for srv, c in ((server, cell), (plain_server, base_cell)):
            if srv is not None and c is not None:
                self.warm(srv, c)

        def one_round() -> Any:
            if plain_round is None:
                sample = spec_round()
                m.samples.append(sample)
                return sample
            first = pair_order(len(m.pairs))
            a = plain_round() if first else spec_round()
            b = spec_round() if first else plain_round()
            pair = Pair(plain=a if first else b, spec=b if first else a, plain_first=first)
            m.pairs.append(pair)
            m.samples.append(pair.spec)
            return pair

        seq = self.sequential() if confidence is None else Sequential(*self.rounds(), confidence)
        m.confidence = seq.look_confidence
        # At least one round of its own, so pytest-benchmark times this cell too.
        run_rounds(one_round, max(1, seq.looks[0] - len(m.samples)))
        while len(m.samples) < seq.looks[0]:   # a disabled benchmark fixture runs the function only once
            one_round()
        self.judge(m, against)
        while any(c.verdict is Verdict.UNKNOWN for c in deciding(m.checks)):
            target = seq.next_look(len(m.samples))
            if target is None:
                break
            while len(m.samples) < target:
                one_round()
            self.judge(m, against)
        return m

    def _reuse_plain_rounds(self, m: CellMeasurement) -> None:
        """A plain cell starts from the plain rounds its speculative cells already interleaved with
        theirs (same server, prompts and concurrency): the pairs measured them, so the cell does not
        measure them again. The plugin orders plain cells after their speculative cells."""
        for other in self.measurements.values():
            if other.pairs and self.baseline_cell(other.cell) == m.cell:
                m.samples.extend(p.plain for p in other.pairs)
                m.reused_from += (other.cell.id,)

    def _round_runner(self, cell: Cell, server: Any, prompts: list[Prompt]) -> Callable[[], RoundSample]:
        w = self.matrix.workload
        model = self.served_model(server, cell.server)

        def run() -> RoundSample:
            return run_round(cell, server, prompts, model=model, max_tokens=w.max_tokens,
                             api_key=self.api_key or None, request_timeout_s=w.request_timeout_s,
                             ignore_eos=w.ignore_eos,
                             on_done=None if self.progress is None else self.progress.requests(cell.id))
        return run

    def warm(self, server: Any, cell: Cell) -> None:
        """Warm ``server`` up: once per start, rounds until two in a row agree within
        ``warmup_rel`` (the first rounds after a start can be far slower: JIT, graph capture);
        then, per cell, one wave at the cell's concurrency."""
        w = self.matrix.workload
        model = self.served_model(server, cell.server)
        key = ("server", id(server), cell.server.name)
        warmed = self.extras.setdefault("warmed", set())

        def wave(c: Cell, count: int, max_tokens: int) -> RoundSample:
            return run_round(c, server, round_prompts(self.prompts[cell.category], count), model=model,
                             max_tokens=max_tokens, api_key=self.api_key or None,
                             request_timeout_s=w.request_timeout_s, ignore_eos=True)

        if key not in warmed and w.warmup_requests:
            warmed.add(key)
            one = Cell(cell.id, cell.server, 1, cell.category)
            tputs: list[float] = []
            while len(tputs) < w.warmup_max_rounds:
                tputs.append(wave(one, 2, w.max_tokens).result.output_throughput)
                if len(tputs) >= 2 and abs(tputs[-1] / tputs[-2] - 1) <= w.warmup_rel:
                    break
            warm = len(tputs) >= 2 and abs(tputs[-1] / tputs[-2] - 1) <= w.warmup_rel
            self.record("warmup", {"server": cell.server.name, "round_throughputs": tputs, "warm": warm})
        if w.warmup_requests:
            wave(cell, max(w.warmup_requests, cell.concurrency), min(16, w.max_tokens))

    def judge(self, m: CellMeasurement, against: Against | None = None) -> None:
        """Judge ``m`` against ``against`` (the gate's checks), else the machine's own stored cell,
        else the reference profile's; and against the server's floor."""
        cell = m.cell
        if against is None:
            against = choose(self.stored(cell), self.profile, self.reference_stored(cell),
                             self.matrix.reference_profile)
        m.checks = judge_metrics(m.interval, m.position_interval, against, self.matrix.tolerances,
                                 cell.server.speedup_floor(cell.concurrency, cell.category)
                                 if cell.server.is_speculative else None)

    def reference_stored(self, cell: Cell) -> CellBaseline | None:
        return None if self.reference is None else self.reference.cells.get(cell.id)

    def cell_info(self, m: CellMeasurement) -> dict[str, Any]:
        """The cell's figures plus its server's start-up time and memory (its cost beside its speedup)."""
        start = next((st for st in reversed(self.pool.starts) if st.name == m.cell.server.name and st.ok), None)
        return {**m.extra_info(self.environment),
                "server_startup_s": start.startup_s if start else None,
                "server_memory_bytes": start.memory_bytes if start else None,
                "kv_cache_tokens": start.kv_cache_tokens if start else None}

    def record(self, kind: str, data: dict[str, Any]) -> None:
        append_record(self.results_path, {"kind": kind, "time": now_iso(), "run": self.options.run_id,
                                          "worker": self.options.worker[0], **data})

    @property
    def distributed(self) -> bool:
        return self.options.worker[1] > 1

    def _baseline_throughputs(self, base_cell: Cell) -> tuple[float, ...]:
        """Sequential design only: the plain server's rounds for the same concurrency and
        category. Normally measured already: the plain server runs first, and under xdist its
        whole family is on this worker. If the plain cells were deselected, every one the selected
        cells need is measured now, in one batch while the plain server is up."""
        if base_cell.id not in self.measurements:
            for cell in [c for c in self.needed_plain if c.server == base_cell.server] or [base_cell]:
                self.measure(cell, plain_rounds)
        return tuple(self.measure(base_cell, plain_rounds).throughputs)

    # --- lossless ------------------------------------------------------------------------------

    @property
    def lossless(self) -> LosslessRuns:
        """The lossless tests' outputs and reports (``specguard.lossless.runs``), made on first use."""
        if "lossless" not in self.extras:
            ls = self.matrix.lossless

            def prompt_set() -> list[Prompt]:
                if ls.prompts is None:
                    pool, cats = self.prompts, self.categories
                else:
                    pool = _by_category(load_prompts(ls.prompts, base_dir=self.matrix.path.parent))
                    cats = list(pool)
                return lossless_prompts(pool, cats, ls.num_prompts)

            self.extras["lossless"] = LosslessRuns(
                ls, prompt_set, api_key=self.api_key or None, timeout_s=self.matrix.workload.request_timeout_s,
                record=self.record, report_path=self.report_dir / LOSSLESS_FILE,
                header={"matrix": self.matrix.name, **self.environment})
        return self.extras["lossless"]

    def greedy(self, configs: list[tuple[ServerConfig, Any]], concurrency: int,
               prompts: list[Prompt] | None = None) -> list[list[Greedy]]:
        """Greedy outputs of each (config, live server or None: the pool's) at ``concurrency``,
        requested at once (see ``LosslessRuns.outputs``)."""
        targets = []
        for config, server in configs:
            server = server or self.pool.get(config)
            targets.append(Target(config.name, server.base_url, self.served_model(server, config)))
        return self.lossless.outputs(targets, concurrency, prompts, run=run_sync)

    def record_lossless(self, report: LosslessReport) -> None:
        self.lossless.add_report(report)

    def update_baselines(self) -> Path | None:
        """Merge this session's measurements into the profile's baseline file (atomically)."""
        if not self.measurements:
            return None
        path = baseline_path(self.options.baseline_dir, self.profile, self.matrix.name)
        bf = load_baseline(path) or BaselineFile(path=path, matrix=self.matrix.name, profile=self.profile)
        bf.created = now_iso()
        bf.environment = {**self.environment, "matrix_file": self.matrix.path.name}
        for cid, m in self.measurements.items():
            bf.cells[cid] = cell_baseline(m)
        # Aggregates are recomputed from the stored rounds, so a partial re-run keeps them whole.
        bf.aggregates = {**bf.aggregates, **aggregates_from_cells(bf.cells, self.matrix)}
        write_baseline(bf)
        return path


def _by_category(prompts: list[Prompt]) -> dict[str, list[Prompt]]:
    out: dict[str, list[Prompt]] = {}
    for p in prompts:
        out.setdefault(p.category, []).append(p)
    return out


def plain_rounds(one_round: Callable[[], RoundSample], n: int) -> list[RoundSample]:
    return [one_round() for _ in range(n)]


def _urls(given: tuple[str, ...]) -> dict[str, str]:
    """``--vllm-url`` values: ``URL`` for every server, or ``NAME=URL`` for one."""
    out: dict[str, str] = {}
    for item in given:
        name, sep, url = item.partition("=")
        if not sep or "://" in name:
            name, url = "*", item
        if not url.startswith(("http://", "https://")):
            raise InputError(None, "--vllm-url", f"expected URL or NAME=URL with an http(s) URL, got {item!r}")
        out[name] = url
    return out
