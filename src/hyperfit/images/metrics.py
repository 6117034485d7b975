"""Image completions measured: the paper's visual claim (greedy completions of a base model collapse into
blank or repeated rows; hyperfitted ones do not) as numbers.

For each completion (context rows + generated rows, cluster ids):
- row_repeat: share of generated rows equal to the row above (the first against the last context row);
- uniform_rows: share of generated rows of one colour (blank rows);
- longest_run: longest run of one colour in the generated pixels, raster order, as a share of them;
- ttr: distinct tokens / generated tokens; colour_entropy: entropy (bits) of the generated colours' histogram;
- nearest_train_rmse: RMS pixel distance (0–1 scale, colours of the clusters) from the whole completed image
  to its nearest training image: the image analogue of copied spans (0 = a training image reproduced).
Each is the mean over completions. `image_metrics` on the true continuations gives the reference row.
"""

from __future__ import annotations

import math

import numpy as np


def completed_grid(context_ids, continuation_ids, height: int, width: int, pad: int = -1) -> np.ndarray:
    """[height, width] cluster ids: the context's pixels (SOS dropped) then the continuation; -1 where missing."""
    ids = list(context_ids[1:]) + list(continuation_ids)
    ids = (ids + [pad] * (height * width))[: height * width]
    return np.asarray(ids, dtype=np.int64).reshape(height, width)


def longest_run(values: np.ndarray) -> int:
    """Longest run of equal consecutive values.

    >>> longest_run(np.array([1, 1, 2, 2, 2, 1]))
    3
    """
    if len(values) == 0:
        return 0
    change = np.flatnonzero(np.diff(values)) + 1
    bounds = np.concatenate([[0], change, [len(values)]])
    return int(np.diff(bounds).max())


def entropy_bits(values: np.ndarray) -> float:
    counts = np.unique(values, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def completion_metrics(grid: np.ndarray, prefix_rows: int) -> dict:
    """The per-image numbers of one completed [H, W] grid whose first `prefix_rows` rows were the context."""
    gen = grid[prefix_rows:]
    flat = gen.reshape(-1)
    above = grid[prefix_rows - 1 : -1]
    return {"row_repeat": float((gen == above).all(axis=1).mean()),
            "uniform_rows": float((gen == gen[:, :1]).all(axis=1).mean()),
            "longest_run": longest_run(flat) / len(flat), "ttr": len(np.unique(flat)) / len(flat),
            "colour_entropy": entropy_bits(flat)}


def nearest_rmse(images: np.ndarray, train: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For each RGB image [N, H, W, 3] (uint8), RMS distance on a 0–1 scale to its nearest training image."""
    a = images.reshape(len(images), -1).astype(np.float32) / 255.0
    b = train.reshape(len(train), -1).astype(np.float32) / 255.0
    b2 = (b * b).sum(1)
    best = np.full(len(a), np.inf, np.float32)
    for start in range(0, len(b), chunk):
        d = (a * a).sum(1)[:, None] - 2 * a @ b[start : start + chunk].T + b2[None, start : start + chunk]
        best = np.minimum(best, d.min(1))
    return np.sqrt(np.maximum(best, 0.0) / a.shape[1])


def image_metrics(contexts: list[dict], continuations: list[list[int]], train_ids: list[list[int]], palette,
                  height: int, width: int, prefix_rows: int) -> dict:
    """Mean of each per-image number over the completions, and the nearest-training-image distance."""
    grids = [completed_grid(c["context_ids"], x, height, width) for c, x in zip(contexts, continuations)]
    per = [completion_metrics(g, prefix_rows) for g in grids]
    out = {k: float(np.mean([p[k] for p in per])) for k in per[0]} if per else {}
    rgb = np.stack([palette.pixels(g.reshape(-1).clip(0), height, width) for g in grids])
    train_rgb = np.stack([palette.pixels(t, height, width) for t in train_ids])
    out["nearest_train_rmse"] = float(nearest_rmse(rgb, train_rgb).mean()) if len(grids) else math.nan
    out["n"] = len(grids)
    return out
