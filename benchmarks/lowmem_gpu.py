"""Llama-3.1-8B-shaped training on one GPU capped at 80 GiB, per memory mode: peak memory, s/update, tokens/s.

    PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 python benchmarks/lowmem_gpu.py --json $OUT/lowmem.json      # ~6 min
    PARTS=lowmem bash benchmarks/gpu_suite.sh                                                      # the same
    python benchmarks/lowmem_gpu.py --runs 1b:adamw,8b:adamw_kahan_sr --steps 3                    # a subset

No weights can be downloaded on the device machine, so models are random-init at the published shapes
(hyperfit.plan.PRESETS): speed and memory do not depend on the values. The GPU is capped with
torch.cuda.set_per_process_memory_fraction so that an H200 (141 GB) behaves like an 80 GiB card. Each run
is one subprocess (memory returns to zero between runs; an out-of-memory run is a row, not the end):
bf16 weights (fp32 for adamw), activation checkpointing, train.chunked_loss=512, batch 8 × 256, lr 1e-6.
The reference is the paper's recipe, fp32 master weights (adamw): at 8B it does not fit (the row says
so), so the TinyLlama-1.1B shape with adamw gives the tokens/s to compare with.

Not run yet (no GPU in the session that wrote it); `--device cpu --runs tiny:adamw_kahan_sr` checks the
script itself on CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import torch

from hyperfit.memory_modes import MODES, build_optimizer
from hyperfit.plan import PRESETS
from hyperfit.training.step import enable_activation_checkpointing, make_loss_fn

SHAPES = {"8b": PRESETS["llama-3.1-8b"], "1b": PRESETS["tinyllama-1.1b"],
          "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=512)}
DEFAULT_RUNS = "1b:adamw,8b:adamw,8b:adamw_kahan_sr,8b:torchao_8bit_sr,8b:torchao_sr,8b:optimi_kahan"


def build(shape: str, dtype, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, attn_implementation="sdpa")
    with torch.device(device):
        # Built straight in its dtype: an 8B model built in fp32 first would need 32 GB for nothing.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    return model


def one_run(shape: str, name: str, args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total), device)
    model = build(shape, torch.float32 if name == "adamw" else torch.bfloat16, device)
    enable_activation_checkpointing(model)
    model.train()
    autocast = (lambda: torch.autocast("cuda", torch.bfloat16)) if device.type == "cuda" else None
    loss_fn = make_loss_fn(model, chunk=args.chunk, **({"autocast": autocast} if autocast else {}))
    hyper = SimpleNamespace(optimizer=name, lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    # Compiled optimizer step (train.compile's default on CUDA): eager, the 8B Kahan step would hold fp32
    # temporaries of the 2 GiB embedding several times over.
    opt = build_optimizer(model, hyper, compile=device.type == "cuda")
    ids = torch.randint(0, SHAPES[shape]["vocab_size"], (args.batch, args.seq), device=device)
    times = []
    for step in range(args.steps + 1):  # the first update compiles and allocates the state: not timed
        t = time.perf_counter()
        loss = loss_fn(ids) / ids[:, 1:].numel()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t)
    s = sum(times) / len(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"shape": shape, "mode": name, "params": sum(p.numel() for p in model.parameters()), "peak_gib": peak,
            "s_per_update": s, "tokens_per_s": args.batch * args.seq / s, "loss": loss.item(), "status": "ok"}


def in_subprocess(shape: str, name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--one", f"{shape}:{name}", "--device", args.device, "--steps", str(args.steps),
           "--cap-gib", str(args.cap_gib), "--chunk", str(args.chunk), "--batch", str(args.batch),
           "--seq", str(args.seq)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode == 0 and last.startswith("{"):
        return json.loads(last)
    oom = "OutOfMemoryError" in p.stderr or "out of memory" in p.stderr
    return {"shape": shape, "mode": name, "status": "out of memory" if oom else f"failed (rc {p.returncode})",
            "error": p.stderr.strip().splitlines()[-1][:300] if p.stderr.strip() else ""}


def table(rows: list[dict], cap: float) -> list[str]:
    ref = next((r for r in rows if r["shape"] == "1b" and r["mode"] == "adamw" and r["status"] == "ok"), None)
    lines = [f"| shape | mode | B/param | peak GiB (cap {cap:g}) | s/update | tokens/s | vs 1.1B fp32 masters |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['shape']} | {r['mode']} | {MODES[r['mode']].state_bytes:.2f} | {r['status']} | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.3f}×" if ref else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        lines.append(f"| {r['shape']} | {r['mode']} | {MODES[r['mode']].state_bytes:.2f} | {peak} "
                     f"| {r['s_per_update']:.3f} | {r['tokens_per_s']:,.0f} | {ratio} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="comma list of SHAPE:MODE (shapes: 8b, 1b, tiny)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: the run a subprocess does
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=3, help="timed updates after one untimed")
    ap.add_argument("--cap-gib", type=float, default=80.0)
    ap.add_argument("--chunk", type=int, default=512, help="train.chunked_loss")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.one:
        shape, name = args.one.split(":")
        print(json.dumps(one_run(shape, name, args)))
        return
    runs = [r.split(":") for r in args.runs.split(",")]
    unknown = [f"{s}:{m}" for s, m in runs if s not in SHAPES or m not in MODES]
    if unknown:
        sys.exit(f"unknown runs {unknown}: shapes {', '.join(SHAPES)}; modes {', '.join(MODES)}")
    device = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(f"device {device}, torch {torch.__version__}, memory capped at {args.cap_gib:g} GiB", flush=True)
    rows = []
    for shape, name in runs:
        rows.append(in_subprocess(shape, name, args))
        print(json.dumps(rows[-1]), flush=True)
    print("\n".join(table(rows, args.cap_gib)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "cap_gib": args.cap_gib, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
