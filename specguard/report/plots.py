"""The report's two figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

* ``speedup_by_category.png``: bars of speedup per category, one bar per speculative server, one
  panel per concurrency; the coding/math/stem and writing/roleplay groups are shaded.
* ``acceptance_by_position.png``: acceptance rate at each draft position, one line per server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUP_COLOURS = ("#dbe9f6", "#fbe3d0", "#e6e6e6")
MARKERS = ("o", "s", "^", "D", "v", "P")
DASHES = ("-", "--", "-.", ":")


@dataclass(frozen=True)
class Bars:
    label: str                                               # e.g. "ngram4 (ngram, k=4)"
    concurrency: int
    values: Mapping[str, tuple[float, tuple[float, float] | None]]   # category -> (speedup, CI)


@dataclass(frozen=True)
class Curve:
    label: str
    concurrency: int
    rates: tuple[float, ...]                                 # position 1..k


def _figure(panels: int, width: float, height: float) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height * panels), dpi=110, layout="constrained")
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    return fig, list(axes)


def speedup_by_category(bars: Sequence[Bars], categories: Sequence[str],
                        groups: Sequence[tuple[str, Sequence[str]]], path: Path) -> None:
    """Grouped bars: x = category (in report order), a bar per server, a panel per concurrency."""
    concurrencies = sorted({b.concurrency for b in bars})
    width = max(7.0, 1.0 + 0.75 * len(categories) * max(1, len(bars) / len(concurrencies)) ** 0.5)
    fig, axes = _figure(len(concurrencies), width, 3.6)
    cmap = _colours(sorted({b.label for b in bars}))
    for ax, conc in zip(axes, concurrencies):
        series = [b for b in bars if b.concurrency == conc]
        step = 0.8 / len(series)
        _shade_groups(ax, categories, groups)
        top = 1.0
        for j, s in enumerate(series):
            xs: list[float] = []
            ys: list[float] = []
            err: tuple[list[float], list[float]] = ([], [])
            for i, cat in enumerate(categories):
                if cat not in s.values:
                    continue
                y, ci = s.values[cat]
                xs.append(i - 0.4 + step * (j + 0.5))
                ys.append(y)
                err[0].append(y - ci[0] if ci else 0.0)
                err[1].append(ci[1] - y if ci else 0.0)
                top = max(top, ci[1] if ci else y)
            ax.bar(xs, ys, min(step * 0.9, 0.45), yerr=err, capsize=3, color=cmap[s.label], label=s.label,
                   edgecolor="black", linewidth=0.4, error_kw={"elinewidth": 0.8})
            if len(categories) * len(series) <= 24:   # more labels than that would overlap
                for x, y, up in zip(xs, ys, err[1]):
                    ax.annotate(f"{y:.2f}", (x, y + up), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7, zorder=5,
                                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.9, label="plain decoding (1.0×)")
        ax.set_xticks(range(len(categories)), list(categories), rotation=30 if len(categories) > 6 else 0,
                      ha="right" if len(categories) > 6 else "center")
        ax.set_xlim(-0.6, len(categories) - 0.4)
        ax.set_ylim(0, top * 1.18)
        ax.set_ylabel("speedup vs plain (×)")
        ax.set_title(f"Speedup by category, c={conc} (bars: mean, whiskers: 95% CI)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)


def _shade_groups(ax: Any, categories: Sequence[str], groups: Sequence[tuple[str, Sequence[str]]]) -> None:
    for (name, members), colour in zip(groups, GROUP_COLOURS):
        idx = [i for i, c in enumerate(categories) if c in members]
        if idx:
            ax.axvspan(min(idx) - 0.5, max(idx) + 0.5, color=colour, alpha=0.8, zorder=0, linewidth=0)
            ax.text((min(idx) + max(idx)) / 2, 0.97, name, transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=8, style="italic", color="#333333")


def acceptance_by_position(curves: Sequence[Curve], path: Path) -> None:
    """Lines of acceptance rate at draft position 1..k, a line per server, a panel per concurrency."""
    concurrencies = sorted({c.concurrency for c in curves})
    fig, axes = _figure(len(concurrencies), 7.5, 3.4)
    cmap = _colours(sorted({c.label for c in curves}))
    kmax = max(len(c.rates) for c in curves)
    for ax, conc in zip(axes, concurrencies):
        panel = [c for c in curves if c.concurrency == conc]
        for j, c in enumerate(panel):
            xs = list(range(1, len(c.rates) + 1))
            # Marker and dash vary too, so that coinciding curves stay told apart.
            ax.plot(xs, c.rates, marker=MARKERS[j % len(MARKERS)], linestyle=DASHES[j % len(DASHES)],
                    color=cmap[c.label], label=c.label)
            if len(panel) <= 3:   # more value labels than that would overlap
                for x, y in zip(xs, c.rates):
                    ax.annotate(f"{y:.2f}", (x, y), xytext=(0, 5 if j % 2 == 0 else -11),
                                textcoords="offset points", ha="center", fontsize=7, color=cmap[c.label])
        ax.set_xticks(range(1, kmax + 1))
        ax.set_xlim(0.5, kmax + 0.5)
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("draft position")
        ax.set_ylabel("accepted / drafts")
        ax.set_title(f"Acceptance by draft position, c={conc} (pooled over categories)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3)
    fig.savefig(path)


def _colours(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}
