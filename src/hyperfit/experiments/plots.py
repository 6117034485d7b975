"""Plots an experiment spec may ask for (`plots: [ttr_vs_samples]`), one registry entry each.

Each takes the experiment's result rows (aggregate.cell_row) and writes one PNG; cells that are not done
are left out, and several cells at one x (seeds, say) are drawn as their mean with a min–max bar, so
the spread between seeds is visible next to the effect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from hyperfit.errors import ConfigError, did_you_mean
from hyperfit.stages.report import pyplot, save_figure


@dataclass(frozen=True)
class Plot:
    x: str
    """The axis the plot needs (its x axis)."""
    draw: Callable[[Sequence[dict], str, Path], Path | None]
    help: str


def by_x(rows: Sequence[dict], x: str, y: str) -> list[tuple[float, float, float, float]]:
    """(x, mean, min, max) of column `y` over the done rows at each value of `x`, x ascending.

    >>> by_x([{"n": 8, "t": 0.2, "status": "done"}, {"n": 8, "t": 0.4, "status": "done"},
    ...       {"n": 16, "t": None, "status": "done"}], "n", "t")
    [(8, 0.30000000000000004, 0.2, 0.4)]
    """
    groups: dict = {}
    for r in rows:
        if r.get("status") == "done" and r.get(y) is not None:
            groups.setdefault(r[x], []).append(r[y])
    return [(k, mean(v), min(v), max(v)) for k, v in sorted(groups.items())]


def draw_ttr_vs_samples(rows: Sequence[dict], x: str, out: Path) -> Path | None:
    """The paper's Fig. 5 (right): greedy TTR of the hyperfitted and the original model against the number of
    training samples, with the human continuations' TTR as the reference line."""
    series = [("hyperfitted (greedy)", "ttr", "-"), ("original (greedy)", "base_ttr", "-"),
              ("human", "human_ttr", "--")]
    points = {label: (by_x(rows, x, column), style) for label, column, style in series}
    if not points["hyperfitted (greedy)"][0]:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, (pts, style) in points.items():
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            spread = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(xs, ys, yerr=spread, label=label, linestyle=style, marker="o", markersize=4, capsize=3)
    ax.set_xscale("log", base=2)
    ax.set(xlabel=f"training samples ({x})", ylabel="TTR", title="Greedy TTR against training samples\n"
           "(mean; bars: min–max over the other axes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)


PLOTS = {"ttr_vs_samples": Plot("data.num_train", draw_ttr_vs_samples,
                                "greedy TTR, hyperfitted and original, against data.num_train (Fig. 5 right)")}


def get_plot(name: str) -> Plot:
    if name not in PLOTS:
        raise ConfigError(f"plot {name!r} is unknown; known plots: {', '.join(PLOTS)}.{did_you_mean(name, PLOTS)}")
    return PLOTS[name]


def plot_problems(plots: Sequence[str], axes: Sequence[str]) -> list[str]:
    """Plots a spec names that do not exist or lack the axis they draw against."""
    problems = []
    for name in plots:
        if name not in PLOTS:
            problems.append(f"plots: {name!r} is unknown; known: {', '.join(PLOTS)}.{did_you_mean(name, PLOTS)}")
        elif PLOTS[name].x not in axes:
            problems.append(f"plots: {name} draws against {PLOTS[name].x}, which is not an axis; add it to axes:")
    return problems
