"""Image stage after generation: metrics/images.json (image metrics per generations file + the true images)
and the report's section: PNG grids per decoder (context | base | hyperfitted | true) and the metrics table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hyperfit.images.grid import context_image, grid_image, save_png
from hyperfit.images.metrics import completed_grid, image_metrics
from hyperfit.images.palette import PixelTokenizer
from hyperfit.runs import RunDir, read_jsonl, write_json

IMAGES_METRICS = "images.json"
COLUMNS = ("row_repeat", "uniform_rows", "longest_run", "ttr", "colour_entropy", "nearest_train_rmse")
GRID_ROWS = 8


def _manifest(run: RunDir) -> dict:
    return json.loads((run.data / "manifest.json").read_text())


def evaluate_images(run: RunDir) -> Path:
    """Image metrics of every generations file and of the true continuations → metrics/images.json."""
    run = RunDir.of(run)
    m = _manifest(run)
    palette = PixelTokenizer.from_folder(run.data)
    contexts = run.read_samples("contexts")
    by_id = {c["id"]: c for c in contexts}
    train_ids = [r["input_ids"] for r in run.read_samples("train")]
    shape = (m["height"], m["width"], m["prefix_rows"])
    out = {"reference": image_metrics(contexts, [c["reference_ids"] for c in contexts], train_ids, palette, *shape)}
    for path in sorted(run.generations.glob("*.jsonl")):
        rows = [r for r in read_jsonl(path) if r.get("sample", 0) == 0]
        out[path.stem] = image_metrics([by_id[r["context_id"]] for r in rows], [r["continuation_ids"] for r in rows],
                                       train_ids, palette, *shape)
        predictive = _predictive(run, path.stem)
        if predictive:
            out[path.stem].update(val_loss=predictive.get("loss"), val_entropy=predictive.get("entropy"),
                                  bits_per_dim=predictive["loss"] / math.log(2) if predictive.get("loss") else None)
    target = run.metrics / IMAGES_METRICS
    write_json(target, out)
    return target


def _predictive(run: RunDir, tag: str) -> dict | None:
    path = run.metrics_file(tag)
    return json.loads(path.read_text()).get("predictive") if path.is_file() else None


def write_grids(run: RunDir, out: Path) -> list[tuple[str, Path]]:
    """One PNG per decoder with both weights: rows of context | base | hyperfitted | true."""
    run = RunDir.of(run)
    m = _manifest(run)
    palette = PixelTokenizer.from_folder(run.data)
    h, w, rows = m["height"], m["width"], m["prefix_rows"]
    contexts = run.read_samples("contexts")[:GRID_ROWS]
    written = []
    for path in sorted(run.generations.glob("*.jsonl")):
        base = run.generation_file(f"base-{path.stem}")
        if path.stem.startswith("base-") or not base.is_file():
            continue
        first = {tag: {r["context_id"]: r for r in read_jsonl(p) if r.get("sample", 0) == 0}
                 for tag, p in (("base", base), ("final", path))}
        tiles = []
        for c in contexts:
            true = palette.pixels(completed_grid(c["context_ids"], c["reference_ids"], h, w).reshape(-1).clip(0), h, w)
            row = [context_image(true, rows)]
            for tag in ("base", "final"):
                gen = first[tag].get(c["id"])
                ids = completed_grid(c["context_ids"], gen["continuation_ids"] if gen else [], h, w)
                row.append(palette.pixels(ids.reshape(-1).clip(0), h, w))
            tiles.append(row + [true])
        if tiles:
            scale = max(1, 128 // max(h, w))
            written.append((path.stem, save_png(grid_image(tiles, scale), out / "plots" / f"images-{path.stem}.png")))
    return written


def image_report_lines(run: RunDir, out: Path, label: str) -> list[str]:
    """The report's image section: the metrics table and the grids."""
    run = RunDir.of(run)
    lines = [f"## Images: {label}", ""]
    metrics_path = run.metrics / IMAGES_METRICS
    if metrics_path.is_file():
        table = json.loads(metrics_path.read_text())
        header = ["generations", *COLUMNS, "bits_per_dim", "val_entropy"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for tag, row in sorted(table.items(), key=lambda kv: (kv[0] == "reference", kv[0])):
            name = "true images" if tag == "reference" else tag
            cells = [_cell(row.get(k)) for k in header[1:]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "row_repeat: share of generated rows equal to the row above; uniform_rows: share of one-colour "
                  "rows; longest_run: longest one-colour run as a share of the generated pixels; ttr and "
                  "colour_entropy (bits) over the generated pixels' colours; nearest_train_rmse: RMS distance (0–1) "
                  "of each completed image to its nearest training image; bits_per_dim: teacher-forced validation "
                  "loss in bits per pixel token.", ""]
    for tag, png in write_grids(run, out):
        lines += [f"**{tag}** — columns: context | base | hyperfitted | true", "",
                  f"![{tag} completions]({png.relative_to(out)})", ""]
    return lines


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)

