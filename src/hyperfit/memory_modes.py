"""The memory modes of training (`train.optimizer`): what each keeps per parameter, how it keeps lr-1e-6
updates, how to build it, and how the precision guard treats it.

    mode("adamw_kahan_sr").state_bytes        # 10: bf16 weights, grads, moments, compensation
    build_optimizer(model, cfg)               # the optimizer of cfg.optimizer over the trainable weights
    kept_share("torchao_sr", weights, lr=1e-6)  # share of the exact AdamW movement kept (models.precision_guard)

    mode             weights  B/param  updates kept by                        from              lr 1e-6
    adamw            fp32     16       fp32 master weights (the paper's)      torch             kept
    adamw_kahan      bf16     10       Kahan compensation (bf16 buffer)       hyperfit          refused (98 %)
    adamw_kahan_sr   bf16     10       Kahan + stochastic rounding of writes  hyperfit          kept
    optimi_kahan     bf16     10       Kahan compensation (bf16 buffer)       torch-optimi      refused (98 %)
    torchao_sr       bf16      8       stochastic rounding, bf16 moments      torchao           refused (122 %)
    torchao_8bit_sr  bf16      6       stochastic rounding, 8-bit moments     torchao           at the bar (99 %)

Why these exist: at the paper's lr 1e-6 an update is ~60× smaller than the bf16 spacing near a typical
weight, so plain AdamW on bf16 weights loses ~98 % of the updates (models.precision_guard). fp32 masters
cost 16 B/param: 8B Llama needs ~120 GiB before activations, more than one 80 GB GPU. Each bf16 mode here
keeps the updates another way, at 6-10 B/param, but not every one keeps all of them: the precision guard
measures the run's mode at its lr and refuses one that moves the weights more than KEPT_TOLERANCE from exact
(float64) AdamW (the right column: at the paper's lr). benchmarks/lowmem_numerics.py measures how closely each
follows the fp32-master trajectory, and `hyperfit plan` prints what each needs.

This module imports no torch at its top (config checks and `hyperfit plan` read the table); builders and
the guard import torch, and the libraries (the `lowmem` extra) only when their mode is built.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches
from types import SimpleNamespace

from hyperfit.errors import PrecisionError

# The guard's measured bar: the share of the exact AdamW movement a mode must make at the run's lr, over
# PROBE_STEPS steady-gradient updates — lost updates (below 1) and overshoot (above 1) alike. Measured on
# 16,384 weights N(0, 0.02) at lr 1e-6 over 1,000 updates (docs/lowmem.md): plain AdamW on bf16 weights
# ~2 %; adamw_kahan_sr 100.0 %; torchao_8bit_sr 98.8-99.4 % by the draw (at the bar); round-to-nearest Kahan
# (adamw_kahan, optimi_kahan) 98.2-98.3 %, its bf16 compensation's own rounding; torchao_sr 122 % (raw bf16
# moments that stop moving).
KEPT_TOLERANCE = 0.01
KEPT_RANGE = (1 - KEPT_TOLERANCE, 1 + KEPT_TOLERANCE)
# Where a library steps part of the model as another mode, the parts' distances from 1.0 are averaged by
# parameter count and the mean must stay within the same 1 %: an overshooting part cannot hide behind a
# losing one (92 % of the weights at 98.9 % and 8 % at 122 % average to 100.8 % but are 2.8 % off; stories260K
# under torchao_8bit_sr: 99.6 % on 92 %, 119.5 % on 8 %, 2.0 % off).
PROBE_WEIGHTS = 16384   # weights sampled from the model for the measurement (torchao quantizes >= 4096, in 256s)
# Steady-gradient updates: each moves a weight by ~lr the same way every step, the worst case for rounding.
# Long enough for a bf16 second moment stored raw to stop moving (after ~1,100 updates at beta2 0.999, and
# its drift shows from ~300: 97.5 % at 300, 122 % at 1,000, 175 % at 5,000, the paper's run length).
PROBE_STEPS = 1000


PAPER_LR = ("kept", "refused", "at the bar")


@dataclass(frozen=True)
class MemoryMode:
    name: str
    weights: str          # model.dtype it trains
    state_bytes: float    # weights + gradients + optimizer state, bytes per parameter, on the GPU
    kept_by: str          # how lr-1e-6 updates survive bf16 weights (or why nothing is needed)
    builder: Callable     # (params, cfg, compile, on_cuda) -> torch.optim.Optimizer
    extra: str | None = None   # pip extra that installs its library
    comp_state: str | None = None  # optimizer-state key of a compensation buffer: effective weight = w + comp
    # What the precision guard says of it at the paper's lr 1e-6 on pretrained-scale weights: "kept" (within
    # KEPT_RANGE on every draw), "refused" (outside on every draw) or "at the bar" (either, by the weights);
    # tests/test_lowmem.py measures every mode against this. `hyperfit plan` chooses among the kept.
    paper_lr: str = "kept"
    # (mode, rule): tensors whose numel satisfies rule are stepped as that other mode by the library (the
    # guard measures those tensors as that mode and weighs both parts by parameter count).
    fallback: tuple[str, Callable[[int], bool]] | None = None

    def __post_init__(self):
        if self.paper_lr not in PAPER_LR:
            raise ValueError(f"MemoryMode {self.name}: paper_lr={self.paper_lr!r}, expected one of {PAPER_LR}")

    @property
    def keeps_paper_lr(self) -> bool:
        return self.paper_lr == "kept"

    def build(self, params, cfg, compile: bool = False, on_cuda: bool = False):
        return self.builder(params, cfg, compile, on_cuda)


def _adamw(params, cfg, compile, on_cuda):
    import torch

    # fused: one kernel for all tensors on CUDA (the foreach default makes ~10 passes over memory).
    return torch.optim.AdamW(params, fused=on_cuda, **_hyper(cfg))


def _kahan(params, cfg, compile, on_cuda):
    from hyperfit.training.optim import KahanAdamW

    return KahanAdamW(params, compile=compile, **_hyper(cfg))


def _kahan_sr(params, cfg, compile, on_cuda):
    from hyperfit.training.optim import KahanSRAdamW

    return KahanSRAdamW(params, compile=compile, **_hyper(cfg))


def _optimi_kahan(params, cfg, compile, on_cuda):
    optimi = _library("optimi", "torch-optimi", "optimi_kahan")
    # kahan_sum=True explicitly (optimi's default turns it on only for low-precision weights); optimi's
    # own defaults (betas 0.9/0.99, eps 1e-6, wd 0.01) differ from torch's, so every value is passed.
    return optimi.AdamW(params, kahan_sum=True, foreach=on_cuda, **_hyper(cfg))


def _torchao(eight_bit: bool):
    def build(params, cfg, compile, on_cuda):
        optim = _library("torchao.optim", "torchao", "torchao_8bit_sr" if eight_bit else "torchao_sr")
        # torchao's bf16-moment AdamW is exported as AdamW in some releases and only as adam._AdamW in others.
        cls = optim.AdamW8bit if eight_bit else getattr(optim, "AdamW", None) or optim.adam._AdamW
        opt = cls(params, bf16_stochastic_round=True, **_hyper(cfg))
        return opt if compile else _eager(opt)

    return build


def _torchao_unquantized(numel: int) -> bool:
    """Whether torchao's 8-bit AdamW keeps this tensor's moments unquantized, in the weights' dtype: it
    quantizes only tensors of at least 4,096 values in whole blocks of 256 (after bitsandbytes). In bf16
    those moments are torchao_sr's, which overshoots at lr 1e-6; in a Llama every matrix is quantized and
    only norms narrower than 4,096 fall back."""
    return numel < 4096 or numel % 256 != 0


def _eager(opt):
    """torchao compiles its per-tensor step unconditionally; with train.compile off (CPU tests, demos, the
    guard's probe) run it eagerly instead: the same arithmetic without a compile of tens of seconds."""
    import torch

    step = opt.step

    def eager_step(closure=None):
        with torch.compiler.set_stance("force_eager"):
            return step(closure)

    opt.step = eager_step
    return opt


def _hyper(cfg) -> dict:
    return dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def _library(module: str, package: str, name: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PrecisionError(f"train.optimizer={name} needs {package}, which is not installed ({e}); "
                             "pip install 'hyperfit[lowmem]' (torchao and torch-optimi), or choose "
                             "train.optimizer=adamw_kahan_sr, which needs no library") from e


MODES = {m.name: m for m in (
    MemoryMode("adamw", "float32", 16, "fp32 master weights", _adamw),
    MemoryMode("adamw_kahan", "bfloat16", 10, "Kahan compensation (bf16 buffer)", _kahan,
               comp_state="kahan_comp", paper_lr="refused"),
    MemoryMode("adamw_kahan_sr", "bfloat16", 10, "Kahan compensation + stochastic rounding", _kahan_sr,
               comp_state="kahan_comp"),
    MemoryMode("optimi_kahan", "bfloat16", 10, "Kahan compensation (torch-optimi)", _optimi_kahan, "lowmem",
               comp_state="kahan_comp", paper_lr="refused"),
    MemoryMode("torchao_sr", "bfloat16", 8, "stochastic rounding, bf16 moments (torchao)", _torchao(False),
               "lowmem", paper_lr="refused"),
    # 8-bit moments: 1 B each, plus one fp32 scale per block of 256 (~0.03 B/param, counted).
    MemoryMode("torchao_8bit_sr", "bfloat16", 6 + 2 * 4 / 256, "stochastic rounding, 8-bit moments (torchao)",
               _torchao(True), "lowmem", paper_lr="at the bar", fallback=("torchao_sr", _torchao_unquantized)),
)}
RECOMMENDED = "adamw_kahan_sr"  # no library, 10 B/param, unbiased (benchmarks/lowmem_numerics.py)


def mode(name: str) -> MemoryMode:
    if name not in MODES:
        close = get_close_matches(name, MODES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise PrecisionError(f"train.optimizer={name!r} is not a memory mode: choose one of {', '.join(MODES)}{hint}")
    return MODES[name]


def config_problems(optimizer: str, model_dtype: str) -> list[str]:
    """What is wrong with train.optimizer and model.dtype together (for config checks; no torch)."""
    if optimizer not in MODES:
        close = get_close_matches(optimizer, MODES, n=1)
        return [f"train.optimizer={optimizer!r} must be one of {', '.join(MODES)}"
                + (f" (did you mean {close[0]}?)" if close else "")]
    m = MODES[optimizer]
    if m.weights == "bfloat16" and model_dtype != "bfloat16":
        return [f"train.optimizer={optimizer} keeps updates on bf16 weights ({m.kept_by}), but model.dtype="
                f"{model_dtype}; set model.dtype=bfloat16 with it, or use train.optimizer=adamw for fp32 master "
                "weights"]
    return []


def build_optimizer(model, cfg, compile: bool = False, device=None):
    """The optimizer named by cfg.optimizer over the model's trainable parameters.

    `device`: where the parameters will live when it steps (default: where they are now). The training
    loop builds it before accelerate moves the model to the GPU, so it must say so.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    on_cuda = params[0].is_cuda if device is None else torch.device(device).type == "cuda"
    return mode(cfg.optimizer).build(params, cfg, compile=compile, on_cuda=on_cuda)


def kept_share(name: str, weights, lr: float, steps: int = PROBE_STEPS, compile: bool = False) -> float:
    """Share of the exact AdamW movement that mode `name` makes on `weights` (a 1-D tensor, in the dtype
    the mode trains): both run `steps` AdamW updates of a steady gradient from the same start; the mode's
    effective weights (w, plus its compensation buffer where it has one) are compared with the reference's.

    1.0: every update kept; plain AdamW on bf16 weights at lr 1e-6 keeps ~0.02.
    """
    import torch

    start = weights.detach().clone()
    # The reference runs in float64: fp32 is not exact here either. Near |w| = 1 its spacing is 1.2e-7, and
    # a steady 1e-6 update rounds to 8 of them (95 %) above 1 and to 17 halves (101 %) below: fp32 masters
    # make 98.4 % of the exact movement on norm-like weights at 1 ± 0.05 (100.0 % at 0.02).
    ref = _run(MODES["adamw"], start.double(), lr, steps, compile)[0].detach()
    m = MODES[name]
    # Stochastic rounding draws from the default generator of the probe's device: a fixed seed makes the
    # guard's verdict the same on every run of the same model (torchao's rounding alone moves it by ~±0.7 %
    # between seeds). Only that generator is seeded, and restored after, so the run's own seed is untouched.
    with torch.random.fork_rng(devices=[start.device] if start.is_cuda else []):
        if start.is_cuda:
            with torch.cuda.device(start.device):
                torch.cuda.manual_seed(0)
        else:
            torch.default_generator.manual_seed(0)
        w, opt = _run(m, start, lr, steps, compile)
    moved = w.detach().double() - start.double()
    if m.comp_state:
        moved = moved + opt.state[w][m.comp_state].double()
    ref_moved = ref - start.double()
    return (moved * torch.sign(ref_moved)).sum().item() / ref_moved.abs().sum().clamp_min(1e-30).item()


@dataclass(frozen=True)
class GuardReading:
    """The precision guard's measurement of a mode on one model. `parts`: (mode stepping them, share of the
    trainable weights, kept_share); one part unless the mode's library steps some tensors as another mode."""
    parts: tuple[tuple[str, float, float], ...]

    @property
    def kept(self) -> float:
        """Share of the exact AdamW movement made, over all the model's weights."""
        return sum(share * kept for _, share, kept in self.parts)

    @property
    def error(self) -> float:
        """Mean distance from the exact movement over the weights: lost and overshot parts both count."""
        return sum(share * abs(1 - kept) for _, share, kept in self.parts)

    @property
    def passes(self) -> bool:
        return self.error <= KEPT_TOLERANCE + 1e-12


def guard_share(name: str, model, lr: float, steps: int = PROBE_STEPS) -> GuardReading:
    """What the precision guard measures for mode `name` on this model: kept_share on probe_weights of its
    trainable tensors. For a mode whose library steps some tensors as another mode, those tensors are
    measured as that mode, and each part is weighed by its share of the trainable weights.

    Checked on the whole tensors of one process: under FSDP2 torchao applies its size rule to each rank's
    shard, so a few more (small) tensors may fall back than counted here."""
    other, rule = MODES[name].fallback or (None, None)
    groups = {name: [], other: []}
    for p in model.parameters():
        if p.requires_grad:
            groups[other if rule and rule(p.numel()) else name].append(p)
    sizes = {mode_name: sum(p.numel() for p in group) for mode_name, group in groups.items() if group}
    total = sum(sizes.values())
    return GuardReading(tuple((m, size / total, _measured(m, probe_weights(groups[m]), lr, steps))
                              for m, size in sizes.items()))


# kept_share results by (kept_share, mode, lr, steps, probe): a run measures the same weights twice, in the
# pipeline's checks before anything is written and again when training loads the model, and the measurement
# (1,000 updates, seconds to tens of seconds) is a deterministic function of these. The function is part of
# the key so that a stand-in for it (a test's) never answers for the real one.
_MEASURED: dict = {}


def _measured(name: str, probe, lr: float, steps: int) -> float:
    import torch

    digest = hashlib.sha256(probe.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    key = (kept_share, name, lr, steps, probe.device.type, str(probe.dtype), digest)
    if key not in _MEASURED:
        _MEASURED[key] = kept_share(name, probe, lr, steps)
    return _MEASURED[key]


def _run(m: MemoryMode, start, lr: float, steps: int, compile: bool):
    import torch

    w = torch.nn.Parameter(start.clone())
    hyper = SimpleNamespace(lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)  # the paper's AdamW
    opt = m.build([w], hyper, compile=compile, on_cuda=w.is_cuda)
    gen = torch.Generator(device=w.device).manual_seed(0)
    # A steady gradient of random sign per weight: each update moves a weight by ~lr the same way every step.
    grad = torch.randint(0, 2, w.shape, generator=gen, device=w.device).to(w.dtype) * 2 - 1
    for _ in range(steps):
        w.grad = grad.clone()
        opt.step()
    return w, opt


def probe_weights(params, n: int = PROBE_WEIGHTS):
    """n weights drawn evenly from the given tensors (at random positions, the same on every call; repeated
    where there are fewer), in their dtype (1-D): a block-quantizing optimizer treats the probe as it treats
    a model's large tensors."""
    import torch

    params = list(params)
    per = max(1, n // len(params))
    gen = torch.Generator().manual_seed(0)
    # Positions drawn with replacement: a permutation of an 8B model's embedding would take 4 GiB.
    flat = torch.cat([p.detach().reshape(-1)[torch.randint(p.numel(), (per,), generator=gen).to(p.device)]
                      for p in params])
    return flat.repeat(-(-n // flat.numel()))[:n]


def keeping_modes() -> list[str]:
    """The bf16 modes that keep the paper's lr-1e-6 updates, for error messages that send the user to one."""
    return [n for n, m in MODES.items() if m.weights == "bfloat16" and m.keeps_paper_lr]
