"""Seconds per training update (global batch 8 × seq), baseline and fast paths in one process.

    python benchmarks/train_step.py                               # tiny model on CPU, seconds
    python benchmarks/train_step.py --size 1b --steps 50          # TinyLlama-1.1B shape on one GPU

Every variant starts from the same random init and trains on the same batches at the same lr, so the
loss trajectories are comparable. The table compares each row with a reference variant, named in its
header and stored as "reference" in the JSON (rows: "max_dloss_vs_ref"): `plain` when it ran (bf16
autocast + fused AdamW, eager: the training loop without these levers), else the first variant that
ran (on a CPU, where `plain` is not a default, that is fp32_eager). Speed-ups are also given against
fp32_eager (stored as "baseline"); when it did not run, the reference stands in and the header says so.
MFU counts 6·N FLOPs per token for the N matmul parameters (all but the input embedding, a lookup; a tied
output head once) plus attention's 12·L·d·T (step_flops); it is "–" where the device's peak is unknown
(any CPU). "peak GiB" is torch.cuda.max_memory_allocated per variant on CUDA, but on a CPU the process's
max RSS, which never resets (the JSON's "peak_kind" says which). The fast variants call
hyperfit.training.step and hyperfit.training.optim, the code `hyperfit train` runs.

Variants: fp32_eager (fp32 compute, torch's default AdamW), plain (bf16 autocast, fused AdamW),
compile_model (+ torch.compile of the model), compile (+ compiled cross-entropy: train.compile=true),
master (compile + bf16 model weights with fp32 masters in the optimizer: benchmarks/master_adamw.py),
kahan (bf16 weights + Kahan AdamW, compiled: train.optimizer=adamw_kahan), kahan_sr (the same with
stochastic rounding: adamw_kahan_sr). A `_eager` suffix runs
master or kahan uncompiled (the CPU defaults). loop: what `hyperfit train` itself runs per update
(hyperfit.training.loop._update on an accelerate-prepared model and optimizer, with the training loop's defaults for
this device); it should match `compile` on CUDA and `fp32_eager` on a CPU, and a gap means the product does
work the benchmark does not (twice so far: a foreach instead of the fused AdamW, and fp32 logits).
Unknown names in --variants or --profile are refused before any model is built. `--profile` alone
prints the kernels of every variant run; `--profile kahan,loop` those of the named ones.
"""

from __future__ import annotations

import argparse
import gc
import sys
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SIZES,
    build_model,
    device_name,
    dump,
    kernel_table,
    now,
    peak_flops,
    peak_gib,
    peak_kind,
    peak_note,
    reset_peak,
)

# Every name setup() knows; anything else would silently run as plain fp32 AdamW.
VARIANTS = ("fp32_eager", "plain", "compile_model", "compile", "loop", "master", "kahan", "master_eager",
            "kahan_eager", "kahan_sr", "kahan_sr_eager")
GPU_VARIANTS = ("fp32_eager", "plain", "compile", "loop", "master", "kahan", "kahan_sr", "compile_model")
CPU_VARIANTS = ("fp32_eager", "loop", "master_eager", "kahan_eager", "kahan_sr_eager")
# What a bare `--profile` stands for, resolved to the variants once they are known. Not a string: argparse
# would pass a string const through variant_list, which refuses it.
PROFILE_ALL = object()


class _Opt:  # the fields build_optimizer reads from TrainConfig
    def __init__(self, lr, optimizer):
        self.lr, self.optimizer, self.betas, self.eps, self.weight_decay = lr, optimizer, (0.9, 0.999), 1e-8, 0.0


def setup(variant: str, size: str, device, lr: float):
    """(model, optimizer, loss_fn, update) for one variant: loss_fn(ids) is the summed loss (its forward
    under the variant's autocast), update(ids, tokens) one whole update that returns its mean loss."""
    if variant == "loop":
        return setup_loop(size, device, lr)
    from hyperfit.memory_modes import build_optimizer
    from hyperfit.training.step import ce_sum, compiled_ce_sum
    from master_adamw import MasterAdamW

    kahan = variant.startswith("kahan")
    model = build_model(size, device, torch.bfloat16 if kahan else torch.float32)
    model.train()
    compiled = variant in ("compile_model", "compile", "kahan", "kahan_sr", "master")
    if variant == "fp32_eager":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # torch's default (foreach)
    elif variant.startswith("master"):
        opt = MasterAdamW.convert(model, lr=lr, weight_decay=0.0, compile=compiled)  # model now bf16
    else:
        mode = ("adamw_kahan_sr" if variant.startswith("kahan_sr") else "adamw_kahan") if kahan else "adamw"
        opt = build_optimizer(model, _Opt(lr, mode), compile=compiled)
    forward = torch.compile(model) if compiled else model
    ce = compiled_ce_sum() if variant in ("compile", "kahan", "kahan_sr", "master") else ce_sum

    bf16 = variant != "fp32_eager" and torch.device(device).type == "cuda"

    def loss_fn(ids):
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext():
            logits = forward(input_ids=ids, use_cache=False).logits  # as hyperfit.training.step.make_loss_fn
        return ce(logits, ids)

    def update(ids, tokens):
        loss = loss_fn(ids) / tokens
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return model, opt, loss_fn, update


def setup_loop(size: str, device, lr: float):
    """`hyperfit train`'s own update: accelerate, the training loop's optimizer, autocast and compile defaults."""
    from accelerate import Accelerator

    from hyperfit.config import TrainConfig
    from hyperfit.training.engine import precision_mode, prepare
    from hyperfit.training.loop import _update
    from hyperfit.training.step import make_loss_fn, own_autocast, use_compile

    cfg = TrainConfig(lr=lr, weight_decay=0.0)
    accelerator = Accelerator(mixed_precision=precision_mode(cfg), cpu=torch.device(device).type == "cpu")
    model = build_model(size, device)
    model.train()
    compiled = use_compile(cfg.compile, accelerator.device)
    model, opt = prepare(accelerator, model, cfg, micro=cfg.batch_size, compiled=compiled)
    loss_fn = make_loss_fn(model, compile=compiled, autocast=own_autocast(accelerator, model))

    def update(ids, tokens):
        return _update(model, opt, accelerator, ids, cfg.batch_size, tokens, cfg, loss_fn)

    return model, opt, loss_fn, update


def breakdown(loss_fn, opt, batches, tokens, device, steps):
    """(forward+backward, optimizer step) seconds, each timed alone with a sync between them (so their sum
    is a little above the pipelined s/step). Runs after the timed loop: the trajectory is not touched."""
    fb = op = 0.0
    for i in range(steps):
        t = now(device)
        loss = loss_fn(batches[i % len(batches)]) / tokens
        loss.backward()
        t1 = now(device)
        opt.step()
        opt.zero_grad(set_to_none=True)
        fb, op = fb + t1 - t, op + now(device) - t1
    return fb / max(steps, 1), op / max(steps, 1)


def variant_list(text: str) -> tuple[str, ...]:
    """argparse type of --variants/--profile: a comma list of known variant names, checked before any model
    is built (setup() has no else branch that could refuse a typo: it would train it as plain fp32)."""
    names = tuple(text.split(","))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown variant(s) {', '.join(map(repr, unknown))} in {text!r}; "
            f"use a comma list of: {', '.join(VARIANTS)}")
    return names


def run_variant(variant, args, device, batches):
    model, opt, loss_fn, update = setup(variant, args.size, device, args.lr)
    tokens = batches[0].numel() - batches[0].shape[0]
    steps = min(args.steps, args.baseline_steps) if variant == "fp32_eager" else args.steps
    losses, t_start, t_first = [], None, None
    reset_peak(device)
    t0 = now(device)
    for i in range(steps):
        if i == args.warmup:
            t_start = now(device)  # compile and allocator warm-up happen before this point
        losses.append(update(batches[i % len(batches)], tokens))
        if i == 0:
            t_first = now(device) - t0
    per_step = (now(device) - t_start) / (steps - args.warmup)
    fwd_bwd, opt_s = breakdown(loss_fn, opt, batches, tokens, device, args.split_steps)
    if variant in args.profile:
        print(f"kernels of one {variant} update (after the timed ones):")
        print(kernel_table(partial(breakdown, loss_fn, opt, batches, tokens, device, 1), device))
    n_params, n_matmul = sum(p.numel() for p in model.parameters()), matmul_params(model)
    peak = peak_gib(device)
    del model, opt, loss_fn
    gc.collect()  # the next variant builds a fresh 1.1B model: free this one's ~18 GB first
    torch._dynamo.reset()  # compiled graphs hold on to the model they were traced from
    reset_peak(device)
    return {"variant": variant, "s_per_step": per_step, "fwd_bwd_s": fwd_bwd, "opt_s": opt_s,
            "first_step_s": t_first, "steps": steps,
            "peak_gib": peak, "losses": torch.stack(losses).float().tolist(), "params": n_params,
            "matmul_params": n_matmul}


def _row(rows, variant):
    return next((r for r in rows if r.get("variant") == variant and "error" not in r), None)


def dloss(row, ref) -> float:
    """Largest difference of the two loss trajectories over their common steps."""
    n = min(len(row["losses"]), len(ref["losses"]))
    return max(abs(a - b) for a, b in zip(row["losses"][:n], ref["losses"][:n]))


def matmul_params(model) -> int:
    """Parameters that cost FLOPs per token: all but the input embedding (a lookup: no FLOPs), plus the output
    head counted once even when tied to that embedding (the head's matmul runs either way). Tiny shape,
    untied: 2 layers × 36,992 + final norm 64 + head 512 × 64 = 106,816 (of 139,584 parameters)."""
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not emb) + (head.numel() if head is emb else 0)


def step_flops(n_matmul: int, shape: dict, seq: int, batch: int = 8) -> int:
    """FLOPs of one update (forward + backward) by the usual MFU convention (PaLM, appendix B): 6·N per token
    for the N matmul parameters (2 forward, 4 backward), plus 12·L·d·T per token for attention's scores and
    weighted sum (counted in full although the mask is causal)."""
    L, d = shape["num_hidden_layers"], shape["hidden_size"]
    return (6 * n_matmul + 12 * L * d * seq) * batch * seq


def mfu(row, args, device) -> float | None:
    peak = peak_flops(device)
    if peak is None:
        return None
    return step_flops(row["matmul_params"], SIZES[args.size], args.seq) / row["s_per_step"] / peak


def references(ok: list[dict]) -> tuple[dict | None, dict | None]:
    """(reference, speed baseline) among the successful rows: the reference is `plain` when it ran, else the
    first row; the baseline is fp32_eager when it ran, else the reference (the header names whichever)."""
    ref = _row(ok, "plain") or (ok[0] if ok else None)
    return ref, _row(ok, "fp32_eager") or ref


def table(ok: list[dict], ref: dict, base: dict) -> list[str]:
    """The summary table's lines. Its headers name the rows compared against, so a CPU run (no `plain`)
    does not print a `plain` column that is really fp32_eager; one column when both are the same row."""
    against = [base] if base is ref else [base, ref]
    speed_heads = [f"x {r['variant']}" for r in against]
    widths = [max(7, len(h)) for h in speed_heads]
    dloss_head = f"max|Δloss| vs {ref['variant']}"
    lines = [f"{'variant':14s} {'s/step':>9s} " + " ".join(f"{h:>{w}s}" for h, w in zip(speed_heads, widths))
             + f" {'MFU':>6s} {'fwd+bwd':>8s} {'optim':>7s} {'peak GiB':>9s} {'1st step s':>10s} {dloss_head:>11s}"]
    for r in ok:
        speedups = " ".join(f"{a['s_per_step'] / r['s_per_step']:{w}.2f}" for a, w in zip(against, widths))
        mfu_text = "–" if r["mfu"] is None else f"{r['mfu']:.1%}"  # unknown peak (CPU): not 0 %
        lines.append(f"{r['variant']:14s} {r['s_per_step']:9.4f} {speedups} {mfu_text:>6s} {r['fwd_bwd_s']:8.4f} "
                     f"{r['opt_s']:7.4f} {r['peak_gib']:9.2f} {r['first_step_s']:10.2f} "
                     f"{r['max_dloss_vs_ref']:>{len(dloss_head)}.2e}")
    return lines


def report(rows: list[dict], args, device) -> dict:
    """Print the summary table of the successful rows and return the JSON document (names the reference)."""
    ok = [r for r in rows if "error" not in r]
    ref, base = references(ok)
    if ref is None:
        print("no variant ran to the end: nothing to compare")
        return {"device": device_name(device), "args": vars(args), "reference": None, "baseline": None,
                "peak_kind": peak_kind(device), "rows": rows}
    for r in ok:
        r["max_dloss_vs_ref"] = dloss(r, ref)
        r["mfu"] = mfu(r, args, device)
    why = "" if ref["variant"] == "plain" else " (plain did not run: the first variant that did)"
    print(f"reference: {ref['variant']}{why}; speed baseline: {base['variant']}")
    print("\n".join(table(ok, ref, base)))
    print(peak_note(device))
    print(f"reference {ref['variant']} loss: {ref['losses'][0]:.5f} → {ref['losses'][-1]:.5f} "
          f"over {len(ref['losses'])} steps")
    return {"device": device_name(device), "args": vars(args), "reference": ref["variant"],
            "baseline": base["variant"], "peak_kind": peak_kind(device), "rows": rows}


def count_problems(args) -> list[str]:
    """Every bad step count, each with its value and fix, checked before any model is built. run_variant
    starts its clock at update --warmup, so a variant that runs no more updates than that has no timing
    (fp32_eager runs min(--steps, --baseline-steps) of them)."""
    problems = []
    if args.warmup < 0:
        problems.append(f"--warmup={args.warmup} must be >= 0 (the untimed updates); use --warmup 0 or more")
    least = max(args.warmup, 0) + 1
    if args.steps <= args.warmup:
        problems.append(f"--steps={args.steps} must exceed --warmup={args.warmup}; use --steps {least} or more")
    if "fp32_eager" in args.variants and args.baseline_steps <= args.warmup:
        problems.append(f"--baseline-steps={args.baseline_steps} (fp32_eager's updates) must exceed "
                        f"--warmup={args.warmup}; use --baseline-steps {least} or more")
    if args.split_steps < 1:
        problems.append(f"--split-steps={args.split_steps} must be >= 1 (updates timed as fwd+bwd / optimizer); "
                        "use --split-steps 1 or more")
    if args.seq < 2:
        problems.append(f"--seq={args.seq} must be >= 2 (a sample needs a token to predict); use --seq 2 or more")
    return problems


def parse_args(argv=None) -> argparse.Namespace:
    """Checked arguments, with args.variants (the names to run) and args.profile (those to profile) resolved."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--seq", type=int, default=None, help="tokens per sample (default 256 for 1b, 64 for tiny)")
    p.add_argument("--steps", type=int, default=6, help="updates per variant (loss trajectory length)")
    p.add_argument("--baseline-steps", type=int, default=20, help="cap for the slow fp32_eager variant")
    p.add_argument("--warmup", type=int, default=2, help="updates excluded from the timing")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--split-steps", type=int, default=5, help="extra updates timed as forward+backward / optimizer")
    p.add_argument("--variants", type=variant_list, default=None,
                   help=f"comma list of {', '.join(VARIANTS)} (GPU default {','.join(GPU_VARIANTS)}; "
                        f"CPU default {','.join(CPU_VARIANTS)})")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write all numbers (with loss trajectories) here")
    p.add_argument("--profile", type=variant_list, nargs="?", const=PROFILE_ALL, default=(),
                   help="print the kernels by device time of these variants (comma list); alone: of every variant run")
    args = p.parse_args(argv)
    if args.seq is None:  # not `or`: --seq 0 must be refused below, not replaced
        args.seq = 256 if args.size == "1b" else 64
    cuda = torch.device(args.device).type == "cuda"
    args.variants = args.variants or (GPU_VARIANTS if cuda else CPU_VARIANTS)
    if problems := count_problems(args):
        p.error("; ".join(problems))
    if args.profile is PROFILE_ALL:
        args.profile = args.variants
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    vocab = SIZES[args.size]["vocab_size"]
    batches = [torch.randint(0, vocab, (8, args.seq), generator=g).to(device) for _ in range(4)]
    print(f"train step: {args.size} model, batch 8 × {args.seq}, lr {args.lr:g}, on {device_name(device)}")
    if missing := [v for v in args.profile if v not in args.variants]:  # e.g. gpu_suite's default on CPU
        print(f"  note: --profile {','.join(missing)}: not among the variants run, so not profiled")
    rows = []
    for v in args.variants:
        try:
            rows.append(run_variant(v, args, device, batches))
            r = rows[-1]  # printed as it comes, so a run cut off by a timeout still reports
            print(f"  {v}: {r['s_per_step']:.4f} s/step (alone: fwd+bwd {r['fwd_bwd_s']:.4f} s, optimizer "
                  f"{r['opt_s']:.4f} s), first step {r['first_step_s']:.1f} s, "
                  f"peak {r['peak_gib']:.1f} GiB, loss {r['losses'][0]:.5f} → {r['losses'][-1]:.5f}"
                  + (f", max|Δloss| vs plain {dloss(r, plain):.2e}" if (plain := _row(rows, "plain")) else ""),
                  flush=True)
        except Exception as e:  # noqa: BLE001 - one failing lever must not hide the others' numbers
            print(f"  {v}: FAILED {type(e).__name__}: {str(e)[:300]}")
            rows.append({"variant": v, "error": f"{type(e).__name__}: {e}"[:2000]})
    dump(args.json, report(rows, args, device))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
