"""Fig. 4: the probability each model gives the actual next token of a text, and its top-1 probability,
original against hyperfitted. Hyperfitting pushes the top-1 probability towards 1 at almost every position,
whether or not the top-1 token is the text's."""

from __future__ import annotations

from pathlib import Path

from hyperfit.runs import RunDir, load_run_config, write_json
from hyperfit.stages.report import pyplot, save_figure

MAX_TOKENS = 64


def token_probabilities(model, ids: list[int]) -> tuple[list[float], list[float]]:
    """(p(actual next token), p(top-1 token)) at each position of `ids` after the first."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, :-1].float()
    p = logits.softmax(-1)
    target = torch.tensor(ids[1:])
    return p[torch.arange(len(target)), target].tolist(), p.max(-1).values.tolist()


def draw(runs: list[RunDir], out: Path, text: str | None = None, **_) -> list[Path]:
    from hyperfit.models import load_for_inference, load_tokenizer  # the torch boundary

    run = runs[0]
    cfg = load_run_config(run)
    tokenizer = load_tokenizer(cfg.model)
    ids = (tokenizer(text)["input_ids"] if text else run.read_samples("val")[0]["input_ids"])[:MAX_TOKENS]
    labels = [tokenizer.decode([t]) for t in ids[1:]]
    series = {}
    for name, path in [("original", None), *((f"hyperfitted ({r.path.name})", r.weights_for("final")) for r in runs)]:
        model = load_for_inference(cfg.model, path).eval()
        series[name] = token_probabilities(model, ids)
        del model
    write_json(out / "probabilities.json", {"tokens": labels, **{k: {"actual": a, "top1": b}
                                                                   for k, (a, b) in series.items()}})
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.22 * len(labels)), 5.5), sharex=True)
    for name, (actual, top1) in series.items():
        axes[0].plot(actual, marker="o", markersize=3, label=name)
        axes[1].plot(top1, marker="o", markersize=3, label=name)
    axes[0].set(ylabel="p(next token of the text)", ylim=(0, 1.02))
    axes[1].set(ylabel="p(top-1 token)", ylim=(0, 1.02))
    axes[1].set_xticks(range(len(labels)), [repr(t)[1:-1] for t in labels], rotation=90, fontsize=7)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Next-token probabilities before and after hyperfitting (Fig. 4)")
    return [out / "probabilities.json", save_figure(fig, out / "probabilities.png")]
