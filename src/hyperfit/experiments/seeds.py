"""Seeds: when a spec sweeps a seed axis, one summary row per combination of the other axes.

    <out>/<experiment>/results_summary.csv    other axes, n (finished cells), seeds, then <metric>_mean and
                                              <metric>_ci95 (the half-width of a 95 % t-interval) per metric
    report.md, "## Over seeds"                the same as mean ± half-width

A seed axis is any axis whose key ends in "seed" (data.seed, train.seed, ...); with several, every seed
combination is one replicate. Only finished cells (status done) count; a metric is averaged over the cells
that have it. The t quantile comes from scipy.stats.t where installed (the study and dev extras), else from a
table (df 1-30, then 40, 60, 120: the nearest df at or below, so the interval errs on the wide side).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from hyperfit.stages.report import markdown_table

# Two-sided 95 %: the 0.975 quantile of Student's t by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
NOT_METRICS = ("cell", "status", "folder")


def seed_axes(axes: Sequence[str]) -> list[str]:
    return [k for k in axes if k.endswith("seed")]


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom."""
    try:
        from scipy.stats import t
    except ImportError:
        return T975[max(k for k in T975 if k <= df)]
    return float(t.ppf(0.975, df))


def mean_ci(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, half-width of the 95 % t-interval); the half-width is None below two values."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metric_columns(header: Sequence[str], axes: Sequence[str], rows: Sequence[dict]) -> list[str]:
    """The numeric columns of results.csv other than the axes: those with a number in some row."""
    return [k for k in header if k not in (*NOT_METRICS, *axes) and any(_number(r.get(k)) for r in rows)]


def summarize(axes: Sequence[str], header: Sequence[str], rows: Sequence[dict]) -> tuple[list[str], list[dict]]:
    """(header, rows) of results_summary.csv: one row per combination of the non-seed axes, in the cells' order.
    Empty when no axis is a seed axis."""
    seeds = seed_axes(axes)
    if not seeds:
        return [], []
    others = [k for k in axes if k not in seeds]
    metrics = metric_columns(header, axes, rows)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in others), []).append(row)
    out = []
    for key, members in groups.items():
        done = [r for r in members if r.get("status") == "done"]
        summary = {**dict(zip(others, key)), "n": len(done),
                   "seeds": " ".join(",".join(str(r[k]) for k in seeds) for r in done)}
        for m in metrics:
            summary[f"{m}_mean"], summary[f"{m}_ci95"] = mean_ci([r[m] for r in done if _number(r.get(m))])
        out.append(summary)
    return [*others, "n", "seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "ci95"))], out


def _pm(mean: float | None, half: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4g}" if half is None else f"{mean:.4g} ± {half:.2g}"


def markdown_lines(axes: Sequence[str], header: Sequence[str], rows: Sequence[dict]) -> list[str]:
    """report.md's "Over seeds" section (header and rows from `summarize`), or nothing without a seed axis."""
    if not rows:
        return []
    others = [k for k in axes if k not in seed_axes(axes)]
    metrics = [h[:-len("_mean")] for h in header if h.endswith("_mean")]
    shown = [m for m in metrics if m != "seconds" and any(r[f"{m}_mean"] is not None for r in rows)]
    table = [[*(r[k] for k in others), r["n"], *(_pm(r[f"{m}_mean"], r[f"{m}_ci95"]) for m in shown)] for r in rows]
    return ["## Over seeds", "", f"Mean ± half-width of the 95 % t-interval over {', '.join(seed_axes(axes))} "
            "(n: finished cells; one cell: no interval). Every column: results_summary.csv.", "",
            *markdown_table([*others, "n", *shown], table), ""]
