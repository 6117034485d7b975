"""Seconds and training-state memory per update: full training vs LoRA vs late-stage LoRA, one process.

    python benchmarks/lora_update.py runs/stories260K-hf                       # CPU: the recipe's model
    python benchmarks/lora_update.py TinyLlama/TinyLlama_v1.1 --seq 256 --steps 20   # one GPU

Every variant runs the training loop's own update (hyperfit.training.loop._update, fp32 weights, AdamW) on
the same batches (global batch 8). "state MiB" is what the update keeps in memory besides activations: every
weight (trained or frozen) plus, per trained parameter, its gradient and AdamW's two moments (4 + 8 bytes);
"peak GiB" is torch.cuda.max_memory_allocated on CUDA (activations included) and "–" on a CPU.
"""

from __future__ import annotations

import argparse
import time

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from hyperfit.config import TrainConfig
from hyperfit.training.loop import _update
from hyperfit.training.lora import add_adapters
from hyperfit.training.optim import build_optimizer
from hyperfit.training.step import make_loss_fn

VARIANTS = {"full": {}, "lora": {"method": "lora"}, "late_lora": {"method": "lora"}}  # late: --late blocks


def measure(name: str, model_path: str, cfg: TrainConfig, ids: torch.Tensor, steps: int) -> dict:
    accelerator = Accelerator()
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if cfg.method == "lora":
        add_adapters(model, cfg)
    optimizer = build_optimizer(model, cfg, device=accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)
    loss_fn = make_loss_fn(model)
    ids = ids.to(accelerator.device)
    tokens = ids.shape[0] * (ids.shape[1] - 1)
    on_cuda = accelerator.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    _update(model, optimizer, accelerator, ids, ids.shape[0], tokens, cfg, loss_fn)  # warm-up: optimizer state
    if on_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        _update(model, optimizer, accelerator, ids, ids.shape[0], tokens, cfg, loss_fn)
    if on_cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    params = list(model.parameters())
    trained = sum(p.numel() for p in params if p.requires_grad)
    state = sum(p.numel() * p.element_size() for p in params) + 12 * trained
    return {"variant": name, "trainable": trained, "seconds_per_update": seconds, "state_mib": state / 2**20,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--late", default="last:1", help="train.lora_layers of late_lora (TinyLlama: last:5)")
    args = ap.parse_args()
    torch.manual_seed(0)
    config = AutoModelForCausalLM.from_pretrained(args.model).config
    ids = torch.randint(0, config.vocab_size, (8, args.seq))
    print(f"{'variant':10s} {'trainable':>10s} {'s/update':>9s} {'state MiB':>10s} {'peak GiB':>9s}")
    for name, over in VARIANTS.items():
        layers = args.late if name == "late_lora" else "all"
        cfg = TrainConfig(lr=1e-3, lora_rank=args.rank, lora_alpha=2 * args.rank, lora_layers=layers, **over)
        r = measure(name, args.model, cfg, ids, args.steps)
        peak = "–" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"{name:10s} {r['trainable']:>10,} {r['seconds_per_update']:9.4f} {r['state_mib']:10.2f} {peak:>9s}")


if __name__ == "__main__":
    main()
