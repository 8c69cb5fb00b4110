"""The nightly report: Markdown tables and PNG plots from one or more ``--benchmark-json`` files.

    python -m specguard report results/benchmark.json --out results/report --bandwidth cpu=0.02

Writes ``report.md``, ``speedup_by_category.png`` and ``acceptance_by_position.png``; appends the
Markdown (without images) to ``$GITHUB_STEP_SUMMARY`` when that is set.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from specguard.report import plots as plotting
from specguard.store.benchjson import BenchRun, CellResult, load_benchmark
from specguard.report.markdown import num, table, tok, token
from specguard.judge.aggregate import MEAN_OF_CATEGORIES, RATIO_OF_MEANS
from specguard.report.roofline import bandwidth_for, model_folder, parse_bandwidth, roofline_tok_s, weight_bytes

# Categories users contrast: drafts pay on structured text, less on open-ended prose.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("coding/math/stem", ("coding", "math", "stem")),
    ("writing/roleplay", ("writing", "roleplay")),
)
Key = tuple[str, str, str, int]   # device, model, server, concurrency


def order_categories(categories: Iterable[str]) -> list[str]:
    """coding, math, stem, then writing, roleplay, then the rest alphabetically."""
    present = set(categories)
    grouped = [c for _, members in GROUPS for c in members if c in present]
    return grouped + sorted(present - set(grouped))


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def aggregate(cells: Sequence[CellResult]) -> tuple[float, float | None, float | None]:
    """(mean of category throughputs, ratio of means vs the plain server, mean acceptance length)."""
    tput = _mean([c.output_throughput for c in cells])
    bases = [b for c in cells if (b := c.base_throughput)]
    speedup = tput / _mean(bases) if cells[0].speculative and len(bases) == len(cells) else None
    acc = [c.acceptance_length for c in cells if c.acceptance_length is not None]
    return tput, speedup, (_mean(acc) if acc else None)


def pooled_acceptance(cells: Sequence[CellResult]) -> tuple[float, ...]:
    """Per-position acceptance pooled over cells: weighted by drafts when every cell has them."""
    cells = [c for c in cells if c.per_position]
    if not cells:
        return ()
    weights = [c.drafts or 0.0 for c in cells]
    if not all(w > 0 for w in weights):
        weights = [1.0] * len(cells)
    k = max(len(c.per_position) for c in cells)
    out = []
    for i in range(k):
        pairs = [(c.per_position[i], w) for c, w in zip(cells, weights) if i < len(c.per_position)]
        out.append(sum(r * w for r, w in pairs) / sum(w for _, w in pairs))
    return tuple(out)


# --- formatting ---------------------------------------------------------------------------------

def verdict_text(c: CellResult) -> str:
    if c.verdict is None:
        if c.advisory:   # compared, but nothing decides in this matrix
            return "not judged (advisory: " + ", ".join(f"{m} {v}" for m, v in sorted(c.advisory.items())) + ")"
        return "no baseline"
    which = [m for m, v in sorted(c.verdicts.items()) if v == c.verdict]
    text = c.verdict + (f" ({', '.join(which)})" if which and c.verdict != "OK" else "")
    return f"**{text}**" if c.verdict == "REGRESSED" else text


def server_label(c: CellResult) -> str:
    if not c.speculative:
        return f"{c.server} (plain)"
    return f"{c.server} ({c.method}" + (f", k={c.k})" if c.k else ")")


# --- the report ---------------------------------------------------------------------------------

class Report:
    """Everything one report shows, grouped once; ``markdown()`` renders it."""

    def __init__(self, runs: Sequence[BenchRun], *, bandwidth: dict[str, float] | None = None,
                 title: str = "specguard report") -> None:
        self.runs, self.title, self.bandwidth = list(runs), title, bandwidth or {}
        self.notes: list[str] = []
        seen: dict[str, Path] = {}
        self.groups: dict[Key, dict[str, CellResult]] = {}
        for run in self.runs:
            for c in run.cells:
                if c.cell in seen:
                    self.notes.append(f"cell {c.cell} is in {seen[c.cell]} and {run.path}; "
                                      f"the figures of {run.path} are shown")
                seen[c.cell] = run.path
                self.groups.setdefault((c.device or "-", c.model, c.server, c.concurrency), {})[c.category] = c
        # Model by model, each concurrency's servers together (plain first, as the matrix runs them).
        servers = list(dict.fromkeys(k[2] for k in self.groups))
        models = list(dict.fromkeys(k[:2] for k in self.groups))
        self.groups = dict(sorted(self.groups.items(),
                                  key=lambda kv: (models.index(kv[0][:2]), kv[0][3], servers.index(kv[0][2]))))
        self.cells = [c for g in self.groups.values() for c in g.values()]
        self.categories = order_categories(c.category for c in self.cells)
        self.multi = len({k[:2] for k in self.groups}) > 1   # several devices or models: say which

    def label(self, key: Key) -> str:
        c = next(iter(self.groups[key].values()))
        model = key[1].removeprefix("builtin:").rstrip("/").rsplit("/", 1)[-1]
        prefix = f"{model} on {key[0]}: " if self.multi else ""
        return prefix + server_label(c)

    def rows(self, key: Key) -> list[CellResult]:
        g = self.groups[key]
        return [g[cat] for cat in self.categories if cat in g]

    def roofline(self, device: str, model: str) -> tuple[int | None, Any, float | None]:
        folder = model_folder(model)
        weights = weight_bytes(folder) if folder else None
        profile = next((c.profile for c in self.cells if c.device == device and c.profile), None)
        bw = bandwidth_for(device, profile, self.bandwidth)
        return weights, bw, (roofline_tok_s(bw, weights) if bw and weights else None)

    def markdown(self, *, images: bool = True) -> str:
        out = [f"# {self.title}", "", *self._header()]
        if not self.cells:
            return "\n".join([*out, ("No specguard cells in the input (entries with `extra_info.cell`): the run "
                               "measured nothing; see its log."), ""])
        out += self._regressions() + self._overview(images) + self._tables()
        out += self._acceptance(images) + self._speed_of_light() + self._servers() + self._lossless()
        return "\n".join(out).rstrip() + "\n"

    def _header(self) -> list[str]:
        def vals(attr: str) -> str:
            return ", ".join(dict.fromkeys(v for r in self.runs for v in r.values(attr))) or "-"

        def described(r: BenchRun) -> str:
            skipped = f", {r.skipped} entr{'y' if r.skipped == 1 else 'ies'} without a cell skipped" if r.skipped else ""
            return f"`{r.path}` ({len(r.cells)} cells{skipped})"
        lines = ["- inputs: " + ", ".join(described(r) for r in self.runs),
                 "- run: " + ", ".join(r.datetime or "-" for r in self.runs)
                 + "".join(f", commit {r.commit}" for r in self.runs if r.commit),
                 f"- vLLM {vals('vllm_version')} on {vals('device')} (profile {vals('profile')})", ""]
        return lines + [f"> note: {n}" for n in self.notes] + ([""] if self.notes else [])

    def _regressions(self) -> list[str]:
        out = ["## What regressed", ""]
        bad = [c for c in self.cells if c.verdict in ("REGRESSED", "UNKNOWN")]
        for c in sorted(bad, key=lambda c: (c.verdict != "REGRESSED", c.cell)):
            metrics = ", ".join(f"{m} {v}" for m, v in sorted(c.verdicts.items()) if v != "OK")
            out.append(f"- **{c.verdict}** `{c.cell}`: {metrics}; speedup {num(c.speedup, c.speedup_ci)}, "
                       f"{tok(c.output_throughput)} tok/s, {c.rounds} rounds")
        if not bad:
            judged = sum(c.verdict is not None for c in self.cells)
            out.append(f"Nothing regressed and nothing undecided: {judged} of {len(self.cells)} cells judged "
                       f"against a stored baseline, {len(self.cells) - judged} without one.")
        warnings = [w for c in self.cells for w in c.warnings]
        out += ["", "Warnings:", *[f"- {w}" for w in warnings]] if warnings else []
        return out + [""]

    def _overview(self, images: bool) -> list[str]:
        keys = [k for k in self.groups if next(iter(self.groups[k].values())).speculative]
        if not keys:
            return ["## Speedup by category", "", "No speculative cells in the input.", ""]
        # A group column only where the group is a strict part of the categories shown.
        present = [(n, [c for c in m if c in self.categories]) for n, m in GROUPS]
        present = [(n, m) for n, m in present if 0 < len(m) < len(self.categories)]
        rows = []
        for k in keys:
            cells = self.groups[k]
            rows.append([self.label(k), f"c={k[3]}", *(num(cells[c].speedup) if c in cells else "-"
                                                     for c in self.categories),
                         *(num(aggregate([cells[c] for c in m if c in cells])[1])
                           if any(c in cells for c in m) else "-" for _, m in present),
                         num(aggregate(self.rows(k))[1])])
        out = ["## Speedup by category", "",
               (f"Speedup = speculative tok/s ÷ plain tok/s at the same concurrency and category. Group and "
               f"mean columns are the {RATIO_OF_MEANS} (each category weighs the same)."), ""]
        out += table(["server", "c", *self.categories, *(f"{n} (mean)" for n, _ in present), "mean"], rows)
        return out + (["![speedup by category](speedup_by_category.png)", ""] if images else [])

    def _tables(self) -> list[str]:
        out = ["## Cells", "", (f"Mean rows: tok/s is the {MEAN_OF_CATEGORIES}; speedup the {RATIO_OF_MEANS} "
                                "(speculative ÷ plain); acceptance length the mean of category acceptance lengths; "
                                "verdict the worst of the categories. At c=1, \"of roofline\" is tok/s ÷ the "
                                "decode speed of light (see below)."), ""]
        for key in self.groups:
            out += self._cell_table(key)
        return out

    def _cell_table(self, key: Key) -> list[str]:
        cells = self.rows(key)
        c1 = key[3] == 1
        roof = self.roofline(key[0], key[1])[2] if c1 else None

        def row(name: str, cs: Sequence[CellResult], verdict: str) -> list[str]:
            t, s, a = aggregate(cs)
            ci = cs[0].speedup_ci if len(cs) == 1 else None
            return [name, tok(t), num(s, ci), num(a), *([f"{t / roof:.1%}" if roof else "-"] if c1 else []),
                    verdict]

        rows = [row(c.category, [c], verdict_text(c)) for c in cells]
        for name, members in GROUPS:
            sub = [c for c in cells if c.category in members]
            if sub and len(sub) < len(cells):
                rows.append(row(f"*{name}*", sub, ""))
        worst = [c.verdict for c in cells if c.verdict]
        order = ("REGRESSED", "UNKNOWN", "IMPROVED", "OK")
        rows.append(row(f"**mean of {len(cells)}**", cells, min(worst, key=order.index) if worst else "no baseline"))
        header = ["category", "tok/s", "speedup [95% CI]", "accept len", *(["of roofline"] if c1 else []), "verdict"]
        return [f"### {self.label(key)}, c={key[3]}", "", f"model `{key[1]}` on {key[0]}", "", *table(header, rows)]

    def _acceptance(self, images: bool) -> list[str]:
        curves = self.curves()
        if not curves:
            return []
        k = max(len(c.rates) for c in curves)
        out = ["## Acceptance by draft position", "", ("Accepted at position i ÷ drafts, pooled over categories "
               "(weighted by drafts)."), ""]
        out += table(["server", "c", *(f"pos {i}" for i in range(1, k + 1))],
                     [[c.label, f"c={c.concurrency}", *(num(r) for r in c.rates), *["-"] * (k - len(c.rates))]
                      for c in curves])
        return out + (["![acceptance by position](acceptance_by_position.png)", ""] if images else [])

    def curves(self) -> list[plotting.Curve]:
        out = [plotting.Curve(self.label(k), k[3], pooled_acceptance(list(g.values()))) for k, g in self.groups.items()]
        return [c for c in out if c.rates]

    def bars(self) -> list[plotting.Bars]:
        return [plotting.Bars(self.label(k), k[3], {cat: (c.speedup, c.speedup_ci) for cat, c in g.items()
                                                 if c.speedup is not None})
                for k, g in self.groups.items() if any(c.speedup is not None for c in g.values())]

    def _speed_of_light(self) -> list[str]:
        out = ["## Speed of light (c=1 decode)", "",
               ("Roofline tok/s = memory bandwidth ÷ bytes of weights (each token reads every weight once; "
               "per GPU, tensor parallelism not counted). Plain c=1 throughput as a fraction of it."), ""]
        rows = []
        for device, model in dict.fromkeys(k[:2] for k in self.groups):
            weights, bw, roof = self.roofline(device, model)
            plain = [k for k in self.groups if k[:2] == (device, model) and k[3] == 1
                     and not next(iter(self.groups[k].values())).speculative]
            tput = aggregate(self.rows(plain[0]))[0] if plain else None
            rows.append([f"`{model}`", device, "-" if weights is None else f"{weights / 1e9:.3f} GB",
                         "-" if bw is None else f"{bw.tb_s:g} TB/s ({bw.source})", tok(roof), tok(tput),
                         f"{tput / roof:.1%}" if tput and roof else "-"])
        return out + table(["model", "device", "weights", "bandwidth", "roofline tok/s",
                            "plain c=1 tok/s (mean of categories)", "fraction"], rows)

    def _servers(self) -> list[str]:
        seen: dict[tuple[str, str], CellResult] = {}
        for c in self.cells:
            prev = seen.get((c.device or "-", c.server))
            if prev is None or (c.server_memory_bytes is not None and prev.server_memory_bytes is None):
                seen[(c.device or "-", c.server)] = c
        rows = [[server_label(c), f"`{c.model}`", dev, "-" if c.server_memory_bytes is None
                 else f"{c.server_memory_bytes / 2**30:.2f} GiB",
                 "-" if c.kv_cache_tokens is None else f"{c.kv_cache_tokens:,.0f}"] for (dev, _), c in seen.items()]
        return ["## Servers", "", "Host memory is the resident memory of the server's processes; the KV cache's "
                "capacity is what vLLM reports at start-up (a drafter with its own KV cache takes a share).", ""] + \
            table(["server", "model", "device", "host memory", "KV cache tokens"], rows)

    def _lossless(self) -> list[str]:
        runs = [r for r in self.runs if r.lossless is not None]
        if not runs:
            return []
        out = ["## Lossless", "", ("Greedy outputs with and without drafts, token by token. A near-tie: the plain "
               "run's top-2 logprobs are within the margin and the speculative run took its top-2."), ""]
        for run in runs:
            entries = run.lossless or ()
            out += [f"From `{run.path.parent / 'lossless.json'}`:", ""]
            out += table(["server", "vs", "c", "mode", "prompts", "identical", "near-ties", "real divergences"],
                         [[e.server, e.reference, str(e.concurrency), e.mode, str(e.compared), str(e.identical),
                           str(e.near_ties), f"**{e.real}**" if e.real else "0"] for e in entries])
            divs = [(e, d) for e in entries for d in e.divergences]
            if divs:
                out += table(["server", "c", "prompt", "first index", "plain token", "spec token", "margin",
                              "kind"],
                             [[e.server, str(e.concurrency), str(d.get("prompt_id")), str(d.get("index")),
                               token(d.get("base_token")), token(d.get("spec_token")),
                               "-" if d.get("margin") is None else f"{d['margin']:.4f}", str(d.get("kind", "-"))]
                              for e, d in divs])
        return out


def write_report(paths: Sequence[Path], out_dir: Path | None = None, *, bandwidth: dict[str, float] | None = None,
                 title: str = "specguard report", step_summary: str | None = None, plots: bool = True) -> Path:
    """Read ``paths``, write ``report.md`` and (``plots``) the PNGs into ``out_dir``; returns the
    Markdown's path. ``step_summary``: a file to append the Markdown to (``$GITHUB_STEP_SUMMARY``)."""
    runs = [load_benchmark(Path(p)) for p in paths]
    rep = Report(runs, bandwidth=bandwidth, title=title)
    out_dir = Path(out_dir) if out_dir else Path(paths[0]).parent / "specguard-report"
    out_dir.mkdir(parents=True, exist_ok=True)
    bars, curves = rep.bars(), rep.curves()
    if plots and bars:
        plotting.speedup_by_category(bars, [c for c in rep.categories if any(c in b.values for b in bars)],
                                     GROUPS, out_dir / "speedup_by_category.png")
    if plots and curves:
        plotting.acceptance_by_position(curves, out_dir / "acceptance_by_position.png")
    md = out_dir / "report.md"
    md.write_text(rep.markdown(), encoding="utf-8")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(rep.markdown(images=False) + "\nPlots: `speedup_by_category.png`, "
                    "`acceptance_by_position.png` in the uploaded results.\n\n")
    return md


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="Markdown tables and PNG plots from --benchmark-json files.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="RESULTS.json", help="pytest-benchmark JSON file(s).")
    p.add_argument("--out", type=Path, metavar="DIR", default=None,
                   help="Output folder. Default: specguard-report/ next to the first input.")
    p.add_argument("--bandwidth", action="append", type=_bandwidth_arg, metavar="GPU=TB/s", default=[],
                   help="Memory bandwidth for devices whose name contains GPU ('cpu' for any CPU), "
                        "e.g. H100=3.35; repeatable. Default: the built-in table.")
    p.add_argument("--title", metavar="T", default="specguard report", help="Report title. Default: %(default)r")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="Write the Markdown only, no PNGs.")
    p.set_defaults(func=run)


def _bandwidth_arg(text: str) -> tuple[str, float]:
    try:
        return parse_bandwidth(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--bandwidth: ")) from None


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    md = write_report(args.inputs, args.out, bandwidth=dict(args.bandwidth), title=args.title,
                      step_summary=os.environ.get("GITHUB_STEP_SUMMARY") or None, plots=args.plots)
    echo(f"specguard: report written to {md}")
    return 0
