"""Optimizers for the hyperfitting loop, chosen by train.optimizer.

    adamw        torch AdamW on fp32 master weights (the paper's recipe; fused kernel on CUDA).
    adamw_kahan  AdamW on bf16 weights with Kahan-compensated updates (model.dtype=bfloat16).

Why Kahan: at the paper's lr 1e-6 an update is ~100× smaller than the spacing of bf16 numbers near a
typical weight (~1e-4 at 0.02), so `w += update` in bf16 rounds to `w` and training silently stops (the
precision guard refuses that). Kahan summation keeps the rounding error of every update in a bf16
compensation buffer and adds it back next step, so `w + comp` follows the fp32 trajectory while the
model holds only bf16 weights (to a few % of the fp32 movement in the worst case, a steady gradient:
the compensation buffer is bf16 too; tests/test_optim.py): 10 bytes/parameter of training state instead
of 16, and no fp32→bf16 weight casts in forward and backward. Moments are kept in the weights' dtype
too, as torch-optimi does.
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "adamw_kahan")


def kahan_adamw_(w, g, comp, m, v, step, lr: float, beta1: float, beta2: float, eps: float, wd: float) -> None:
    """One AdamW update of one tensor, in place, computed in fp32 and stored in the tensors' dtypes.

    `step` is a device tensor (already incremented), so bias corrections need no host sync.
    """
    wf, gf = w.float(), g.float()
    mf = m.float().lerp(gf, 1 - beta1)
    vf = v.float().mul(beta2).addcmul(gf, gf, value=1 - beta2)
    bc1 = 1 - beta1 ** step
    bc2 = 1 - beta2 ** step
    update = lr * (mf / bc1) / ((vf / bc2).sqrt() + eps) + lr * wd * wf
    y = comp.float() - update          # the update plus what earlier steps failed to apply
    new = (wf + y).to(w.dtype)         # rounds: some of y is lost here...
    comp.copy_(y - (new.float() - wf))  # ...and remembered here
    w.copy_(new)
    m.copy_(mf)
    v.copy_(vf)


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

    def __init__(self, params, lr: float = 1e-6, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 compile: bool = False):
        super().__init__(params, kahan_adamw_, lr, betas, eps, weight_decay, compile)

    def _init_state(self, p, state) -> None:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for name in ("exp_avg", "exp_avg_sq", "kahan_comp"):
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)


def build_optimizer(model, cfg, compile: bool = False, device: torch.device | None = None) -> torch.optim.Optimizer:
    """The optimizer named by cfg.optimizer over the model's trainable parameters.

    `device`: where the parameters will live when it steps (default: where they are now). The training
    loop builds it before accelerate moves the model to the GPU, so it must say so.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw_kahan":
        return KahanAdamW(params, compile=compile, **kw)
    # fused: one kernel for all tensors on CUDA (the foreach default makes ~10 passes over memory).
    on_cuda = params[0].is_cuda if device is None else torch.device(device).type == "cuda"
    return torch.optim.AdamW(params, fused=on_cuda, **kw)


def scheduled_lr(lr: float, schedule: str, warmup: int, step: int, total: int) -> float:
    """The learning rate of update `step` (0-based): constant, or linear warmup then cosine decay to 0
    (train.schedule=cosine, for pretraining a base model). A pure function of the step, so a resumed run
    continues the schedule where it stopped.

    >>> [round(scheduled_lr(1.0, "cosine", 2, s, 6), 3) for s in range(6)]
    [0.5, 1.0, 0.854, 0.5, 0.146, 0.0]
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
