"""Grokking / double descent: train far past zero training loss, with and without weight decay, and watch
whether validation loss and greedy TTR recover long after the training loss reached zero.

    hyperfit experiment configs/experiments/grokking.yaml    # report.md "## Grokking", grokking.csv,
                                                             # plots/grokking_curves.png

From each cell's probe rows: when the training loss first reached ~0 (curves.NEAR_ZERO), the validation loss
and greedy TTR then, at their best, and at the end of the run.
"""

from __future__ import annotations

from pathlib import Path

from hyperfit.experiments.recipes.common import done, save_table
from hyperfit.experiments.recipes.curves import NEAR_ZERO, first_near_zero, probe_rows, val_minimum
from hyperfit.stages.report import markdown_table, pyplot, save_figure

COLUMNS = ("zero_loss_step", "val_loss_at_zero", "ttr_at_zero", "best_val_loss", "best_val_step", "final_step",
           "final_train_loss", "final_val_loss", "final_ttr")
PAPER = ("The paper (its discussion of grokking and double descent) asks whether training long past zero "
         "training loss, as in grokking (which needs weight decay), brings the validation loss back down; the "
         "hyperfitting runs stop at 20 epochs and report the validation loss rising while greedy TTR rises. "
         "This recipe is the missing long run: rows where final_val_loss falls below val_loss_at_zero would be "
         "the late recovery grokking predicts.")


def cell_numbers(probes: list[dict]) -> dict:
    zero, best, last = first_near_zero(probes), val_minimum(probes), probes[-1] if probes else {}
    return {"zero_loss_step": zero and zero["step"], "val_loss_at_zero": zero and zero.get("val_loss"),
            "ttr_at_zero": zero and zero.get("greedy_ttr"), "best_val_loss": best and best["val_loss"],
            "best_val_step": best and best["step"], "final_step": last.get("step"),
            "final_train_loss": last.get("train_loss"), "final_val_loss": last.get("val_loss"),
            "final_ttr": last.get("greedy_ttr")}


def draw_curves(curves: dict[str, list[dict]], out: Path) -> Path | None:
    if not any(curves.values()):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for name, probes in curves.items():
        steps = [p["step"] for p in probes]
        for ax, key in zip(axes, ("train_loss", "val_loss", "greedy_ttr")):
            ax.plot(steps, [p.get(key) for p in probes], marker=".", label=name)
    for ax, label in zip(axes, ("training loss", "validation loss", "greedy TTR (probe)")):
        ax.set(xlabel="update", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].axhline(NEAR_ZERO, color="grey", linestyle=":", linewidth=1)
    axes[2].legend(fontsize=7)
    fig.suptitle("Long training past zero loss, by cell")
    return save_figure(fig, out)


def summarize(spec, cells, rows, root: Path) -> list[str]:
    curves = {c.name: probe_rows(c.path) for c in done(cells)}
    per = [{"cell": name, **cell_numbers(p)} for name, p in curves.items() if p]
    save_table(root, "grokking", ["cell", *COLUMNS], per)
    lines = ["## Grokking: long after zero training loss", "", PAPER, ""]
    if not per:
        return lines + ["(no finished cell with probes yet: the spec must set train.probe_every_updates)", ""]
    lines += markdown_table(["cell", *COLUMNS], [[r[k] for k in ["cell", *COLUMNS]] for r in per])
    lines += ["", f"zero_loss_step: the first probe with training loss ≤ {NEAR_ZERO} (blank: never reached); "
              "_at_zero: the validation loss and greedy TTR (probe contexts) then; final_: the last probe.", ""]
    plot = draw_curves({k: v for k, v in curves.items() if v}, root / "plots" / "grokking_curves.png")
    return lines + ([f"![grokking curves]({plot.relative_to(root)})", ""] if plot else [])
