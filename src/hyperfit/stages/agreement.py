"""Top-1 agreement between models on the same held-out text (the paper's shuffling experiment).

    hyperfit agreement runs/seed0 runs/seed1 runs/seed2 [--base] [--out DIR]

The paper hyperfits the same model on the same samples in different orders and finds the runs agree on
the argmax next token only ~70 % of the time, although each reaches near-zero training loss. This
computes that matrix: for every pair of models, the share of validation positions whose argmax agrees.
Validation text is the first run's data/val.jsonl, so every model is measured on the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hyperfit.metrics.predictive import top1_agreement, top1_predictions
from hyperfit.models import load_for_inference
from hyperfit.runs import RunDir, load_run_config, write_json, write_text
from hyperfit.stages.report import markdown_table


def agreement(run_dirs: Sequence[str | Path], include_base: bool = False, out: str | Path | None = None,
              max_sequences: int = 64) -> dict:
    """Agreement matrix of the runs' final models (and the base model); writes agreement.{md,json}."""
    runs = [RunDir(p) for p in run_dirs]
    for run in runs:
        run.require(run.final, "hyperfit run (or train)")
    cfg = load_run_config(runs[0])
    val = [r["input_ids"] for r in runs[0].read_samples("val")][:max_sequences]
    models = [("base", runs[0].weights_for("base"))] if include_base else []
    models += [(run.path.name, run.weights_for("final")) for run in runs]
    predictions = []
    for _, path in models:
        model = load_for_inference(cfg.model, path).eval()
        predictions.append(top1_predictions(model, val))
        del model
    matrix = top1_agreement(predictions)
    names = [n for n, _ in models]
    result = {"models": names, "matrix": matrix, "positions": int(predictions[0].numel()), "sequences": len(val)}
    out = Path(out) if out is not None else runs[0].path
    write_json(out / "agreement.json", result)
    rows = [[name, *row] for name, row in zip(names, matrix)]
    write_text(out / "agreement.md", "\n".join(
        ["# Top-1 agreement", "", f"Share of {result['positions']} validation positions ({len(val)} sequences of "
         f"{runs[0].path.name}) where two models' argmax next tokens agree.", ""]
        + markdown_table(["", *names], rows)) + "\n")
    return result
