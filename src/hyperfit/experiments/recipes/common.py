"""What the recipes share: the done cells' metrics files, and a table beside the paper's numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import fmean

from hyperfit.experiments.aggregate import metric_files, write_csv
from hyperfit.experiments.cells import Cell, read_status
from hyperfit.runs import RunDir

WHO = {"final": "hyperfitted", "base": "original", "human": "human"}


def done(cells: Sequence[Cell]) -> list[Cell]:
    return [c for c in cells if (read_status(c.path) or {}).get("status") == "done"]


def files_of(cell: Cell) -> dict[str, dict]:
    """{"final" | "base" | "human": metrics file} of a cell (aggregate.metric_files)."""
    return metric_files(RunDir(cell.path), cell.config)


def mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return fmean(values) if values else None


def save_table(root: Path, name: str, header: Sequence[str], rows: Sequence[dict]) -> Path:
    write_csv(root / f"{name}.csv", header, rows)
    return root / f"{name}.csv"
