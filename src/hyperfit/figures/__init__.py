"""`hyperfit figure KIND RUN...`: the paper's per-run figures, each as a PNG (and HTML for Fig. 1).

    hyperfit figure repetition runs/demo [--index 0] [--n 3]        # Fig. 1: repeated n-grams coloured
    hyperfit figure probabilities runs/demo [--text "Once upon"]     # Fig. 4: next-token probabilities, before/after
    hyperfit figure ttr runs/a runs/b [--tag greedy]                 # Fig. 9: TTR by position, runs on one plot
    hyperfit figure curves runs/a runs/b                             # training curves (probes) of several runs

One module per figure; each `draw(runs, out, options) -> list[Path]`. They read run directories only (and
load models for `probabilities`, lazily: the torch boundary).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from hyperfit.errors import ConfigError, did_you_mean
from hyperfit.runs import RunDir

FIGURES = {
    "repetition": "Fig. 1: one continuation with its repeated n-grams coloured (HTML + PNG), original and hyperfitted",
    "probabilities": "Fig. 4: probability of each next token of a text under the original and the hyperfitted model",
    "ttr": "Fig. 9: TTR of the window ending at each generated position, several runs and the human text",
    "curves": "training curves of several runs: training loss, validation loss, greedy TTR against updates",
}


def draw(kind: str, runs: Sequence[str | Path], out: Path | None = None, **options) -> list[Path]:
    """Draw figure `kind` for `runs` into `out` (default: the first run's plots/ folder); returns the files."""
    if kind not in FIGURES:
        raise ConfigError(f"figure {kind!r} is unknown; known: {', '.join(FIGURES)}.{did_you_mean(kind, FIGURES)}")
    dirs = [RunDir(r) for r in runs]
    for run in dirs:
        if not run.config.is_file():
            raise ConfigError(f"{run.path} is not a run directory (no config.yaml); give folders `hyperfit run` wrote")
    module = importlib.import_module(f"hyperfit.figures.{kind}")
    return module.draw(dirs, Path(out) if out else dirs[0].path / "plots", **options)
