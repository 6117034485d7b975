"""How closely each memory mode (train.optimizer) follows the fp32-master reference, on CPU, in minutes.

    PYTHONPATH=$PWD/src python benchmarks/lowmem_numerics.py --out benchmarks/results/2026-12-06-lowmem-cpu.md
    PYTHONPATH=$PWD/src python benchmarks/lowmem_numerics.py --models stories260K --modes adamw_kahan_sr

Two models: karpathy's stories260K (real pretrained weights, ../shared/assets/stories260K) and a
TinyLlama-shaped one (TinyLlama-1.1B's depth, head layout and 32k vocabulary at width 128; random init at
its std 0.02, so its weights have a pretrained model's scale). Each mode trains a bf16 copy; the reference
(`adamw`) trains fp32 weights from the same bf16-representable start, on the same batches:

- `guard`: what the precision guard measures for the mode on this model's weights (16,384 of them, 1,000
  steady-gradient updates at lr 1e-6) and its verdict: it refuses a mode more than 1 % from exact (float64)
  AdamW's movement, averaged by parameter count over the tensors torchao quantizes and those it leaves to bf16
  moments (both shown where there are both).
- lr 1e-6, 20 updates (the paper's lr): `kept` = the share of the reference's movement the mode's effective
  weights (w, plus the Kahan compensation where there is one) made, summed over all weights;
  `changed` = share of the weights whose bf16 value itself moved (the reference: fp32 weights that moved).
- hyperfitting (lr 1e-3 for both; 8 stories × 128 tokens, batch 8, N updates):
  the largest relative gap between the mode's training loss and the reference's over the updates, both
  final losses, `drift` = ‖w_mode − w_ref‖ / ‖w_ref − w_0‖ at the end, and `agree` = share of greedy tokens
  (8 held-out contexts, 32 new tokens, fp32 forward) equal to the reference model's.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from hyperfit.memory_modes import MODES, GuardReading, build_optimizer, guard_share

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
TINYLLAMA_SMALL = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=22, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=32000, max_position_embeddings=512, rms_norm_eps=1e-5)
HYPERFIT_LR = {"stories260K": 1e-3, "tinyllama-shaped": 1e-3}


def stories260k(assets: Path):
    from hyperfit.llama2c import build_model, read_checkpoint, to_hf_state

    hp, arrays = read_checkpoint(assets / "stories260K" / "stories260K.bin")
    return build_model(hp, to_hf_state(hp, arrays))


def tinyllama_shaped(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINYLLAMA_SMALL, attn_implementation="sdpa"))


def token_batches(assets: Path, n: int = 16, seq: int = 128) -> torch.Tensor:
    """n TinyStories windows of seq tokens (the stories260K tokenizer; ids < 512 fit both vocabularies)."""
    from hyperfit.llama2c import build_tokenizer

    tok = build_tokenizer(assets / "stories260K" / "tok512.model")
    text = next((assets / "text" / "tinystories").glob("*.txt")).read_text(encoding="utf-8")
    ids = torch.tensor(tok(text[: 400_000])["input_ids"])
    return ids[: n * seq].reshape(n, seq)


def effective(model, opt, name: str) -> dict[str, torch.Tensor]:
    """Each weight as the mode holds it: w, plus the compensation buffer where the mode has one."""
    comp = MODES[name].comp_state
    out = {}
    for n, p in model.named_parameters():
        w = p.detach().float()
        state = opt.state.get(p, {}) if opt is not None else {}
        out[n] = w + state[comp].float() if comp and comp in state else w.clone()
    return out


def train(base, name: str, ids: torch.Tensor, lr: float, updates: int):
    """A copy of base trained `updates` full-batch updates with mode `name`; (model, optimizer, losses)."""
    import copy

    model = copy.deepcopy(base).to(torch.float32 if name == "adamw" else torch.bfloat16)
    hyper = SimpleNamespace(optimizer=name, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    opt = build_optimizer(model, hyper)
    losses = []
    for _ in range(updates):
        logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                 ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return model, opt, losses


@torch.no_grad()
def greedy(model, contexts: torch.Tensor, new: int = 32) -> torch.Tensor:
    m = model.float().eval()
    ids = contexts
    for _ in range(new):
        ids = torch.cat([ids, m(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[:, contexts.shape[1]:]


def movement(eff: dict, start: dict, ref: dict) -> tuple[float, float]:
    """(kept share of the reference movement, share of weights changed), over all weights."""
    num = den = changed = total = 0.0
    for n in start:
        d_ref = ref[n] - start[n]
        num += ((eff[n] - start[n]) * torch.sign(d_ref)).sum().item()
        den += d_ref.abs().sum().item()
        changed += (eff[n] != start[n]).sum().item()
        total += start[n].numel()
    return num / max(den, 1e-30), changed / total


def small_lr_row(base, name: str, ids: torch.Tensor, ref_eff: dict, start: dict, updates: int) -> dict:
    model, opt, _ = train(base, name, ids, 1e-6, updates)
    kept, _ = movement(effective(model, opt, name), start, ref_eff)
    bf16_moved = {n: p.detach().float() for n, p in model.named_parameters()}
    _, changed = movement(bf16_moved, start, ref_eff)
    reading = GuardReading(((name, 1.0, 1.0),)) if name == "adamw" else guard_share(
        name, copy.deepcopy(base).bfloat16(), 1e-6)
    return {"kept": kept, "changed": changed, "guard": reading.kept, "guard_passes": reading.passes,
            "guard_parts": reading.parts}


def hyperfit_row(model, opt, losses, name, ref, w0, contexts) -> dict:
    ref_model, ref_losses, ref_tokens = ref
    gap = max(abs(a - b) / b for a, b in zip(losses, ref_losses))
    eff = effective(model, opt, name)
    ref_w = {n: p.detach().float() for n, p in ref_model.named_parameters()}
    num = sum((eff[n] - ref_w[n]).pow(2).sum().item() for n in w0)
    den = sum((ref_w[n] - w0[n]).pow(2).sum().item() for n in w0)
    agree = (greedy(model, contexts) == ref_tokens).float().mean().item()
    return {"loss_gap": gap, "final_loss": losses[-1], "drift": (num / den) ** 0.5, "agree": agree}


def bench_model(label: str, base, modes: list[str], ids: torch.Tensor, contexts: torch.Tensor, updates: int,
                small_updates: int) -> list[dict]:
    base = base.to(torch.bfloat16).float()  # a start every mode holds exactly
    start = {n: p.detach().float().clone() for n, p in base.named_parameters()}
    small_ref, _, _ = train(base, "adamw", ids, 1e-6, small_updates)
    small_ref_eff = {n: p.detach().float() for n, p in small_ref.named_parameters()}
    ref_model, _, ref_losses = train(base, "adamw", ids, HYPERFIT_LR[label], updates)
    ref = (ref_model, ref_losses, greedy(ref_model, contexts))
    rows = []
    for name in modes:
        t = time.perf_counter()
        row = {"model": label, "mode": name}
        row.update(small_lr_row(base, name, ids, small_ref_eff, start, small_updates))
        model, opt, losses = (ref_model, None, ref_losses) if name == "adamw" else train(
            base, name, ids, HYPERFIT_LR[label], updates)
        row.update(hyperfit_row(model, opt, losses, name, ref, start, contexts))
        row["seconds"] = time.perf_counter() - t
        print(fmt(row), flush=True)
        rows.append(row)
    return rows


HEADER = ("| model | mode | B/param | guard | kept at lr 1e-6 | bf16 weights changed | max loss gap | final loss "
          "| drift | greedy agree | s |\n|---|---|---|---|---|---|---|---|---|---|---|")


def guard_cell(r: dict) -> str:
    parts = "".join(f"; {kept:.1%} on the {share:.1%} stepped as {name}" for name, share, kept in r["guard_parts"][1:])
    first = f" ({r['guard_parts'][0][2]:.1%} on the rest{parts})" if parts else ""
    return f"{r['guard']:.1%}{first} {'passes' if r['guard_passes'] else 'refused'}"


def fmt(r: dict) -> str:
    return (f"| {r['model']} | {r['mode']} | {MODES[r['mode']].state_bytes:.2f} | {guard_cell(r)} | {r['kept']:.2%} "
            f"| {r['changed']:.1%} | {r['loss_gap']:.2%} | {r['final_loss']:.4f} | {r['drift']:.3f} "
            f"| {r['agree']:.1%} | {r['seconds']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="stories260K,tinyllama-shaped")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--updates", type=int, default=40, help="hyperfitting updates per mode")
    ap.add_argument("--small-updates", type=int, default=20, help="updates at lr 1e-6")
    ap.add_argument("--seed", type=int, default=0, help="the TinyLlama-shaped init and the stochastic rounding")
    ap.add_argument("--assets", default=str(ASSETS))
    ap.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    assets = Path(args.assets)
    data = token_batches(assets)
    ids, contexts = data[:8], data[8:, :32]
    builders = {"stories260K": lambda: stories260k(assets), "tinyllama-shaped": lambda: tinyllama_shaped(args.seed)}
    modes = args.modes.split(",")
    print(HEADER)
    t0 = time.perf_counter()
    rows = [r for label in args.models.split(",")
            for r in bench_model(label, builders[label](), modes, ids, contexts, args.updates, args.small_updates)]
    if args.out:
        machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
        command = " ".join(["python", *sys.argv])
        Path(args.out).write_text(
            f"# Memory modes against the fp32-master reference (CPU)\n\n`{command}`"
            f" — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine}, {time.perf_counter() - t0:.0f} s.\n\n"
            + HEADER + "\n" + "\n".join(fmt(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
