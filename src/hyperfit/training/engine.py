"""The engine under `hyperfit train`: the Accelerator and the policy for one process, DDP, FSDP2 and DeepSpeed.

    accelerate launch --config_file configs/accelerate/fsdp2.yaml -m hyperfit train runs/demo

The launch picks the engine (configs/accelerate/, never code); this module builds the Accelerator for it,
refuses combinations the loop does not run correctly (each message names what to use instead), splits
the global batch over the ranks, and hands the model and optimizer to accelerate.prepare.
"""

from __future__ import annotations

import accelerate.tracking as tracking
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs

from hyperfit.config import TrainConfig
from hyperfit.dist import check_group, world
from hyperfit.errors import TrainError
from hyperfit.memory_modes import build_optimizer
from hyperfit.runs import RunDir


def precision_mode(cfg: TrainConfig) -> str:
    """accelerate's mixed_precision value: bf16 autocast on CUDA when 'auto', fp32 elsewhere."""
    if cfg.precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return cfg.precision


def make_accelerator(cfg: TrainConfig, run: RunDir) -> Accelerator:
    """The Accelerator of this launch, after checking what would fail only once the run has started."""
    check_tracker(cfg.tracker)
    release_state_of_an_earlier_run(precision_mode(cfg))
    return Accelerator(mixed_precision=precision_mode(cfg), log_with=cfg.tracker, project_dir=str(run.path),
                       kwargs_handlers=[ddp_gradients_in_buckets()])


def local_batch_size(cfg: TrainConfig, num_processes: int, num_samples: int) -> int:
    """Samples per micro-batch on one rank; refuses settings that would change the global batch."""
    if num_samples < cfg.batch_size:
        raise TrainError(f"data.num_train={num_samples} is smaller than train.batch_size={cfg.batch_size}: no full "
                         "batch can be formed. Use more samples or a smaller batch")
    per_update = num_processes * cfg.grad_accum
    if num_processes > cfg.batch_size:
        raise TrainError(
            f"{num_processes} processes but train.batch_size={cfg.batch_size}: each rank needs at least one sample of "
            f"the global batch, which is part of the recipe. Launch at most {cfg.batch_size} processes (e.g. "
            f"accelerate launch --num_processes {cfg.batch_size}); if the model does not fit that many GPUs, shard it "
            "(configs/accelerate/fsdp2.yaml, zero3_offload.yaml; see `hyperfit plan`) rather than adding ranks; "
            "or change train.batch_size explicitly, knowing it departs from the paper")
    if cfg.batch_size % per_update:
        counts = [n for n in range(1, cfg.batch_size + 1) if cfg.batch_size % (n * cfg.grad_accum) == 0]
        accums = [a for a in range(1, cfg.batch_size + 1) if cfg.batch_size % (num_processes * a) == 0]
        raise TrainError(
            f"train.batch_size={cfg.batch_size} cannot be split over {num_processes} process(es) × train.grad_accum="
            f"{cfg.grad_accum} micro-batches. The global batch is part of the recipe, so launch "
            f"{' or '.join(map(str, counts))} process(es) with grad_accum={cfg.grad_accum}"
            + (f", or keep {num_processes} with grad_accum={' or '.join(map(str, accums))}" if accums else "")
            + ", or change train.batch_size explicitly")
    return cfg.batch_size // per_update


def check_engine(cfg: TrainConfig, accelerator) -> None:
    """Refuse combinations the loop does not run correctly; the message says what to use instead."""
    check_group(accelerator.num_processes)
    kind = str(accelerator.distributed_type)
    if "DEEPSPEED" in kind and cfg.grad_accum > 1:
        raise TrainError(f"train.grad_accum={cfg.grad_accum} under DeepSpeed: DeepSpeed rescales and accumulates "
                         "gradients itself, which this loop does not hand over to it. Use grad_accum=1 with "
                         "batch_size/ranks samples per rank (8 ranks × 1 for the paper's batch), or FSDP2")
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise TrainError("train.precision=fp16 on a CPU: accelerate has no fp16 autocast there, so the run would "
                         "train in fp32 while saying fp16. Use train.precision=bf16 (or no) on CPUs; fp16 is for GPUs")
    if cfg.method == "lora" and accelerator.num_processes > 1 and is_sharded(accelerator):
        raise TrainError("train.method=lora runs on one device or DDP (configs/accelerate/ddp.yaml): the frozen base "
                         "is not sharded, and the adapters and their optimizer state are small. A base too large "
                         "for one GPU in bf16 is not supported with LoRA yet")
    if cfg.optimizer == "adamw_kahan" and accelerator.num_processes > 1 and is_sharded(accelerator):
        raise TrainError("train.optimizer=adamw_kahan is for one device or DDP; sharded engines (FSDP, DeepSpeed) "
                         "bring their own mixed-precision optimizers. Use train.optimizer=adamw there")


def check_tracker(name: str | None) -> None:
    """train.tracker names an accelerate tracker that is installed (else accelerate warns and logs nothing,
    or fails after the run directory is written)."""
    if name is None:
        return
    if name not in tracking.LOGGER_TYPE_TO_CLASS:
        raise TrainError(f"train.tracker={name!r} is not a tracker accelerate knows; use one of "
                         f"{', '.join(sorted(tracking.LOGGER_TYPE_TO_CLASS))}, or leave it unset")
    installed = getattr(tracking, "_available_trackers", None)  # accelerate's own list (private, so optional)
    if installed is not None and name not in installed:
        raise TrainError(f"train.tracker={name} is not installed here (pip install {name}), or leave it unset; "
                         "the run would otherwise train without tracking")


def release_state_of_an_earlier_run(mixed_precision: str) -> None:
    """Let one Python process (a notebook) train runs of different precision one after another.

    accelerate keeps one AcceleratorState per process and refuses a second Accelerator with another
    mixed_precision ("restart your runtime"). In a single process nothing else holds that state between
    runs, so it is reset; under `accelerate launch` the launch fixes the precision and it is left alone."""
    earlier = AcceleratorState._shared_state.get("_mixed_precision")
    if earlier is not None and earlier != mixed_precision and world()[1] == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def ddp_gradients_in_buckets() -> DistributedDataParallelKwargs:
    """DDP's options: gradients as views into its all-reduce buckets. By default DDP keeps the buckets
    beside the .grad tensors, a second fp32 copy of every gradient: 20 B/param instead of the 16 that
    `hyperfit plan` counts. Ignored outside DDP."""
    return DistributedDataParallelKwargs(gradient_as_bucket_view=True)


def reduce_fsdp2_gradients_in_fp32(accelerator) -> None:
    """Under FSDP2 with bf16, keep bf16 compute but reduce-scatter gradients in fp32.

    accelerate's policy reduces in the compute dtype (bf16): the gradient that reaches the fp32 master
    weights would then be a sum of N bf16 numbers rounded to 8 bits of mantissa. fp32 reduction doubles
    the reduce-scatter traffic and is the usual choice for fp32 masters (torchtitan's default)."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or getattr(plugin, "fsdp_version", 1) != 2 or accelerator.mixed_precision != "bf16":
        return
    # Imported here: torch builds without torch.distributed (some macOS and Windows wheels) lack it.
    from torch.distributed.fsdp import MixedPrecisionPolicy

    plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                         output_dtype=torch.bfloat16)


def fsdp2_reduction(accelerator) -> str:
    """", FSDP2 gradients reduced in <dtype>" for the Training: line under FSDP2, else ""."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or getattr(plugin, "fsdp_version", 1) != 2:
        return ""
    policy = plugin.mixed_precision_policy
    dtype = getattr(policy, "reduce_dtype", None) or torch.float32  # no policy: fp32 weights, fp32 gradients
    return f", FSDP2 gradients reduced in {str(dtype).replace('torch.', '')}"


def compute_precision(accelerator) -> str:
    """The compute dtype the Training: line names: 'bf16 autocast', 'fp16' or 'fp32'."""
    if accelerator.mixed_precision == "bf16":
        return "bf16 autocast"
    return accelerator.mixed_precision if accelerator.mixed_precision != "no" else "fp32"


def is_sharded(accelerator) -> bool:
    """FSDP / DeepSpeed: each rank holds a shard of the weights and optimizer state."""
    kind = str(accelerator.distributed_type)
    return "FSDP" in kind or "DEEPSPEED" in kind


def engine_of(accelerator, cfg: TrainConfig) -> dict:
    """What wrote a checkpoint, as far as --resume depends on it (saved in its training state)."""
    return {"engine": str(accelerator.distributed_type).rsplit(".", 1)[-1], "processes": accelerator.num_processes,
            "sharded": is_sharded(accelerator), "optimizer": cfg.optimizer, "method": cfg.method}


def local_weights(model) -> list[torch.Tensor]:
    """This rank's share of the trainable weights at master precision, gathering nothing.

    FSDP2: the local shard of each DTensor. DeepSpeed ZeRO-3: the rank's partition of the fp32 master
    (the module's own parameters are empty placeholders, and its bf16 copies would hide 1e-6 updates).
    """
    out = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if hasattr(p, "ds_id"):
            # Imported here: DeepSpeed is an optional extra, and only its parameters carry ds_id.
            from deepspeed.utils import safe_get_local_fp32_param

            out.append(safe_get_local_fp32_param(p))
        else:
            out.append(p.to_local() if hasattr(p, "to_local") else p)
    return out


def fill_deepspeed_config(ds: dict, cfg: TrainConfig, micro: int) -> None:
    """Replace the "auto" values of a DeepSpeed config with the hyperfit config's (in place).

    accelerate fills only lr and weight decay from the optimizer it is given, fails on "auto" betas/eps,
    and turns an "auto" gradient_clipping into 1.0: the paper does not clip, so that is set here too.
    No dataloader tells DeepSpeed the micro-batch, so it is set as well.
    """
    ds["train_micro_batch_size_per_gpu"] = micro
    if ds.get("gradient_clipping", "auto") == "auto":
        ds["gradient_clipping"] = cfg.max_grad_norm or 0.0  # DeepSpeed: 0 = no clipping
    params = ds.get("optimizer", {}).get("params", {})
    for key, value in (("betas", list(cfg.betas)), ("eps", cfg.eps)):
        if params.get(key) == "auto":
            params[key] = value


def prepare(accelerator, model, cfg: TrainConfig, micro: int, compiled: bool):
    """Optimizer + accelerator.prepare; DeepSpeed gets its optimizer from its own config."""
    if "DEEPSPEED" in str(accelerator.distributed_type):
        # Imported here: accelerate exports DummyOptim only where DeepSpeed (an optional extra) is installed.
        from accelerate.utils import DummyOptim

        fill_deepspeed_config(accelerator.state.deepspeed_plugin.deepspeed_config, cfg, micro)
        # DeepSpeed builds AdamW (its CPU Adam when offloading) from its config; accelerate takes lr and
        # weight decay from this placeholder.
        optimizer = DummyOptim(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = build_optimizer(model, cfg, compile=compiled, device=accelerator.device)  # model still on CPU
    return accelerator.prepare(model, optimizer)
