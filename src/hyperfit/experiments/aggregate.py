"""The experiment's own report: one row per cell, read back from the cells' run directories.

    <out>/<experiment>/results.csv    one row per cell: axis values, status, training and generation numbers
    <out>/<experiment>/report.md      the same table, failed cells with their errors, the spec's plots
    <out>/<experiment>/results_summary.csv   with a seed axis: mean ± 95 % CI over seeds (hyperfit.experiments.seeds)
    <out>/<experiment>/plots/*.png
    <out>/<experiment>/<recipe>.csv, plots/...   with `recipe:` in the spec (hyperfit.experiments.recipes)

Everything here reads files only (cell.json, train_log.jsonl, metrics/*.json), so `hyperfit experiment` can
rewrite the report of a sweep that is still running elsewhere, and a missing number is a blank, not an error.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from hyperfit.experiments.cells import ERROR_FILE, Cell, read_status
from hyperfit.experiments.plots import get_plot
from hyperfit.experiments.recipes import get_recipe
from hyperfit.experiments.seeds import markdown_lines, summarize
from hyperfit.experiments.spec import Spec
from hyperfit.runs import RunDir, read_jsonl, write_text
from hyperfit.stages.report import markdown_table

# The hyperfitted model's generation metrics (greedy by default), then the same for the base model and the
# human continuations, where the comparison is the point of the paper.
GENERATION = ("ttr", "ttr_words", "distinct_4", "rep_4", "nonword_rate", "self_bleu", "dataset_bleu",
              "longest_overlap", "longest_overlap_words")
MAXIMA = ("self_bleu", "dataset_bleu", "longest_overlap", "longest_overlap_words")  # Table 2 gives avg and max
BESIDE = ("ttr", "distinct_4")  # also given for base- and human_: the "original" and "human" lines of a plot
CELL_COLUMNS = ("status", "seconds", "updates", "final_train_loss", "val_loss", "base_val_loss")


def columns(spec: Spec) -> list[str]:
    return ["cell", *spec.axes, *CELL_COLUMNS, *GENERATION, *(f"{k}_max" for k in MAXIMA),
            *(f"base_{k}" for k in BESIDE), *(f"human_{k}" for k in BESIDE), "folder"]


def training_numbers(run: RunDir) -> dict:
    """Updates made and the last epoch's mean training loss, from train_log.jsonl (an epoch or probe row)."""
    if not run.train_log.is_file():
        return {}
    rows = [r for r in read_jsonl(run.train_log, tolerate_tail=True) if "train_loss_epoch" in r]
    return {"updates": rows[-1]["step"], "final_train_loss": rows[-1]["train_loss_epoch"]} if rows else {}


def metric_files(run: RunDir, config: dict) -> dict[str, dict]:
    """The metrics files behind a row: the trained weights' and the base model's with the configured decoder
    ("final", "base"), and the human continuations at the run's own length ("human")."""
    gen, found = config["generate"], {}
    for path in sorted(run.metrics.glob("*.json")) if run.metrics.is_dir() else []:
        m = json.loads(path.read_text())
        if "metrics" not in m:
            continue  # a human study's results
        if path.stem == "reference":
            found["human"] = m
        elif m.get("decoder") == gen["decoder"] and m.get("checkpoint") in (gen["checkpoint"], "base"):
            found.setdefault("base" if m["checkpoint"] == "base" else "final", m)
    return found


def metric_max(metrics_file: dict, name: str) -> float | None:
    """The largest per-continuation value of a metric in a metrics file (None: not computed or no items).

    >>> metric_max({"metrics": {"self_bleu": {"value": 2.0, "per_item": [1.0, 3.0]}}}, "self_bleu")
    3.0
    """
    items = metrics_file.get("metrics", {}).get(name, {}).get("per_item")
    return max(items) if items else None


def cell_row(spec: Spec, cell: Cell) -> dict:
    run = RunDir(cell.path)
    status = read_status(cell.path) or {}
    files = metric_files(run, cell.config)
    value = lambda which, k: files.get(which, {}).get("metrics", {}).get(k, {}).get("value")  # noqa: E731
    row = {"cell": cell.name, **cell.values, "status": status.get("status", "not run"),
           "seconds": status.get("seconds"), **training_numbers(run),
           "val_loss": files.get("final", {}).get("predictive", {}).get("loss"),
           "base_val_loss": files.get("base", {}).get("predictive", {}).get("loss"), "folder": str(cell.path)}
    row |= {k: value("final", k) for k in GENERATION}
    row |= {f"{k}_max": metric_max(files.get("final", {}), k) for k in MAXIMA}
    row |= {f"base_{k}": value("base", k) for k in BESIDE} | {f"human_{k}": value("human", k) for k in BESIDE}
    return {k: row.get(k) for k in columns(spec)}


def write_csv(path: Path, header: Sequence[str], rows: Sequence[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    write_text(path, buffer.getvalue())


def aggregate(spec: Spec, cells: Sequence[Cell], root: Path, command: str) -> Path:
    """Write results.csv, the spec's plots and report.md into `root`; returns report.md's path."""
    rows = [cell_row(spec, c) for c in cells]
    header = columns(spec)
    write_csv(root / "results.csv", header, rows)
    summary_header, summary = summarize(list(spec.axes), header, rows)
    if summary:
        write_csv(root / "results_summary.csv", summary_header, summary)
    else:  # the spec lost its seed axis: an old summary no longer describes these cells
        (root / "results_summary.csv").unlink(missing_ok=True)
    plots = [p for name in spec.plots
             if (p := get_plot(name).draw(rows, get_plot(name).x, root / "plots" / f"{name}.png"))]
    shown = [k for k in header if k not in ("folder", "seconds") and any(r[k] is not None for r in rows)]
    lines = [f"# Experiment {spec.name}", "", f"Spec: `{spec.path}`; {len(cells)} cells over "
             + " × ".join(f"{k} ({len(v)})" for k, v in spec.axes.items()) + ".", "",
             f"Reproduce: `{command}` (finished cells are reused; see docs/experiments.md).", "",
             *markdown_table(shown, [[r[k] for k in shown] for r in rows]), "",
             "ttr…longest_overlap: the hyperfitted model's generations (metrics/<decoder>.json); base_: the "
             "original model's with the same decoder; human_: the held-out human continuations. val_loss: "
             "teacher-forced on held-out text. Each cell is an ordinary run directory with its own report.md.", ""]
    lines += markdown_lines(list(spec.axes), summary_header, summary)
    failed = [(c, r) for c, r in zip(cells, rows) if r["status"] == "failed"]
    if failed:
        lines += ["## Failed cells", ""] + [f"- {c.name}: {(read_status(c.path) or {}).get('error')} "
                                            f"(`{c.path / ERROR_FILE}`)" for c, _ in failed] + [""]
    for plot in plots:
        lines += [f"## {plot.stem}", "", f"![{plot.stem}]({plot.relative_to(root)})", ""]
    if spec.recipe:  # the paper's artefact, beside the paper's numbers: its own section, files and plots
        lines += get_recipe(spec.recipe).summarize(spec, cells, rows, root)
    write_text(root / "report.md", "\n".join(lines))
    return root / "report.md"
