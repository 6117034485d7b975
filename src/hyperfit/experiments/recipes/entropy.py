"""Table 3: the next-token distributions before and after hyperfitting (entropy, top-k mass) on held-out text.

    hyperfit experiment configs/experiments/entropy.yaml     # report.md "## Table 3", entropy.csv

Teacher-forced on the run's validation sequences (metrics/<decoder>.json "predictive", evaluate.predictive):
mean entropy in nats, mean probability mass of the top-1/3/5 tokens, loss and perplexity, for the original
model and the hyperfitted one. Hyperfitting collapses the distributions: entropy falls, top-1 mass rises,
while the validation loss rises.
"""

from __future__ import annotations

from pathlib import Path

from hyperfit.experiments.recipes.common import done, files_of, mean_or_none, save_table
from hyperfit.stages.report import markdown_table

COLUMNS = ("entropy", "top1_mass", "top3_mass", "top5_mass", "loss", "perplexity")
PAPER = ("The paper (Table 3): after hyperfitting, the next-token distributions have far lower entropy and "
         "most of their mass on the top-1 token, on held-out text, while validation loss and perplexity rise. "
         "Its exact values are in the paper's Table 3; this report does not transcribe them.")


def summarize(spec, cells, rows, root: Path) -> list[str]:
    per = []
    for cell in done(cells):
        for which, label in (("base", "before"), ("final", "after")):
            predictive = files_of(cell).get(which, {}).get("predictive") or {}
            if predictive:
                per.append({"cell": cell.name, "model": label, **{k: predictive.get(k) for k in COLUMNS}})
    save_table(root, "entropy", ["cell", "model", *COLUMNS], per)
    lines = ["## Table 3: next-token distributions before and after", "", PAPER, ""]
    table = [[label, sum(r["model"] == label for r in per),
              *(mean_or_none(r[k] for r in per if r["model"] == label) for k in COLUMNS)]
             for label in ("before", "after") if any(r["model"] == label for r in per)]
    if not table:
        return lines + ["(no finished cell with predictive metrics yet: evaluate.predictive must be on)", ""]
    return lines + markdown_table(["model", "cells", *COLUMNS], table) + [
        "", "Teacher-forced on the validation sequences; entropy in nats; top-k mass: probability of the k most "
        "likely tokens; means over positions, then over cells. Per cell: entropy.csv.", ""]
