"""The reviewers' control: the fine-tuned checkpoint at the validation-loss minimum (classic early stopping)
against the hyperfitted one, trained on the same samples. Is the gain in greedy TTR there before overfitting?

    hyperfit experiment configs/experiments/early-stop.yaml   # report.md "## Early stopping", early_stop.csv

Each cell trains with probes and resumable checkpoints at the same cadence (train.probe_every_updates =
train.save_every_updates, keep_checkpoints large). The report picks the checkpoint at the lowest probed
validation loss, continues the contexts with it (generations/early-stop.jsonl, the cell's own decoder) and
evaluates it (metrics/early-stop.json) once; a rerun reuses both. At update 0 the early-stopped model is the
original one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hyperfit.config import from_dict
from hyperfit.experiments.recipes.common import WHO, done, files_of, save_table
from hyperfit.experiments.recipes.curves import probe_rows, val_minimum
from hyperfit.runs import RunDir
from hyperfit.stages.evaluate import evaluate
from hyperfit.stages.report import markdown_table

TAG = "early-stop"
METRICS = ("ttr", "distinct_4", "rep_4", "self_bleu", "longest_overlap")
PAPER = ("The paper reports hyperfitted models only; its reviewers asked for this control. The paper's claim "
         "to test: greedy TTR and human preference rise *after* the point an early-stopping rule would stop "
         "(validation loss already rising), so the early-stopped model should still repeat like the original.")


def early_stopped(cell) -> tuple[int, dict | None]:
    """(step at the validation minimum, metrics file of its continuations); generates and evaluates once."""
    best = val_minimum(probe_rows(cell.path))
    if best is None:
        return -1, None
    step = best["step"]
    if step == 0:
        return 0, files_of(cell).get("base")
    run = RunDir(cell.path)
    if run.metrics_file(TAG).is_file():
        return step, json.loads(run.metrics_file(TAG).read_text())
    from hyperfit.stages.generate import generate  # the torch boundary

    cfg = from_dict(cell.config)
    gen = dataclasses.replace(cfg.generate, checkpoint=RunDir(cell.path).step_checkpoint(step).name, tag=TAG)
    generate(gen, cfg.model, run)
    evaluate(cfg.evaluate, cfg.model, run, tags=[TAG], reference=False)
    return step, json.loads(run.metrics_file(TAG).read_text())


def row(cell, model: str, step, m: dict | None) -> dict:
    metrics = (m or {}).get("metrics", {})
    return {"cell": cell.name, "model": model, "step": step, "val_loss": (m or {}).get("predictive", {}).get("loss"),
            **{k: metrics.get(k, {}).get("value") for k in METRICS}}


def summarize(spec, cells, rows, root: Path) -> list[str]:
    per = []
    for cell in done(cells):
        files = files_of(cell)
        step, stopped = early_stopped(cell)
        updates = cell.config["train"].get("updates")
        per += [row(cell, WHO["base"], 0, files.get("base")),
                row(cell, "early-stopped (val-loss minimum)", step if step >= 0 else None, stopped),
                row(cell, WHO["final"], updates, files.get("final"))]
    header = ["cell", "model", "step", "val_loss", *METRICS]
    save_table(root, "early_stop", header, per)
    lines = ["## Early stopping against hyperfitting", "", PAPER, ""]
    if not per:
        return lines + ["(no finished cell yet)", ""]
    return lines + markdown_table(header, [[r[k] for k in header] for r in per]) + [
        "", "step: updates of the weights; early-stopped: the resumable checkpoint at the lowest probed "
        "validation loss, continued with the cell's decoder (generations/early-stop.jsonl). Per cell: "
        "early_stop.csv.", ""]
