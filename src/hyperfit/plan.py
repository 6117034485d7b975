"""`hyperfit plan MODEL`: how much memory hyperfitting MODEL takes, per strategy, and how many GPUs.

    hyperfit plan llama-3.1-70b                  # a known shape, offline
    hyperfit plan TinyLlama/TinyLlama_v1.1       # any hub id or local folder: only its config.json is read
    hyperfit plan llama-3.1-8b --gpu-gib 140 --checkpointing   # GPU size in GiB, the unit of every number shown
    hyperfit plan llama-3.1-8b --gpu-gb 70                     # or in decimal GB (10^9 bytes), converted to GiB

Counts come from the model's config alone: the model is built on the meta device (no memory, no
weights), so the parameter count is exact for any architecture transformers knows. Memory per
parameter is the paper's recipe with fp32 master weights: 4 B weights + 4 B gradients + 8 B AdamW
moments = 16 B, on the GPUs (sharded under FSDP2); ZeRO-3 with CPU offload moves all of it, and more, to
host RAM (20 B; see OFFLOAD_HOST_BYTES). Activations are an estimate (Korthikanti et al., 2022, with fused
attention: ~34 bytes × tokens × hidden per layer in bf16, plus fp32 logits for the loss); treat the table
as a plan, and `benchmarks/train_step.py` as the measurement.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from hyperfit.errors import PlanError  # noqa: F401 - raised here, importable from here
from hyperfit.memory_modes import KEPT_TOLERANCE, MODES, RECOMMENDED

GIB = 2**30
GB = 10**9
# An "80 GB" H100 holds 81,559 MiB = 79.6 GiB (nvidia-smi); an A100 80GB 81,920 MiB = 80.0 GiB. Vendors' "GB"
# is nearly GiB, so the default is the smaller real size: 80 would let a plan fit 0.4 GiB that is not there.
DEFAULT_GPU_GIB = 79.6
# Published shapes (config.json of each hub model), so the table prints without the hub.
PRESETS = {
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000),
    "deepseek-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=30, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=102400),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256),
    "llama-3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                          num_key_value_heads=8, vocab_size=128256),
}
# ImageGPT (Chen et al., 2020; openai/imagegpt-*): 512 colour clusters + SOS, 32×32 pixels + SOS = 1025 tokens
# per image (plan them with --seq 1025).
IMAGE_PRESETS = {
    "imagegpt-small": dict(n_embd=512, n_layer=24, n_head=8, vocab_size=513, n_positions=1024),
    "imagegpt-medium": dict(n_embd=1024, n_layer=36, n_head=8, vocab_size=513, n_positions=1024),
    "imagegpt-large": dict(n_embd=1536, n_layer=48, n_head=16, vocab_size=513, n_positions=1024),
}
# Per parameter: fp32 weight 4 + fp32 grad 4 + AdamW exp_avg 4 + exp_avg_sq 4. DDP stays at 16 only because
# hyperfit wraps it with gradient_as_bucket_view=True (grads are views into the all-reduce buckets); without
# it the buckets are a second fp32 gradient copy: 20 B/param.
STATE_BYTES = 16
OVERHEAD = 2 * GIB   # per GPU: CUDA context, cuBLAS workspaces, allocator slack
# ZeRO-3 with offload_param and offload_optimizer to the CPU (zero3_offload.json): host RAM per parameter,
# from the buffers of DeepSpeed's runtime/zero/stage3.py, counted after one step on CPU:
#   fp16_partitioned_groups_flat, the bf16 parameter partitions (offload_param)          2
#   fp32_partitioned_groups_flat, the fp32 master weights                                 4
#   fp32_partitioned_groups_flat[i].grad, the masters' fp32 gradients                     4
#   grad_partitions_flat_buffer, the bf16 gradient partitions (pinned)                    2
#   DeepSpeedCPUAdam exp_avg + exp_avg_sq (fp32)                                          8
# Their total over all ranks does not depend on the GPU count: the partitions just get smaller.
OFFLOAD_HOST_BYTES = 2 + 4 + 4 + 2 + 8
# DeepSpeed's own estimate_zero3_model_states_mem_needs (same file) asks 18 B/param × its
# additional_buffer_factor 1.5, slack it does not itemise; printed beside ours as the cautious figure.
DEEPSPEED_HOST_BYTES = 18 * 1.5
# ZeRO-3's gradient reduce (IPG) bucket, allocated on each GPU with contiguous_gradients: reduce_bucket_size
# elements (DeepSpeed's default 5e8; zero3_offload.json leaves it) in bf16.
REDUCE_BUCKET_BYTES = 500_000_000 * 2
# Launch files that turn activation checkpointing on themselves, whatever train.activation_checkpointing says:
# fsdp2.yaml (fsdp_activation_checkpointing: true). zero3_offload.{yaml,json} turn nothing on, so that row
# follows --checkpointing (train.activation_checkpointing), as single_gpu and ddp do.
CHECKPOINTED_BY_LAUNCH_FILE = ("fsdp2",)
STRATEGIES = ("single_gpu", "ddp", "fsdp2", "zero3_offload")


@dataclass(frozen=True)
class Shape:
    params: int
    layers: int
    hidden: int
    vocab: int

    @property
    def layer_params(self) -> int:
        return self.params // max(self.layers, 1)


ACCEPTS = (f"hyperfit plan takes a preset ({', '.join([*PRESETS, *IMAGE_PRESETS])}), a hub id (namespace/name) "
           "or a folder holding config.json")


def model_config(name: str):
    """A transformers config: preset name, or AutoConfig of a local folder / hub id."""
    if name in PRESETS:
        from transformers import LlamaConfig

        return LlamaConfig(**PRESETS[name])
    if name in IMAGE_PRESETS:
        from transformers import ImageGPTConfig

        return ImageGPTConfig(**IMAGE_PRESETS[name])
    if looks_like_path(name) or Path(name).exists():
        return folder_config(name)
    return hub_config(name)


def looks_like_path(name: str) -> bool:
    """Whether `name` can only be a folder. A hub id is namespace/name: one "/", no leading "/", ".", "~"."""
    return (name.startswith(("/", "./", "../", "~")) or name in (".", "..") or name.count("/") > 1
            or any(sep in name for sep in (os.sep, os.altsep) if sep and sep != "/"))


def folder_config(name: str):
    # Checked here because transformers would take a missing folder for a malformed hub id, and an
    # empty folder for a config without model_type: both messages send the user the wrong way.
    path = Path(name).expanduser()
    if not path.exists():
        raise PlanError(f"no such folder: {name}. {ACCEPTS}")
    if not path.is_dir():
        raise PlanError(f"{name} is a file, not a folder; give the folder that holds config.json. {ACCEPTS}")
    if not (path / "config.json").is_file():
        raise PlanError(f"folder {name} has no config.json, so it is not a model folder (a run's model is in "
                        f"RUN_DIR/checkpoints/final). {ACCEPTS}")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise PlanError(f"{path / 'config.json'} is not a transformers config ({_first_line(e)}); "
                        "fix or replace the file, or plan a preset") from e


def hub_config(name: str):
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers import AutoConfig

    try:
        validate_repo_id(name)
    except HFValidationError as e:  # before the hub call, whose failure would blame the network
        raise PlanError(f"model {name!r} is not a preset, a folder or a hub id ({_first_line(e)}). {ACCEPTS}") from e
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        # Offline, only ids already in the cache load; online, the id itself is the likely problem.
        fix = ("HF_HUB_OFFLINE is set, so only hub models already in the cache load: use a preset or a folder, "
               "or unset HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else
               "check the id on huggingface.co (gated models also need HF_TOKEN)")
        raise PlanError(f"model {name!r} is neither a preset nor a folder, and its config did not load from "
                        f"the hub ({_first_line(e)}). {ACCEPTS}; {fix}") from e


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def shape_of(config) -> Shape:
    """Exact parameter count by building the model on the meta device (allocates nothing)."""
    import torch
    from transformers import AutoModelForCausalLM, ImageGPTForCausalImageModeling

    try:
        with torch.device("meta"):
            if getattr(config, "model_type", None) == "imagegpt":  # not mapped by AutoModelForCausalLM
                model = ImageGPTForCausalImageModeling(config)
            else:
                model = AutoModelForCausalLM.from_config(config)
    except ValueError as e:  # an encoder-decoder (T5), an encoder (BERT): transformers has no causal LM for it
        raise PlanError(f"{type(config).__name__} (model_type {getattr(config, 'model_type', None)!r}) is not a "
                        f"causal LM ({_first_line(e)}); hyperfit trains decoder-only models that "
                        "AutoModelForCausalLM builds: plan one of those, e.g. a preset or a Llama folder") from e
    text = config.get_text_config(decoder=True)
    return Shape(params=sum(p.numel() for p in model.parameters()), layers=text.num_hidden_layers,
                 hidden=text.hidden_size, vocab=text.vocab_size)


def activation_bytes(s: Shape, samples: int, seq: int, checkpointing: bool) -> int:
    """Activations kept for backward on one GPU holding `samples` sequences (estimate)."""
    tokens = samples * seq
    per_layer = 34 * tokens * s.hidden
    kept = (2 * tokens * s.hidden * s.layers + per_layer) if checkpointing else per_layer * s.layers
    logits = tokens * s.vocab * (2 + 4 + 4)  # bf16 logits, fp32 copy, fp32 gradient
    return kept + logits


def checkpointed(strategy: str, checkpointing: bool) -> bool:
    """Whether `strategy`'s row recomputes activations: its launch file may turn it on whatever the flag says."""
    return checkpointing or strategy in CHECKPOINTED_BY_LAUNCH_FILE


def per_gpu(s: Shape, strategy: str, ranks: int, batch: int, seq: int, checkpointing: bool) -> tuple[int, int]:
    """(bytes on each GPU, bytes of host memory in total) for `strategy` over `ranks` GPUs."""
    act = activation_bytes(s, batch // ranks, seq, checkpointed(strategy, checkpointing))
    if strategy in ("single_gpu", "ddp"):
        return STATE_BYTES * s.params + act + OVERHEAD, 0
    gathered = 2 * 2 * s.layer_params  # bf16 copy of one layer being used + one prefetched
    if strategy == "fsdp2":
        return STATE_BYTES * s.params // ranks + gathered + act + OVERHEAD, 0
    # ZeRO-3 offload keeps no shard on the GPUs (only tensors under stage3_param_persistence_threshold, the
    # norms, stay whole there): the gathered layers, the bf16 gradients of the layer in backward before they
    # are copied into the reduce bucket, and the bucket. (DeepSpeed's estimator says 4 B × the largest layer:
    # its bf16 weights and gradients; ours adds the prefetched layer.)
    working = gathered + 2 * s.layer_params + REDUCE_BUCKET_BYTES
    return working + act + OVERHEAD, OFFLOAD_HOST_BYTES * s.params


def gpu_size(gpu_gib: float | None = None, gpu_gb: float | None = None) -> tuple[float, str]:
    """(GiB of one GPU, its name in the output), from GiB or from decimal GB; DEFAULT_GPU_GIB if neither."""
    if gpu_gib is not None and gpu_gb is not None:
        raise PlanError(f"GPU size given twice (gpu_gib={gpu_gib:g}, gpu_gb={gpu_gb:g}); give one of them")
    if gpu_gb is not None:
        require_positive("--gpu-gb", gpu_gb, "the GPU memory in decimal GB (10^9 bytes), e.g. --gpu-gb 80")
        gib = gpu_gb * GB / GIB
        return gib, f"{gpu_gb:g} GB = {gib:.1f} GiB"
    gib = DEFAULT_GPU_GIB if gpu_gib is None else gpu_gib
    require_positive("--gpu-gib", gib, f"the GPU memory in GiB, e.g. --gpu-gib {DEFAULT_GPU_GIB:g} (an 80 GB H100)")
    return gib, f"{gib:g} GiB"


def require_positive(flag: str, value: float, fix: str) -> None:
    # Zero or a negative size would print a table where nothing fits, rather than saying the input is wrong.
    if not (math.isfinite(value) and value > 0):
        raise PlanError(f"{flag} must be a positive number, got {value:g}; give {fix}")


def rank_options(strategy: str, batch: int) -> list[int]:
    """GPU counts to try, each a divisor of the batch (each rank takes batch/N): 1 for single_gpu; from 1 for
    zero3_offload, whose model state is in host RAM, so one GPU is a valid (slow) option; else from 2."""
    if strategy == "single_gpu":
        return [1]
    first = 1 if strategy == "zero3_offload" else 2
    return [r for r in range(first, batch + 1) if batch % r == 0]


def table(s: Shape, gpu_gib: float = DEFAULT_GPU_GIB, batch: int = 8, seq: int = 256,
          checkpointing: bool = False) -> list[dict]:
    """For each strategy, the fewest GPUs (a divisor of the batch) whose memory fits, or the closest miss."""
    rows = []
    for strategy in STRATEGIES:
        options = rank_options(strategy, batch)
        if not options:  # a batch of 1 cannot be split over GPUs
            rows.append({"strategy": strategy, "gpus": None, "ranks_tried": None, "per_gpu_gib": None,
                         "host_gib": None})
            continue
        fits = None
        for r in options:
            gpu, host = per_gpu(s, strategy, r, batch, seq, checkpointing)
            if gpu <= gpu_gib * GIB:
                fits = (r, gpu, host)
                break
        r, gpu, host = fits or (options[-1], *per_gpu(s, strategy, options[-1], batch, seq, checkpointing))
        rows.append({"strategy": strategy, "gpus": r if fits else None, "ranks_tried": options[-1],
                     "per_gpu_gib": gpu / GIB, "host_gib": host / GIB})
    return rows


def render(name: str, s: Shape, rows: list[dict], gpu_label: str, batch: int, seq: int, checkpointing: bool) -> str:
    lines = [f"{name}: {s.params / 1e9:.2f} B parameters, {s.layers} layers, hidden {s.hidden}, vocab {s.vocab}",
             f"training state {STATE_BYTES} B/param (fp32 weights + grads + AdamW) = "
             f"{STATE_BYTES * s.params / GIB:,.1f} GiB; batch {batch} × {seq} tokens",
             checkpointing_line(checkpointing),
             f"{'strategy':14s} {'per-GPU GiB':>12s} {'host GiB':>9s}  GPUs of {gpu_label} needed"]
    lines += [row_line(r, batch) for r in rows]
    lines += offload_note(s, next(r for r in rows if r["strategy"] == "zero3_offload"))
    lines += launch_lines(rows, gpu_label, checkpointing)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# One GPU, smaller training state: the memory modes of train.optimizer (hyperfit.memory_modes, docs/lowmem.md)

LOSS_CHUNK = 512  # train.chunked_loss the rows assume: 512 × 128k vocabulary × 10 B = 0.6 GiB of logits at once
# torchao's CPUOffloadOptimizer over fp32 weights (plan row only, not a train.optimizer yet): the GPU keeps
# fp32 weights + gradients (8 B); the host a pinned fp32 copy of each, and AdamW's fp32 moments (4 + 4 + 8).
OFFLOAD_STATE_GPU_BYTES = 4 + 4
OFFLOAD_STATE_HOST_BYTES = 4 + 4 + 8


def logits_bytes(s: Shape, tokens: int, chunk: int = 0) -> int:
    """bf16 logits, their fp32 copy and fp32 gradient, of all tokens at once or of one chunk of them."""
    return min(tokens, chunk or tokens) * s.vocab * (2 + 4 + 4)


def mode_rows(s: Shape, gpu_gib: float, batch: int, seq: int) -> list[dict]:
    """Per memory mode, on one GPU with activation checkpointing: bytes of state, activations, logits."""
    tokens = batch * seq
    act = activation_bytes(s, batch, seq, checkpointing=True) - logits_bytes(s, tokens)  # without the logits
    rows = []
    for m in MODES.values():
        state = m.state_bytes * s.params
        chunked, full = logits_bytes(s, tokens, LOSS_CHUNK), logits_bytes(s, tokens)
        total = state + act + chunked + OVERHEAD
        rows.append({"mode": m.name, "bytes_per_param": m.state_bytes, "state_gib": state / GIB,
                     "activations_gib": act / GIB, "logits_gib": chunked / GIB, "full_logits_gib": full / GIB,
                     "per_gpu_gib": total / GIB, "fits": total <= gpu_gib * GIB, "paper_lr": m.paper_lr})
    return rows


def offload_row(s: Shape, batch: int, seq: int) -> dict:
    """adamw (fp32 masters) with the optimizer state on the CPU: what stays on the GPU and what the host holds."""
    tokens = batch * seq
    act = activation_bytes(s, batch, seq, checkpointing=True) - logits_bytes(s, tokens) + logits_bytes(s, tokens,
                                                                                                       LOSS_CHUNK)
    return {"per_gpu_gib": (OFFLOAD_STATE_GPU_BYTES * s.params + act + OVERHEAD) / GIB,
            "host_gib": OFFLOAD_STATE_HOST_BYTES * s.params / GIB}


def single_gpu_choice(rows: list[dict]) -> dict | None:
    """The mode to run: adamw (the paper's) when it fits, else the recommended one, else the smallest that fits,
    among those the precision guard passes at the paper's lr 1e-6."""
    fits = {r["mode"]: r for r in rows if r["fits"] and r["paper_lr"] == "kept"}
    return fits.get("adamw") or fits.get(RECOMMENDED) or min(fits.values(), key=lambda r: r["per_gpu_gib"],
                                                            default=None)


def render_modes(s: Shape, gpu_gib: float, gpu_label: str, batch: int, seq: int) -> list[str]:
    rows = mode_rows(s, gpu_gib, batch, seq)
    lines = ["", f"One GPU of {gpu_label} by memory mode (train.optimizer), with activation checkpointing and "
             f"train.chunked_loss={LOSS_CHUNK}:",
             f"{'mode':16s} {'B/param':>7s} {'state':>7s} {'activ.':>7s} {'logits chunked/full':>20s} "
             f"{'per-GPU GiB':>12s}  fits  lr 1e-6"]
    for r in rows:
        lines.append(f"{r['mode']:16s} {r['bytes_per_param']:7.2f} {r['state_gib']:7.1f} {r['activations_gib']:7.2f} "
                     f"{r['logits_gib']:9.2f} / {r['full_logits_gib']:8.2f} {r['per_gpu_gib']:12.1f}  "
                     + ("yes " if r["fits"] else "no  ") + "  " + r["paper_lr"])
    off = offload_row(s, batch, seq)
    lines.append(f"{'adamw+offload':16s} {OFFLOAD_STATE_GPU_BYTES:7.2f} (GPU) optimizer state on the CPU: "
                 f"{off['per_gpu_gib']:.1f} GiB per GPU, {off['host_gib']:,.0f} GiB host RAM "
                 f"({OFFLOAD_STATE_HOST_BYTES} B/param; torchao CPUOffloadOptimizer; plan only, not a mode yet)")
    lines.append("lr 1e-6: whether the precision guard passes the mode at the paper's lr (it measures each run's "
                 "mode at its lr); the refused lose ~2 % of those updates or overshoot them, the one at the bar "
                 "keeps ~99 % and passes or not by the model's weights (docs/lowmem.md)")
    choice = single_gpu_choice(rows)
    if choice is None:
        lines.append(f"No memory mode that keeps every lr-1e-6 update fits one GPU of {gpu_label}: use a strategy "
                     "above, or a shorter --seq")
        edge = [r for r in rows if r["fits"] and r["paper_lr"] == "at the bar"]
        if edge:
            r = edge[0]
            extra = f"pip install 'hyperfit[{MODES[r['mode']].extra}]'; " if MODES[r["mode"]].extra else ""
            lines += [f"{r['mode']} fits ({r['per_gpu_gib']:.1f} GiB) but is at the guard's bar: `hyperfit train` "
                      f"measures it on the model at the start and refuses it if it moves the weights more than "
                      f"{KEPT_TOLERANCE:.0%} from the exact movement. To try it:",
                      f"  {extra}{train_command(r['mode'])}"]
        return lines
    return lines + [f"Single-GPU command ({choice['mode']}, {choice['per_gpu_gib']:.1f} GiB; docs/lowmem.md):",
                    f"  {train_command(choice['mode'])}"]


def train_command(mode_name: str) -> str:
    dtype = "" if mode_name == "adamw" else "model.dtype=bfloat16 "
    return (f"hyperfit train RUN_DIR {dtype}train.optimizer={mode_name} train.activation_checkpointing=true "
            f"train.chunked_loss={LOSS_CHUNK}")


def checkpointing_line(checkpointing: bool) -> str:
    # fsdp2.yaml sets fsdp_activation_checkpointing, so a row without it would plan a run that never happens.
    return ("activation checkpointing on (--checkpointing); fsdp2 has it on in any case, as fsdp2.yaml does"
            if checkpointing else
            "activation checkpointing off (--checkpointing turns it on), but on for fsdp2, as fsdp2.yaml does")


def row_line(r: dict, batch: int) -> str:
    if r["ranks_tried"] is None:
        return f"{r['strategy']:14s} {'-':>12s} {'-':>9s}  needs a batch of 2 or more to split over GPUs"
    if r["gpus"]:
        need = str(r["gpus"])
    elif r["strategy"] == "single_gpu":
        need = "does not fit one GPU: shard the model with fsdp2 or zero3_offload"
    else:
        need = f"does not fit (at {r['ranks_tried']}, the most ranks a batch of {batch} allows)"
    return f"{r['strategy']:14s} {r['per_gpu_gib']:12,.1f} {r['host_gib']:9,.0f}  {need}"


def offload_note(s: Shape, row: dict) -> list[str]:
    # The GPU column alone would suggest the GPU count is what limits ZeRO-3 offload; it is the host's RAM.
    cautious = DEEPSPEED_HOST_BYTES * s.params / GIB
    return [f"Host RAM bounds zero3_offload, not GPUs: ~{row['host_gib']:,.0f} GiB in total ({OFFLOAD_HOST_BYTES} "
            f"B/param; DeepSpeed's estimator asks {DEEPSPEED_HOST_BYTES:g} B/param = {cautious:,.0f} GiB).",
            "  Its GPUs hold no model shard, only the layers in use, a reduce bucket and activations; more GPUs",
            "  split the CPU AdamW step and the host→GPU traffic: faster, not needed for memory."]


def launch_lines(rows: list[dict], gpu_label: str, checkpointing: bool) -> list[str]:
    """The launch command of the first row that fits (rows are in order of preference), with its GPU count."""
    fit = next((r for r in rows if r["gpus"]), None)
    if fit is None:
        fix = "larger GPUs or a shorter --seq" if checkpointing else "larger GPUs, a shorter --seq or --checkpointing"
        return [f"Launch: no strategy fits GPUs of {gpu_label}; try {fix}"]
    n = fit["gpus"]
    return [f"Launch ({fit['strategy']} on {n} GPU{'s' if n > 1 else ''}, the first row that fits):",
            f"  accelerate launch --config_file configs/accelerate/{fit['strategy']}.yaml --num_processes {n} "
            "-m hyperfit train RUN_DIR"]


def plan(name: str, *, gpu_gib: float | None = None, gpu_gb: float | None = None, batch: int = 8, seq: int = 256,
         checkpointing: bool = False, lora: LoraPlan | None = None) -> str:
    """The table for `name` on GPUs of `gpu_gib` GiB, or of `gpu_gb` decimal GB (default DEFAULT_GPU_GIB);
    with `lora`, the memory of LoRA hyperfitting (frozen base + adapters and their optimizer state)."""
    gib, label = gpu_size(gpu_gib, gpu_gb)
    require_positive("--batch", batch, "the global batch in samples, e.g. --batch 8 (the paper's)")
    require_positive("--seq", seq, "tokens per sample, e.g. --seq 256 (the paper's)")
    config = model_config(name)
    s = shape_of(config)
    if lora is not None:
        require_positive("--lora-rank", lora.rank, "the adapters' rank, e.g. --lora-rank 16")
        return lora_plan_text(name, s, config, lora, gib, label, batch, seq, checkpointing)
    return "\n".join([render(name, s, table(s, gib, batch, seq, checkpointing), label, batch, seq, checkpointing),
                      *render_modes(s, gib, label, batch, seq)])


# ---------------------------------------------------------------------------------------------------------
# LoRA (train.method=lora): a frozen base, fp32 adapters with their gradients and AdamW state.


@dataclass(frozen=True)
class LoraPlan:
    rank: int
    layers: str = "all"  # train.lora_layers: all, last:K or indices
    base_bytes: int = 2  # bytes per frozen base weight: 2 for model.dtype=bfloat16, 4 for float32


def lora_counts(config, lora: LoraPlan) -> tuple[int, int]:
    """(adapter parameters, blocks that backward runs through) for LoRA on every block linear of the
    selected blocks. Backward stops at the lowest adapted block: below it nothing needs a gradient, so
    activations are kept only from there up."""
    import torch
    from transformers import AutoModelForCausalLM

    from hyperfit.training.lora import _LAYER_INDEX, block_linears, resolve_layers

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = config.get_text_config(decoder=True).num_hidden_layers
    layers = resolve_layers(lora.layers, n) or list(range(n))
    modules = dict(model.named_modules())
    adapters = sum(lora.rank * sum(modules[name].weight.shape) for names in block_linears(model).values()
                   for name in names if int(_LAYER_INDEX.search(name).group(1)) in layers)
    return adapters, n - min(layers)


def lora_plan_text(name: str, s: Shape, config, lora: LoraPlan, gpu_gib: float, gpu_label: str, batch: int, seq: int,
                   checkpointing: bool) -> str:
    """Memory of LoRA hyperfitting on one GPU (DDP: the same per GPU, each with batch/N samples)."""
    adapters, grad_blocks = lora_counts(config, lora)
    depth = Shape(s.params, grad_blocks, s.hidden, s.vocab)
    lines = [f"{name}: {s.params / 1e9:.2f} B parameters, {s.layers} layers, hidden {s.hidden}, vocab {s.vocab}",
             f"LoRA r={lora.rank} on blocks {lora.layers}: {adapters:,} adapter parameters "
             f"({adapters / s.params:.2%} of the base); backward through the top {grad_blocks} of {s.layers} blocks",
             f"frozen base {lora.base_bytes} B/param = {lora.base_bytes * s.params / GIB:,.1f} GiB; adapters + grads + "
             f"AdamW {STATE_BYTES} B/param = {STATE_BYTES * adapters / GIB:,.2f} GiB; batch {batch} × {seq} tokens",
             f"{'strategy':14s} {'per-GPU GiB':>12s}  GPUs of {gpu_label}"]
    for strategy, ranks in (("single_gpu", 1), ("ddp", 2)):
        if batch % ranks:
            continue
        act = activation_bytes(depth, batch // ranks, seq, checkpointing)
        total = lora.base_bytes * s.params + STATE_BYTES * adapters + act + OVERHEAD
        fits = "fits" if total <= gpu_gib * GIB else "does not fit (LoRA does not shard the base yet)"
        lines.append(f"{strategy:14s} {total / GIB:12,.1f}  {fits}" + (f" (at {ranks} GPUs)" if ranks > 1 else ""))
    return "\n".join(lines)
