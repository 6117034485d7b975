"""Training curves of several runs on one figure: training loss, validation loss and greedy TTR (the probe
rows of train_log.jsonl) against updates."""

from __future__ import annotations

from pathlib import Path

from hyperfit.runs import RunDir
from hyperfit.stages.report import probes, pyplot, save_figure


def draw(runs: list[RunDir], out: Path, **_) -> list[Path]:
    series = {run.path.name: probes(run) for run in runs}
    if not any(series.values()):
        raise FileNotFoundError("no probe rows in these runs' train_log.jsonl (train with train.probe_every or "
                                "train.probe_every_updates)")
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, rows in series.items():
        for ax, key in zip(axes, ("train_loss", "val_loss", "greedy_ttr")):
            ax.plot([r["step"] for r in rows], [r.get(key) for r in rows], marker="o", markersize=3, label=name)
    for ax, title in zip(axes, ("training loss (log)", "validation loss", "greedy TTR (probe)")):
        ax.set(title=title, xlabel="update")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].legend(fontsize=8)
    return [save_figure(fig, out / "training_curves_runs.png")]
