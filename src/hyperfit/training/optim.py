"""Optimizers for the hyperfitting loop, chosen by train.optimizer.

    adamw        torch AdamW on fp32 master weights (the paper's recipe; fused kernel on CUDA).
    adamw_kahan     AdamW on bf16 weights with Kahan-compensated updates (model.dtype=bfloat16).
    adamw_kahan_sr  the same, each bf16 write stochastically rounded (KahanSRAdamW).

The modes that libraries provide (torch-optimi, torchao) and each mode's memory and precision-guard
behaviour are in memory_modes.py; build_optimizer dispatches through it.

Why Kahan: at the paper's lr 1e-6 an update is ~100× smaller than the spacing of bf16 numbers near a
typical weight (~1e-4 at 0.02), so `w += update` in bf16 rounds to `w` and training silently stops (the
precision guard refuses that). Kahan summation keeps the rounding error of every update in a bf16
compensation buffer and adds it back next step, so `w + comp` follows the fp32 trajectory while the
model holds only bf16 weights (to ~2 % of the fp32 movement in the worst case, a steady gradient at
lr 1e-6: the compensation buffer is bf16 too and rounds to nearest; adamw_kahan_sr rounds it
stochastically and keeps 100 %; tests/test_lowmem.py): 10 bytes/parameter of training state instead of
16, and no fp32→bf16 weight casts in forward and backward. Moments are kept in the weights' dtype and
bias-corrected, as torch-optimi keeps them (_adam_step says why).
"""

from __future__ import annotations

import math

import torch


def _adam_step(w, g, m, v, step, lr: float, beta1: float, beta2: float, eps: float, wd: float):
    """(update, new m, new v) in fp32, for moments stored bias-corrected (m̂ and v̂ themselves, as torch-optimi
    keeps them): with weight (1 - beta) / (1 - beta^step) the stored value *is* torch AdamW's m / (1 - beta1^t),
    so the update is the same, but what a low-precision buffer must hold changes. Stored raw, v has to grow
    by (1 - beta2) ≈ 0.1 % per step while the bias correction divides it by a shrinking (1 - beta2^t):
    a bf16 v stops growing once 0.1 % falls under half its spacing, and the corrected v̂ then keeps falling,
    so updates grow (174 % of the fp32 movement after 5,000 steady updates at lr 1e-6; 98.3 % stored
    bias-corrected, benchmarks/results/2026-12-05-lowmem-cpu.md). Stored corrected, v̂ sits at g² and moves
    only when g² does. `step` is a device tensor (already incremented), so this needs no host sync.
    """
    gf = g.float()
    mf = m.float().lerp(gf, (1 - beta1) / (1 - beta1 ** step))
    vf = v.float().lerp(gf * gf, (1 - beta2) / (1 - beta2 ** step))
    update = lr * mf / (vf.sqrt() + eps) + lr * wd * w.float()
    return update, mf, vf


def kahan_adamw_(w, g, comp, m, v, step, lr: float, beta1: float, beta2: float, eps: float, wd: float) -> None:
    """One AdamW update of one tensor, in place, computed in fp32 and stored in the tensors' dtypes."""
    update, mf, vf = _adam_step(w, g, m, v, step, lr, beta1, beta2, eps, wd)
    wf = w.float()
    y = comp.float() - update          # the update plus what earlier steps failed to apply
    new = (wf + y).to(w.dtype)         # rounds: some of y is lost here...
    comp.copy_(y - (new.float() - wf))  # ...and remembered here
    w.copy_(new)
    m.copy_(mf)
    v.copy_(vf)


def stochastic_round_bf16(x: torch.Tensor) -> torch.Tensor:
    """fp32 → bf16, rounding up or down at random with probability given by the distance (unbiased).

    A bf16 value is the upper 16 bits of an fp32 one. Adding uniform random low 16 bits to the fp32 bit
    pattern and truncating them carries into bit 16 with probability (low bits) / 2^16: the value rounds
    away from zero exactly that often, so E[result] = x. (Sign-magnitude: the same holds for negatives.)
    """
    bits = x.float().contiguous().view(torch.int32)
    noise = torch.randint_like(bits, 0, 1 << 16)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)  # -65536 = 0xFFFF0000


def kahan_sr_adamw_(w, g, comp, m, v, step, lr: float, beta1: float, beta2: float, eps: float, wd: float) -> None:
    """kahan_adamw_ with weights, compensation and moments written by stochastic rounding (bf16 tensors only).

    Why both: with round-to-nearest the bf16 weights move only once the compensation has summed half a
    bf16 spacing, so the weights the forward sees lag the fp32 trajectory by a steady ~quarter spacing, and
    the compensation's own rounding (bf16 too) loses the same small share of every update in the same
    direction (a few % of the movement under a steady gradient). Rounded stochastically, both errors have
    mean zero: w is an unbiased estimate of the fp32 weights, and w + comp does not drift.
    """
    update, mf, vf = _adam_step(w, g, m, v, step, lr, beta1, beta2, eps, wd)
    wf = w.float()
    y = comp.float() - update
    new = stochastic_round_bf16(wf + y)
    comp.copy_(stochastic_round_bf16(y - (new.float() - wf)))
    w.copy_(new)
    # The moments too: late in training v̂ moves by at most (1 - beta2) = 0.1 % of the gap to g² per step,
    # under half a bf16 spacing (0.2 %), so round-to-nearest freezes it wherever g² drifts slowly;
    # stochastic rounding keeps it unbiased.
    m.copy_(stochastic_round_bf16(mf))
    v.copy_(stochastic_round_bf16(vf))


def _over_tensors(update):
    """update(w, g, buf, m, v, step, *hyper) for one tensor → the same for lists of tensors, steps counted.

    Compiled, this is one graph for the whole model: one guard check and one generated launcher per
    optimizer step. Compiling `update` per tensor instead costs a guard check and a Python wrapper call
    for each of a 1.1B model's 201 tensors. Measured on an H200 with the fp32-master variant
    (benchmarks/master_adamw.py): 0.0735 s per update compiled per tensor, 0.0391 s over the list, where
    fused AdamW took 0.0519 and 0.0401 s in the same two runs (docs/speed.md)."""

    def step_all(ws, gs, bufs, ms, vs, steps, lr, beta1, beta2, eps, wd):
        for w, g, buf, m, v, step in zip(ws, gs, bufs, ms, vs, steps):
            step.add_(1)
            update(w, g, buf, m, v, step, lr, beta1, beta2, eps, wd)

    return step_all


class _ListAdamW(torch.optim.Optimizer):
    """AdamW with one extra buffer per tensor (`buffer`), a group's tensors through one (compiled) step_all.

    Subclasses: KahanAdamW here, and the fp32-master variant benchmarks/master_adamw.py measured."""

    buffer = ""  # the per-tensor state beside the moments (Kahan compensation, or the fp32 master)

    def __init__(self, params, update, lr, betas, eps, weight_decay, compile: bool):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        step_all = _over_tensors(update)
        # emulate_precision_casts: inductor otherwise keeps a value cast to bf16 and back in fp32 inside the
        # fused kernel, and the Kahan compensation (the rounding error of that cast) comes out as zero.
        self._kernel = (torch.compile(step_all, dynamic=False, options={"emulate_precision_casts": True})
                        if compile else step_all)

    def _init_state(self, p, state) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError(f"{type(self).__name__}.step does not take a closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if "step" not in state:
                    self._init_state(p, state)
            beta1, beta2 = group["betas"]
            self._kernel(params, [p.grad for p in params], [st[self.buffer] for st in states],
                         [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states],
                         [st["step"] for st in states], group["lr"], beta1, beta2, group["eps"], group["weight_decay"])


class KahanAdamW(_ListAdamW):
    """AdamW for low-precision weights with Kahan-compensated updates (see the module docstring).

    `compile=True` fuses each tensor's update into one kernel, all launched from one compiled graph; eager,
    it is ~10 elementwise passes per tensor.
    """

    buffer = "kahan_comp"
    MOMENTS = "bias-corrected"  # what exp_avg and exp_avg_sq hold (_adam_step); saved with the param groups

    def __init__(self, params, lr: float = 1e-6, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 compile: bool = False):
        super().__init__(params, kahan_adamw_, lr, betas, eps, weight_decay, compile)

    def step(self, closure=None):
        for group in self.param_groups:
            if group.get("moments") != self.MOMENTS:  # a fresh optimizer, or state saved raw
                self._correct_raw_moments(group)
        return super().step(closure)

    def _correct_raw_moments(self, group) -> None:
        """Optimizer state saved by a version that stored raw moments: correct them once, so a resumed run
        continues the same trajectory (a fresh optimizer has no state yet: nothing to do)."""
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            state = self.state.get(p, {})
            if "step" in state:
                state["exp_avg"].div_(1 - beta1 ** state["step"])
                state["exp_avg_sq"].div_(1 - beta2 ** state["step"])
        group["moments"] = self.MOMENTS

    def _init_state(self, p, state) -> None:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for name in ("exp_avg", "exp_avg_sq", "kahan_comp"):
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)


class KahanSRAdamW(KahanAdamW):
    """KahanAdamW whose bf16 writes of weights and compensation are stochastically rounded (train.optimizer=
    adamw_kahan_sr; kahan_sr_adamw_). Same state, same 10 bytes/parameter; needs bf16 weights."""

    def __init__(self, params, lr: float = 1e-6, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 compile: bool = False):
        _ListAdamW.__init__(self, params, kahan_sr_adamw_, lr, betas, eps, weight_decay, compile)


def scheduled_lr(lr: float, schedule: str, warmup: int, step: int, total: int) -> float:
    """The learning rate of update `step` (0-based): constant, or linear warmup then cosine decay to 0
    (train.schedule=cosine, for pretraining a base model). A pure function of the step, so a resumed run
    continues the schedule where it stopped.

    >>> [round(scheduled_lr(1.0, "cosine", 2, s, 6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if schedule == "constant":
        return lr
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
