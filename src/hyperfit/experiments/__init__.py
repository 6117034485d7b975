"""Experiments: a spec (base config + axes) → cells, each an ordinary run directory → an aggregate report.

    hyperfit experiment configs/experiments/quantity.yaml [--fast] [--launcher local|submitit] [--out DIR]

    from hyperfit.experiments import load_spec, run_experiment
    summary = run_experiment(load_spec("configs/experiments/quantity.yaml", fast=True), "local", Path("runs"))

Rooms: `spec` (reading a spec file and its fast cut), `cells` (naming, content keys, status, and `run_cell`, the
one function a launcher runs), `launchers` (local, submitit), `sweep` (the engine and its progress lines),
`aggregate` (results.csv, report.md), `plots` (the plots a spec may name). Imports no torch: `run_cell`
loads the pipeline when a cell runs. See docs/experiments.md.
"""

from hyperfit.experiments.aggregate import aggregate
from hyperfit.experiments.cells import Cell, content_key, plan_cells, read_status, run_cell
from hyperfit.experiments.launchers import LAUNCHERS
from hyperfit.experiments.plots import PLOTS
from hyperfit.experiments.spec import Spec, is_spec, load_spec
from hyperfit.experiments.sweep import Summary, run_experiment

__all__ = ["Cell", "LAUNCHERS", "PLOTS", "Spec", "Summary", "aggregate", "content_key", "is_spec", "load_spec",
           "plan_cells", "read_status", "run_cell", "run_experiment"]
