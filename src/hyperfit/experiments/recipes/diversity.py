"""Table 2 and Fig. 3: how diverse the continuations are, and how much of them is copied from training data.

    hyperfit experiment configs/experiments/diversity.yaml      # report.md "## Table 2", diversity.csv,
                                                                # plots/overlap_histogram.png (Fig. 3)

Per model (original greedy, hyperfitted greedy, human continuations): Self-BLEU, Dataset BLEU and the longest
span copied from one training sample, in tokens and in words, each as the average over continuations and the
maximum (the paper gives both). Over several cells (seeds): the mean of the averages and the max of the maxima.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hyperfit.experiments.recipes.common import WHO, done, files_of, mean_or_none, save_table
from hyperfit.stages.report import markdown_table, pyplot, save_figure

METRICS = ("self_bleu", "dataset_bleu", "longest_overlap", "longest_overlap_words")
PAPER = ("The paper (Table 2; TinyLlama, DeepSeek, Llama 3.1): hyperfitted greedy continuations are more "
         "diverse than the original models' greedy ones (lower Self-BLEU), and are not copies of the training "
         "data: Dataset BLEU stays low and the longest overlap is short for most continuations, with a tail "
         "(Fig. 3). Its exact values are in the paper's Table 2; this report does not transcribe them.")


def stats(metrics_file: dict, name: str) -> tuple[float | None, float | None]:
    """(average, maximum) over continuations of one metric in a metrics file.

    >>> stats({"metrics": {"self_bleu": {"value": 2.0, "per_item": [1.0, 3.0]}}}, "self_bleu")
    (2.0, 3.0)
    """
    m = metrics_file.get("metrics", {}).get(name, {})
    items = m.get("per_item")
    return m.get("value"), (max(items) if items else None)


def rows_of(cells) -> list[dict]:
    """One row per (cell, model): every metric's avg and max, and the share of continuations copying > 10 tokens."""
    out = []
    for cell in done(cells):
        for which, m in files_of(cell).items():
            row = {"cell": cell.name, "model": WHO[which]}
            for name in METRICS:
                row[f"{name}_avg"], row[f"{name}_max"] = stats(m, name)
            row["overlap_gt10"] = m.get("metrics", {}).get("overlap_gt10", {}).get("value")
            row["_items"] = {k: m.get("metrics", {}).get(k, {}).get("per_item") or []
                             for k in ("longest_overlap", "longest_overlap_words")}
            out.append(row)
    return out


def pooled(rows: Sequence[dict]) -> list[dict]:
    """Per model over cells: mean of the averages, max of the maxima."""
    out = []
    for model in WHO.values():
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        row = {"model": model, "cells": len(mine)}
        for name in METRICS:
            row[f"{name}_avg"] = mean_or_none(r[f"{name}_avg"] for r in mine)
            row[f"{name}_max"] = max((r[f"{name}_max"] for r in mine if r[f"{name}_max"] is not None), default=None)
        row["overlap_gt10"] = mean_or_none(r["overlap_gt10"] for r in mine)
        out.append(row)
    return out


def draw_histogram(rows: Sequence[dict], out: Path) -> Path | None:
    """Fig. 3: how many continuations copy a longest span of each length, hyperfitted against original."""
    pools = {(model, unit): [v for r in rows if r["model"] == model for v in r["_items"][key]]
             for model in ("hyperfitted", "original") for unit, key in (("tokens", "longest_overlap"),
                                                                        ("words", "longest_overlap_words"))}
    if not any(pools.values()):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, unit in zip(axes, ("tokens", "words")):
        top = int(max((max(v) for (_, u), v in pools.items() if u == unit and v), default=1))
        bins = range(0, top + 2)
        for model in ("original", "hyperfitted"):
            if pools[(model, unit)]:
                ax.hist(pools[(model, unit)], bins=bins, alpha=0.6, label=model, align="left")
        ax.set(xlabel=f"longest span copied from one training sample ({unit})", ylabel="continuations")
        ax.legend(fontsize=8)
    fig.suptitle("Longest overlap with the training data (Fig. 3)")
    return save_figure(fig, out)


def summarize(spec, cells, rows, root: Path) -> list[str]:
    per = rows_of(cells)
    header = ["model", *(f"{m}_{s}" for m in METRICS for s in ("avg", "max")), "overlap_gt10"]
    save_table(root, "diversity", ["cell", *header], [{k: r[k] for k in ["cell", *header]} for r in per])
    table = pooled(per)
    lines = ["## Table 2: diversity and copying", "", PAPER, ""]
    if not table:
        return lines + ["(no finished cell yet)", ""]
    shown = ["model", "cells", *header[1:]]
    lines += markdown_table(shown, [[r[k] for k in shown] for r in table])
    lines += ["", "Self-BLEU and Dataset BLEU: 0-100 (sacrebleu sentence BLEU); longest_overlap: tokens; "
              "longest_overlap_words: words, punctuation ignored; overlap_gt10: share of continuations copying more "
              "than 10 tokens. _avg: mean over continuations (then over cells); _max: the largest over "
              "continuations and cells. Per cell: diversity.csv.", ""]
    plot = draw_histogram(per, root / "plots" / "overlap_histogram.png")
    if plot:
        lines += [f"![overlap histogram]({plot.relative_to(root)})", ""]
    return lines
