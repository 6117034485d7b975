"""`hyperfit demo --images`: pretrain a tiny ImageGPT on MNIST here, hyperfit it, complete held-out digits.

    hyperfit demo --images --assets ../shared/assets              # MNIST from assets/images/mnist/
    hyperfit demo --images train.epochs=40                         # overrides the hyperfitting run
    hyperfit demo --images pretrain.train.updates=1200             # overrides the pretraining run

No pretrained ImageGPT can be downloaded offline, so the demo makes its own base model: a 12×12 MNIST ImageGPT
(16 grey clusters fitted on the training digits) pretrained on 4,000 digits with a warmup + cosine schedule
(run `demo-images-base`), then hyperfitted on 256 of those digits (run `demo-images`, whose base rows are the
pretrained model). Both runs share data.seed, num_val and num_contexts, so their held-out digits are the same
and never trained on. The report's grids show each held-out digit's top quarter, the pretrained and the
hyperfitted completions, and the true digit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hyperfit.config import load_config, to_dict
from hyperfit.demo import claim_run_dir
from hyperfit.images.evaluate import COLUMNS
from hyperfit.images.stage import image_config
from hyperfit.runs import RunDir, RunError, load_run_config

MNIST_FILE = "images/mnist/t10k-images-idx3-ubyte.gz"
HELD_OUT = ["data.image_size=12", "data.num_val=128", "data.num_contexts=32", "data.seed=0"]
PRETRAIN = [
    "name=demo-images-base", *HELD_OUT, "data.num_train=4000",
    "model.init=scratch", "model.config={model_type: imagegpt, n_embd: 48, n_layer: 3, n_head: 4, clusters: 16}",
    "train.updates=400", "train.batch_size=32", "train.lr=3e-3", "train.schedule=cosine", "train.warmup_updates=30",
    "train.probe_contexts=8", "train.probe_val=64", "generate.with_base=false", "generate.batch_size=32",
]
HYPERFIT = [
    "name=demo-images", *HELD_OUT, "data.num_train=256",
    "train.lr=3e-3", "train.epochs=60", "train.batch_size=8", "train.probe_every=10", "train.probe_contexts=8",
    "train.probe_val=64", "train.save_every=0", "generate.batch_size=32",
]


def find_mnist(assets: str | None) -> Path:
    for root in (assets, os.environ.get("HYPERFIT_ASSETS")):
        if root:
            path = Path(root) / MNIST_FILE
            if not path.is_file():
                raise RunError(f"assets folder {root} lacks {MNIST_FILE} (the MNIST test images, gzip IDX)")
            return path
    raise RunError("hyperfit demo --images needs the MNIST test images: give the folder holding "
                   f"{MNIST_FILE} with --assets DIR (or HYPERFIT_ASSETS=DIR); in this repository's development "
                   "setup that is ../shared/assets")


def split_overrides(overrides) -> tuple[list[str], list[str]]:
    """(pretraining overrides: those prefixed pretrain., prefix dropped; hyperfitting overrides: the rest).

    >>> split_overrides(["pretrain.train.updates=5", "train.epochs=2"])
    (['train.updates=5'], ['train.epochs=2'])
    """
    pre = [o.removeprefix("pretrain.") for o in overrides if o.startswith("pretrain.")]
    return pre, [o for o in overrides if not o.startswith("pretrain.")]


def demo_images(assets: str | None = None, out_dir: str = "runs", overrides=(), resume: bool = False) -> RunDir:
    """Pretrain (reused when a finished pretraining run with the same settings is there), hyperfit, report."""
    from hyperfit.stages.pipeline import run

    mnist = find_mnist(assets)
    pre, post = split_overrides(overrides)
    common = [f"out_dir={out_dir}", f"data.source={mnist}"]
    base_cfg = load_config(None, [*PRETRAIN, *common, *pre])
    base_dir = RunDir(base_cfg.run_dir)
    if not _finished_with(base_dir, base_cfg):
        claim_run_dir(base_dir, resume and base_dir.config.is_file())
        run(base_cfg, resume=resume and base_dir.config.is_file())
    else:
        print(f"reusing the pretrained base model in {base_dir.final} (same settings)")
    cfg = load_config(None, [*HYPERFIT, *common, f"model.name={base_dir.final}", *post])
    run_dir = RunDir(cfg.run_dir)
    resume = resume and run_dir.config.is_file()
    claim_run_dir(run_dir, resume)
    run(cfg, resume=resume)
    print_summary(run_dir)
    return run_dir


def _finished_with(run_dir: RunDir, cfg) -> bool:
    if not (run_dir.report.is_file() and run_dir.final.is_dir()):
        return False
    saved, cfg = load_run_config(run_dir), image_config(cfg, run_dir)  # saved: the lengths the images set
    return to_dict(saved.data) == to_dict(cfg.data) and to_dict(saved.train) == to_dict(cfg.train) and \
        saved.model.config == cfg.model.config


def print_summary(run_dir: RunDir) -> None:
    table = json.loads((run_dir.metrics / "images.json").read_text())
    keys = (*COLUMNS, "bits_per_dim")
    print("\n" + " | ".join(f"{k:>18s}" for k in ("completions", *keys)))
    for tag in ("base-greedy", "greedy", "base-temperature", "temperature", "reference"):
        if tag in table:
            row = table[tag]
            cells = [f"{row[k]:>18.3f}" if isinstance(row.get(k), float) else f"{'–':>18s}" for k in keys]
            print(" | ".join([f"{'true images' if tag == 'reference' else tag:>18s}", *cells]))
    print(f"\ngrids: {run_dir.path / 'plots'}/images-*.png (context | pretrained | hyperfitted | true)")
    print(f"report: {run_dir.report}")
