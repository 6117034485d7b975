"""Cells: one ordinary run directory per point of a spec's axes, named for its values, keyed by its content.

    <out>/<experiment>/cells/num_train=8,seed=0@1f2e3d4c/    config.yaml, data/, ..., report.md (as `hyperfit run`)
                                                          + cell.json (status), cell.log, error.txt (if it failed)

A cell's key is the sha256 of its resolved config (`hyperfit.config.to_dict`, less name and out_dir, which only
say where it lives). Its folder is its readable name plus the key's first 8 hex digits, so a changed setting —
an axis value, a base override, a new default — lands in a new folder and the old cell stays, ready to be
reused if the setting comes back. A cell whose cell.json says done under the same key is never run again.

`run_cell(config, run_dir)` is the one thing every launcher runs: a plain function of plain data, so submitit
can pickle it into a SLURM job, and the torch boundary (it imports the pipeline when called).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import platform
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hyperfit import reuse
from hyperfit.config import RunConfig, from_dict, load_config, to_dict
from hyperfit.errors import ConfigError
from hyperfit.experiments.spec import Spec, as_text
from hyperfit.runs import RunDir, json_sha256, write_json, write_text

STATUS_FILE, LOG_FILE, ERROR_FILE = "cell.json", "cell.log", "error.txt"
WHERE_KEYS = ("name", "out_dir")  # where a run lives, not what it computes: left out of the key


@dataclass(frozen=True)
class Cell:
    name: str
    """Readable: the axis values, e.g. num_train=8,seed=0 (the axes' last key parts, whole keys where those clash)."""
    values: dict
    """Axis key → this cell's value, e.g. {"data.num_train": 8, "data.seed": 0}."""
    config: dict
    """The resolved run config (to_dict), name and out_dir pointing at `path`."""
    key: str
    path: Path


def content_key(config: dict) -> str:
    """sha256 of what a run computes: its resolved config without the keys that only say where it lives.

    >>> a, b = {"name": "a", "out_dir": "x", "train": {"lr": 0.1}}, {"name": "b", "train": {"lr": 0.1}}
    >>> content_key(a) == content_key(b) != content_key({"train": {"lr": 0.2}})
    True
    """
    content = {k: v for k, v in config.items() if k not in WHERE_KEYS}
    return json_sha256(content)


def axis_labels(keys: list[str]) -> dict[str, str]:
    """Each axis key's short label: its last part, or the whole key where two axes share a last part.

    >>> axis_labels(["data.num_train", "data.seed", "train.seed"])
    {'data.num_train': 'num_train', 'data.seed': 'data.seed', 'train.seed': 'train.seed'}
    """
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}


def show(value) -> str:
    """A value as it appears in a cell's name: a path by its last part, and no character a folder name refuses.

    >>> show(8), show("runs/stories260K-hf"), show(1e-3)
    ('8', 'stories260K-hf', '0.001')
    """
    text = as_text(value)
    if "/" in text:
        text = Path(text).name or text.replace("/", "_")
    return text.replace("/", "_").replace("\\", "_").replace("\0", "") or "none"


def sweep_defaults(cfg: RunConfig) -> RunConfig:
    """A cell of a fixed-update sweep probes only when asked: train.probe_every_updates unset becomes 0 (a probe
    decodes greedily; 10 per cell is most of a small cell's time). Its weights are final/ only already
    (train.save_every_updates unset: no resumable checkpoints)."""
    if cfg.train.updates is None or cfg.train.probe_every_updates is not None:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, probe_every_updates=0))


def plan_cells(spec: Spec, root: Path) -> list[Cell]:
    """Every cell of the spec, resolved and validated; all invalid cells are reported together."""
    keys = list(spec.axes)
    labels = axis_labels(keys)
    cells, problems = [], []
    for combo in itertools.product(*spec.axes.values()):
        values = dict(zip(keys, combo))
        name = ",".join(f"{labels[k]}={show(v)}" for k, v in values.items()) or "base"
        try:
            cfg = sweep_defaults(load_config(spec.base_config,
                                             [*spec.overrides, *(f"{k}={as_text(v)}" for k, v in values.items())]))
        except ConfigError as e:
            problems.append(f"cell {name}: {e}")
            continue
        config = to_dict(cfg)
        key = content_key(config)
        path = root / "cells" / f"{name}@{key[:8]}"
        cells.append(Cell(name, values, {**config, "name": path.name, "out_dir": str(path.parent)}, key, path))
    if problems:
        raise ConfigError(f"experiment spec {spec.path}: {len(problems)} of {len(problems) + len(cells)} cells have "
                          "an invalid config:\n" + "\n".join(problems))
    return cells


# ---------------------------------------------------------------------------------------------------------
# A cell's status on disk


def read_status(path: Path) -> dict | None:
    """The cell.json of a cell folder, or None when there is none (or a damaged one: the cell runs again)."""
    try:
        return json.loads((Path(path) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_done(cell: Cell) -> bool:
    status = read_status(cell.path)
    return bool(status) and status.get("status") == "done" and status.get("key") == cell.key


def record(path: Path, key: str, status: str, **fields) -> dict:
    """Write cell.json (atomically: a reader sees the old status or the new one, never half of one)."""
    doc = {"key": key, "status": status, "host": platform.node(),
           "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **fields}
    write_json(Path(path) / STATUS_FILE, doc)
    return doc


def record_failure(path: Path, key: str, error: str, details: str, seconds: float | None = None) -> dict:
    """A failed cell: its one-line error in cell.json, the whole story (traceback) in error.txt."""
    write_text(Path(path) / ERROR_FILE, details if details.endswith("\n") else details + "\n")
    return record(path, key, "failed", error=error, seconds=seconds)


def one_line(error: BaseException) -> str:
    """'RunError: data.source ... does not exist' — an exception's kind and first line, for progress and tables."""
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:300]


def run_cell(config: dict, run_dir: str, store: str | None = None) -> dict:
    """Run (or resume) one cell with `hyperfit run`'s pipeline; record and return its outcome.

    Any error is recorded (cell.json, error.txt) and returned, not raised, so that one cell cannot stop the
    sweep. A kill or Ctrl-C leaves status "running" or "interrupted": the next sweep resumes the cell.
    `store`: the sweep's folder of reusable results (hyperfit.reuse: tokenized data, the base model's
    generations and predictive metrics), None to compute everything in the cell."""
    from hyperfit.stages.pipeline import run  # the torch boundary

    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    cfg = from_dict({**config, "name": path.name, "out_dir": str(path.parent)})
    key, resume = content_key(config), RunDir(path).config.is_file()
    record(path, key, "running", resumed=resume)
    (path / ERROR_FILE).unlink(missing_ok=True)  # a previous attempt's error no longer describes the cell
    start = time.monotonic()
    # The pipeline prints its resolved config and progress bars: into the cell's log, so the sweep's own
    # progress lines stay readable (and a SLURM job's log holds the same).
    with open(path / LOG_FILE, "a", encoding="utf-8") as log, redirect_stdout(log), redirect_stderr(log):
        try:
            with reuse.sharing(store):
                run(cfg, resume=resume)
        except Exception as e:  # noqa: BLE001 - every failure is the cell's, recorded; the sweep goes on
            traceback.print_exc()  # into cell.log
            return record_failure(path, key, one_line(e), traceback.format_exc(), round(time.monotonic() - start, 1))
        except BaseException:
            record(path, key, "interrupted", resumed=resume)
            raise
    return record(path, key, "done", seconds=round(time.monotonic() - start, 1), resumed=resume)
