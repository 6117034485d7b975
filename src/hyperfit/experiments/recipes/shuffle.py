"""Fig. 5 (left): do models hyperfitted on the same data in another order predict the same next tokens?

    hyperfit experiment configs/experiments/shuffle.yaml     # report.md "## Fig. 5 left", agreement.json,
                                                             # plots/agreement_heatmap.png

The cells differ only in the order of the same samples: train.seed (a new shuffle every epoch) and
train.order_swaps (a minor reshuffle: a few batches of the first epoch swapped). For every pair of finished
cells, and the original model, the share of validation positions (the first cell's data/val.jsonl, so all
models see the same tokens) where the two argmax next tokens agree. Pairs are grouped by which axes differ.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from statistics import fmean

from hyperfit.experiments.recipes.common import done
from hyperfit.runs import RunDir, json_sha256, load_run_config, write_json
from hyperfit.stages.report import markdown_table, pyplot, save_figure

PAPER_AGREEMENT = 0.70  # the paper: hyperfitted models agree on the top-1 token ~70 % of the time
PAPER = ("The paper (Fig. 5 left, TinyLlama): models hyperfitted on the same data in different orders agree on "
         f"the argmax next token only ~{PAPER_AGREEMENT:.0%} of the time, although each reaches near-zero "
         "training loss; even a minor reshuffle changes many predictions.")
MAX_SEQUENCES = 64


def predictions(cells) -> dict:
    """{name: argmax next tokens on the first cell's validation text}, the original model first."""
    from hyperfit.metrics.predictive import top1_predictions  # the torch boundary
    from hyperfit.models import load_for_inference

    first = RunDir(cells[0].path)
    cfg = load_run_config(first)
    val = [r["input_ids"] for r in first.read_samples("val")][:MAX_SEQUENCES]
    out = {}
    for name, path in [("original", first.weights_for("base")),
                       *((c.name, RunDir(c.path).weights_for("final")) for c in cells)]:
        model = load_for_inference(cfg.model, path).eval()
        out[name] = top1_predictions(model, val)
        del model
    return out


def agreement_matrix(cells, root: Path) -> dict:
    """agreement.json: names and matrix; recomputed only when the set of finished cells changed."""
    key = json_sha256(sorted(c.key for c in cells))
    path = root / "agreement.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("cells_sha256") == key:
            return saved
    from hyperfit.metrics.predictive import top1_agreement

    preds = predictions(cells)
    result = {"cells_sha256": key, "models": list(preds), "matrix": top1_agreement(list(preds.values())),
              "positions": int(next(iter(preds.values())).numel())}
    write_json(path, result)
    return result


def pair_kind(a: dict, b: dict) -> str:
    """Which axes two cells differ in, e.g. 'train.order_swaps' (a minor reshuffle) or 'train.seed'.

    >>> pair_kind({"train.seed": 0, "train.order_swaps": 0}, {"train.seed": 0, "train.order_swaps": 2})
    'train.order_swaps'
    """
    return " + ".join(k for k in a if a[k] != b.get(k)) or "same"


def groups(cells, result: dict) -> dict[str, list[float]]:
    index = {n: i for i, n in enumerate(result["models"])}
    m = result["matrix"]
    out: dict[str, list[float]] = {}
    for a, b in combinations(cells, 2):
        out.setdefault(pair_kind(a.values, b.values), []).append(m[index[a.name]][index[b.name]])
    out["original vs hyperfitted"] = [m[0][index[c.name]] for c in cells]
    return out


def draw_heatmap(result: dict, out: Path) -> Path:
    plt = pyplot()
    names, matrix = result["models"], result["matrix"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 0.9 + 0.6 * len(names)))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(f"Top-1 agreement on {result['positions']} validation positions")
    return save_figure(fig, out)


def summarize(spec, cells, rows, root: Path) -> list[str]:
    finished = done(cells)
    lines = ["## Fig. 5 left: top-1 agreement between reshuffled runs", "", PAPER, ""]
    if len(finished) < 2:
        return lines + ["(fewer than two finished cells: nothing to compare yet)", ""]
    result = agreement_matrix(finished, root)
    table = [[kind, len(v), fmean(v), min(v), max(v), PAPER_AGREEMENT if kind != "original vs hyperfitted" else None]
             for kind, v in groups(finished, result).items()]
    lines += markdown_table(["pairs differing in", "pairs", "mean agreement", "min", "max", "paper"], table)
    plot = draw_heatmap(result, root / "plots" / "agreement_heatmap.png")
    return lines + ["", f"Share of {result['positions']} next-token positions of held-out text where two models' "
                    "argmax agrees (agreement.json). train.order_swaps: a minor reshuffle (batches of the first "
                    "epoch swapped); train.seed: a new order every epoch.", "",
                    f"![agreement heatmap]({plot.relative_to(root)})", ""]
