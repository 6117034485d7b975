"""Fig. 9: TTR of the window ending at each generated position, several runs (or models) on one plot, the
first run's original model and human continuations beside them."""

from __future__ import annotations

from pathlib import Path

from hyperfit.metrics.repetition import ttr_by_position
from hyperfit.runs import RunDir, load_run_config, read_jsonl
from hyperfit.stages.report import pyplot, save_figure


def draw(runs: list[RunDir], out: Path, tag: str = "greedy", window: int | None = None, **_) -> list[Path]:
    window = window or load_run_config(runs[0]).evaluate.window
    curves = {}
    first = runs[0]
    if first.generation_file(f"base-{tag}").is_file():
        curves["original"] = [r["continuation_ids"] for r in read_jsonl(first.generation_file(f"base-{tag}"))]
    for run in runs:
        if run.generation_file(tag).is_file():
            curves[run.path.name] = [r["continuation_ids"] for r in read_jsonl(run.generation_file(tag))]
    longest = max((len(s) for seqs in curves.values() for s in seqs), default=0)
    curves["human"] = [c["reference_ids"][:longest] for c in first.read_samples("contexts")]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, seqs in curves.items():
        curve = ttr_by_position(seqs, window)
        if len(curve):
            ax.plot(range(window, window + len(curve)), curve, label=name, linestyle="--" if name == "human" else "-")
    ax.set(title=f"TTR of the {window} tokens ending at each position ({tag})", xlabel="generated tokens",
           ylabel="TTR")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [save_figure(fig, out / "ttr_by_position.png")]
