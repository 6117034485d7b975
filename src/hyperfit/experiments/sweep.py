"""The engine: a spec's cells → the ones not done → a launcher → progress lines → the aggregate report.

    hyperfit experiment configs/experiments/quantity.yaml              # all cells, one after another
    hyperfit experiment configs/experiments/quantity.yaml --fast       # the CI-sized cut
    run_experiment(load_spec(path), "local", Path("runs"))             # the same from Python

A rerun reuses every cell that is done under the same content key and resumes the interrupted ones (their
run directories exist: `run(cfg, resume=True)`), so killing a sweep costs at most the cell that was running.
A failed cell is recorded and reported; the others go on. The report is written after every sweep, so it
also shows a half-finished one.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from hyperfit.experiments.aggregate import aggregate
from hyperfit.experiments.cells import ERROR_FILE, LOG_FILE, Cell, is_done, plan_cells
from hyperfit.experiments.launchers import get_launcher
from hyperfit.experiments.spec import Spec
from hyperfit.runs import write_json

STORE = "cache"  # <experiment>/cache/: what the cells share (hyperfit.reuse)


@dataclass
class Summary:
    cells: list[Cell]
    cached: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    report: Path | None = None

    def line(self) -> str:
        return (f"{len(self.cells)} cells: {len(self.cached)} cached, {len(self.done)} run, {len(self.failed)} failed"
                + (f" ({', '.join(self.failed)})" if self.failed else ""))


class Progress:
    """'cell 3/8 num_train=32: cached | running | done in 41 s | FAILED: ...', one line per event."""

    def __init__(self, cells: list[Cell]):
        self.number = {c.path: i for i, c in enumerate(cells, 1)}
        self.total = len(cells)

    def say(self, cell: Cell, what: str) -> None:
        print(f"cell {self.number[cell.path]}/{self.total} {cell.name}: {what}", flush=True)


def run_experiment(spec: Spec, launcher: str = "local", out: Path = Path("runs"),
                   command: str | None = None, reuse: bool = True) -> Summary:
    """Run the cells of `spec` that are not done into <out>/<spec.name>/cells/ and write its report.
    `reuse`: what does not change between cells (tokenized data, the base model's generations and predictive
    metrics) is computed once, in <out>/<spec.name>/cache/ (hyperfit.reuse); False computes it in every cell."""
    run_cells = get_launcher(launcher)  # an unknown launcher is refused before anything is written
    root = Path(out) / spec.name
    cells = plan_cells(spec, root)  # every cell's config is valid, or nothing runs
    summary, progress = Summary(cells), Progress(cells)
    write_json(root / "experiment.json", {"spec": str(spec.path), "axes": {k: list(v) for k, v in spec.axes.items()},
                                          "overrides": list(spec.overrides), "launcher": launcher,
                                          "cells": [{"name": c.name, "key": c.key, "folder": str(c.path),
                                                     "values": c.values} for c in cells]})
    todo = []
    for cell in cells:
        if is_done(cell):
            summary.cached.append(cell.name)
            progress.say(cell, "cached")
        else:
            todo.append(cell)
    try:
        _launch(todo, run_cells, spec, root, progress, summary, str(root / STORE) if reuse else None)
    finally:  # after an interrupt too: the report of what is done so far
        summary.report = aggregate(spec, cells, root, command or shlex.join(["hyperfit", "experiment", str(spec.path)]))
    return summary


def _launch(todo: list[Cell], run_cells, spec: Spec, root: Path, progress: Progress, summary: Summary,
            store: str | None) -> None:
    started = time.monotonic()
    started_cell = lambda c: progress.say(c, f"running (log: {c.path / LOG_FILE})")  # noqa: E731
    for cell, outcome in run_cells(todo, started_cell, spec.submitit, root / "submitit", store):
        if outcome.get("status") == "done":
            summary.done.append(cell.name)
            progress.say(cell, f"done in {outcome.get('seconds') or 0:.0f} s")
        else:
            summary.failed.append(cell.name)
            progress.say(cell, f"FAILED: {outcome.get('error')} (see {cell.path / ERROR_FILE})")
    if todo:
        print(f"{len(todo)} cells run in {time.monotonic() - started:.0f} s", flush=True)
