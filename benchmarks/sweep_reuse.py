"""What reuse across a sweep's cells saves: an 8-cell quantity sweep on stories260K, with and without it.

    hyperfit demo --assets ../shared/assets --help >/dev/null   # or any way to get runs/stories260K-hf and
    PYTHONPATH=src python benchmarks/sweep_reuse.py --assets ../shared/assets   # runs/assets/ (done here)

Both sweeps run in this process, after one untimed warm-up cell (imports, tokenizer load), on fresh output
folders: `run_experiment(..., reuse=False)` computes the tokenized source, the base model's continuations
and its validation metrics in every cell; `reuse=True` computes them once (hyperfit.reuse) and the other
cells read them from <experiment>/cache/. Cells: configs/experiments/quantity.yaml with 8 values of
data.num_train, one data seed, and --updates updates each (few: what reuse saves is the work around the
training, which does not change with the budget). Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hyperfit import reuse  # noqa: E402
from hyperfit.demo import find_assets  # noqa: E402
from hyperfit.experiments import load_spec, run_experiment  # noqa: E402
from hyperfit.llama2c import import_llama2c  # noqa: E402

SAMPLES = [8, 16, 24, 32, 48, 64, 96, 128]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--assets", default=str(ROOT.parent / "shared" / "assets"))
    p.add_argument("--updates", type=int, default=8)
    p.add_argument("--contexts", type=int, default=32, help="held-out contexts continued per model")
    p.add_argument("--new-tokens", type=int, default=128)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep_reuse-"))
    llama2c, text = find_assets(args.assets, work)
    model = work / "stories260K-hf"
    import_llama2c(llama2c, model)
    settings = [f"model.name={model}", f"data.source={text}", f"train.updates={args.updates}",
                f"data.num_contexts={args.contexts}", f"generate.max_new_tokens={args.new_tokens}", "data.seed=0"]
    spec = ROOT / "configs" / "experiments" / "quantity.yaml"
    run_experiment(load_spec(spec, overrides=[*settings, "data.num_train=[8]"]), "local", work / "warmup")
    seconds, counts = {}, {}
    for label, on in (("without reuse", False), ("with reuse", True)):
        reuse.forget()  # the warm-up's in-process values too: each sweep starts cold
        start = time.perf_counter()
        summary = run_experiment(load_spec(spec, overrides=[*settings, f"data.num_train={SAMPLES}"]), "local",
                                 work / label.replace(" ", "-"), reuse=on)
        seconds[label] = time.perf_counter() - start
        counts[label] = dict(reuse.stats)
        assert not summary.failed and len(summary.done) == len(SAMPLES), summary.line()
    ratio = seconds["without reuse"] / seconds["with reuse"]
    print(f"\n| sweep ({len(SAMPLES)} cells, {args.updates} updates, {args.contexts} contexts × {args.new_tokens} "
          "tokens) | seconds |\n|---|---|")
    for label, s in seconds.items():
        print(f"| {label} | {s:.1f} |")
    print(f"\nratio without / with reuse: {ratio:.2f}×; store hits and misses with reuse: {counts['with reuse']}")
    print(json.dumps({"cells": len(SAMPLES), "updates": args.updates, "contexts": args.contexts,
                      "new_tokens": args.new_tokens, "seconds": seconds, "ratio": ratio,
                      "store": counts["with reuse"], "machine": platform.machine(), "work": str(work)}))


if __name__ == "__main__":
    main()
