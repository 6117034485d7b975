"""The before/after table of `hyperfit bench` results (metrics/bench-<tag>.json) for report.md."""

from __future__ import annotations

import json

from hyperfit.runs import RunDir

# lm-eval's metric names that are lower-is-better, so the change column can say which way is worse.
LOWER_IS_BETTER = ("perplexity", "bits_per_byte")


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def bench_lines(run: RunDir, label: str) -> list[str]:
    """A markdown section per bench file: task, metric, original, hyperfitted, change."""
    lines = []
    for path in sorted(run.metrics.glob("bench-*.json")):
        b = json.loads(path.read_text())
        models = b.get("models", {})
        base, final = models.get("base", {}), models.get("final", {})
        limit = f", at most {b['limit']} documents per task" if b.get("limit") else ""
        lines += [f"## Benchmarks: {label} ({path.name}; lm-evaluation-harness {b.get('lm_eval', '?')}{limit})", "",
                  "| task | metric | original | hyperfitted | change |", "|---|---|---|---|---|"]
        for task in b.get("tasks", []):
            metrics = sorted(k for k in {*base.get(task, {}), *final.get(task, {})}
                             if not k.endswith("_stderr") and k != "sample_len")  # sample_len: documents scored
            for metric in metrics:
                before, after = base.get(task, {}).get(metric), final.get(task, {}).get(metric)
                change = f"{after - before:+.4g}" if before is not None and after is not None else "–"
                lines.append(f"| {task} | {metric} | {_fmt(before)} | {_fmt(after)} | {change} |")
        lines += ["", "original: model.name before training; hyperfitted: checkpoints/final. Lower is better for "
                  f"{', '.join(LOWER_IS_BETTER)}; higher for accuracies.", ""]
    return lines
