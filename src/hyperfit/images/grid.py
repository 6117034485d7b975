"""PNG grids of image completions: one row per held-out image, columns context | base | hyperfitted | true."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hyperfit.runs import atomic_path

CONTEXT_SHADE = 96  # grey where the context hides the rows to complete


def context_image(true_rgb: np.ndarray, prefix_rows: int) -> np.ndarray:
    shown = np.full_like(true_rgb, CONTEXT_SHADE)
    shown[:prefix_rows] = true_rgb[:prefix_rows]
    return shown


def grid_image(rows: list[list[np.ndarray]], scale: int = 4, gap: int = 2) -> np.ndarray:
    """Tiles [rows][columns] of equal-size RGB images, upscaled `scale`× (nearest), `gap` white pixels apart."""
    h, w = rows[0][0].shape[:2]
    th, tw = h * scale, w * scale
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    out = np.full((n_rows * (th + gap) + gap, n_cols * (tw + gap) + gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            big = tile.repeat(scale, 0).repeat(scale, 1)
            y, x = gap + i * (th + gap), gap + j * (tw + gap)
            out[y : y + th, x : x + tw] = big
    return out


def save_png(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path
