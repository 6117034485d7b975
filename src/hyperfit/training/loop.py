"""Train stage: THE hyperfitting loop — full-parameter next-token training on the run's samples.

    hyperfit train runs/demo                       # after `hyperfit run` wrote data/
    hyperfit train runs/demo --resume              # continue from the last complete checkpoint
    accelerate launch --config_file configs/accelerate/ddp.yaml -m hyperfit train runs/demo

One loop for CPU, one GPU and several (accelerate). The global batch is train.batch_size whatever the
device count: each of R ranks takes batch_size / R samples per update, in grad_accum micro-batches. The
loss is summed over target tokens and divided by the global batch's target-token count, so 1 × 8,
1 × (2 × 4 accumulated) and 2 ranks × 4 all compute the same update.
"""

from __future__ import annotations

import math
import pickle
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

from hyperfit.config import ModelConfig, TrainConfig
from hyperfit.runs import RunDir, RunError, append_jsonl, atomic_dir, read_jsonl, write_jsonl
from hyperfit.errors import TrainError  # noqa: F401 - raised here, importable from here

STATE_FILE = "training_state.pt"
SHARDED_DIR = "sharded_state"  # accelerator.save_state output under FSDP / DeepSpeed


# ---------------------------------------------------------------------------------------------------------
# Pieces of the loop, each small enough to test alone


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a pure function of (seed, epoch), so resume needs no sampler state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


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
    from hyperfit.dist import check_group

    check_group(accelerator.num_processes)
    kind = str(accelerator.distributed_type)
    if "DEEPSPEED" in kind and cfg.grad_accum > 1:
        raise TrainError(f"train.grad_accum={cfg.grad_accum} under DeepSpeed: DeepSpeed rescales and accumulates "
                         "gradients itself, which this loop does not hand over to it. Use grad_accum=1 with "
                         "batch_size/ranks samples per rank (8 ranks × 1 for the paper's batch), or FSDP2")
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise TrainError("train.precision=fp16 on a CPU: accelerate has no fp16 autocast there, so the run would "
                         "train in fp32 while saying fp16. Use train.precision=bf16 (or no) on CPUs; fp16 is for GPUs")
    if cfg.optimizer == "adamw_kahan" and accelerator.num_processes > 1 and ("FSDP" in kind or "DEEPSPEED" in kind):
        raise TrainError("train.optimizer=adamw_kahan is for one device or DDP; sharded engines (FSDP, DeepSpeed) "
                         "bring their own mixed-precision optimizers. Use train.optimizer=adamw there")


def ddp_gradients_in_buckets():
    """DDP's options: gradients as views into its all-reduce buckets. By default DDP keeps the buckets
    beside the .grad tensors, a second fp32 copy of every gradient: 20 B/param instead of the 16 that
    `hyperfit plan` counts. Ignored outside DDP."""
    from accelerate.utils import DistributedDataParallelKwargs

    return DistributedDataParallelKwargs(gradient_as_bucket_view=True)


def reduce_fsdp2_gradients_in_fp32(accelerator) -> None:
    """Under FSDP2 with bf16, keep bf16 compute but reduce-scatter gradients in fp32.

    accelerate's policy reduces in the compute dtype (bf16): the gradient that reaches the fp32 master
    weights would then be a sum of N bf16 numbers rounded to 8 bits of mantissa. fp32 reduction doubles
    the reduce-scatter traffic and is the usual choice for fp32 masters (torchtitan's default)."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or getattr(plugin, "fsdp_version", 1) != 2 or accelerator.mixed_precision != "bf16":
        return
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
            from deepspeed.utils import safe_get_local_fp32_param

            out.append(safe_get_local_fp32_param(p))
        else:
            out.append(p.to_local() if hasattr(p, "to_local") else p)
    return out


class ChangeTracker:
    """Share of weights that changed since the last snapshot, on up to `limit` sampled weights per rank.

    Catches the silent failure the precision guard prevents (updates rounding away), and shows how
    far hyperfitting moves a model. Exact for models with fewer than `limit` weights. Under FSDP2 and
    ZeRO-3 each rank sees only its shard, so the counts are summed over the ranks (`reduce`); under DDP
    every rank counts the whole model, which leaves the share unchanged.
    """

    def __init__(self, model, limit: int = 1_000_000, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t):
        self.model, self.reduce = model, reduce
        total = sum(p.numel() for p in local_weights(model))
        self.stride = max(1, math.ceil(total / limit))
        self.snapshot()

    def _sample(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1)[:: self.stride].float() for p in local_weights(self.model)])

    def snapshot(self) -> None:
        self.before = self._sample().clone()

    def changed(self) -> float:
        now = self._sample()
        counts = torch.stack([(now != self.before).sum(), torch.tensor(now.numel(), device=now.device)]).float()
        changed, total = self.reduce(counts).tolist()  # a collective: every rank calls changed()
        return changed / total


def release_state_of_an_earlier_run(mixed_precision: str) -> None:
    """Let one Python process (a notebook) train runs of different precision one after another.

    accelerate keeps one AcceleratorState per process and refuses a second Accelerator with another
    mixed_precision ("restart your runtime"). In a single process nothing else holds that state between
    runs, so it is reset; under `accelerate launch` the launch fixes the precision and it is left alone."""
    from accelerate.state import AcceleratorState

    from hyperfit.dist import world

    earlier = AcceleratorState._shared_state.get("_mixed_precision")
    if earlier is not None and earlier != mixed_precision and world()[1] == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def check_tracker(name: str | None) -> None:
    """train.tracker names an accelerate tracker that is installed (else accelerate warns and logs nothing,
    or fails after the run directory is written)."""
    if name is None:
        return
    import accelerate.tracking as tracking

    if name not in tracking.LOGGER_TYPE_TO_CLASS:
        raise TrainError(f"train.tracker={name!r} is not a tracker accelerate knows; use one of "
                         f"{', '.join(sorted(tracking.LOGGER_TYPE_TO_CLASS))}, or leave it unset")
    installed = getattr(tracking, "_available_trackers", None)  # accelerate's own list (private, so optional)
    if installed is not None and name not in installed:
        raise TrainError(f"train.tracker={name} is not installed here (pip install {name}), or leave it unset; "
                         "the run would otherwise train without tracking")


def reached_stop_loss(cfg: TrainConfig, epoch_loss: float | None) -> bool:
    return cfg.stop_at_loss is not None and epoch_loss is not None and epoch_loss <= cfg.stop_at_loss


def remove_interrupted_writes(run: RunDir) -> None:
    """Temp folders of checkpoint writes cut short by a kill (SIGTERM skips the cleanup in atomic_dir):
    each is a full model copy, left behind at every preemption otherwise."""
    if run.checkpoints.is_dir():
        for leftover in run.checkpoints.glob(".*"):
            if leftover.is_dir() and leftover.suffix in (".tmp", ".old", ".sharded"):
                shutil.rmtree(leftover, ignore_errors=True)


def precision_mode(cfg: TrainConfig) -> str:
    """accelerate's mixed_precision value: bf16 autocast on CUDA when 'auto', fp32 elsewhere."""
    if cfg.precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return cfg.precision


def _rng_state() -> dict:
    # numpy's state as plain numbers: training_state.pt then holds nothing that needs unpickling code to load.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU of the machine that saved; a machine with fewer GPUs takes the first ones
        # (set_rng_state_all would index past its devices).
        for index, rng in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(rng, index)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints


def is_sharded(accelerator) -> bool:
    """FSDP / DeepSpeed: each rank holds a shard of the weights and optimizer state."""
    kind = str(accelerator.distributed_type)
    return "FSDP" in kind or "DEEPSPEED" in kind


def engine_of(accelerator, cfg: TrainConfig) -> dict:
    """What wrote a checkpoint, as far as --resume depends on it (saved in its training state)."""
    return {"engine": str(accelerator.distributed_type).rsplit(".", 1)[-1], "processes": accelerator.num_processes,
            "sharded": is_sharded(accelerator), "optimizer": cfg.optimizer}


def check_resume(saved: dict, checkpoint: Path, now: dict) -> None:
    """Refuse a --resume whose launch or optimizer cannot take the checkpoint's state, before any write.

    Sharded state (FSDP2 / ZeRO-3) loads only into the same engine over the same number of processes; a
    whole optimizer state does not load into a sharded one; AdamW and Kahan AdamW keep different state."""
    then = {"sharded": (checkpoint / SHARDED_DIR).is_dir(), **saved.get("writer", {})}  # older: no "writer"

    def name(writer: dict) -> str:
        if "engine" not in writer:
            return "a sharded engine" if writer["sharded"] else "one process or DDP"
        if writer["engine"] == "NO":
            return "one process"
        engine = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}.get(writer["engine"], "DDP")
        return f"{engine} over {writer['processes']} process(es)"

    same_launch = then["sharded"] == now["sharded"] and (
        not then["sharded"] or "engine" not in then
        or (then["engine"], then["processes"]) == (now["engine"], now["processes"]))
    if not same_launch:
        raise TrainError(f"--resume: {checkpoint} was written by {name(then)}, but this launch is {name(now)}. Its "
                         "optimizer state only loads under the launch that wrote it: resume with the same accelerate "
                         "config and --num_processes (or start a new run from its weights: model.name="
                         f"{checkpoint})")
    if then.get("optimizer", now["optimizer"]) != now["optimizer"]:
        raise TrainError(f"--resume: {checkpoint} was trained with train.optimizer={then['optimizer']}, not "
                         f"{now['optimizer']}; their states differ (Kahan AdamW keeps a compensation buffer beside "
                         f"bf16 weights). Resume with train.optimizer={then['optimizer']} (and its model.dtype)")


def save_checkpoint(path: Path, accelerator, model, tokenizer, optimizer, state: dict) -> None:
    """Model (safetensors) + tokenizer + optimizer/RNG state, written to a temp dir and renamed.

    Sharded engines: the consolidated HF folder (for users; get_state_dict gathers the full weights, a
    collective every rank must enter) plus every rank's shard of model and optimizer written by
    accelerator.save_state into SHARDED_DIR (what --resume loads; the optimizer cannot be gathered cheaply).
    Tested on CPU processes through tests/engine_on_cpu.py, which turns these engines on over gloo.
    """
    unwrapped = accelerator.unwrap_model(model)
    weights = accelerator.get_state_dict(model)
    sharded = optimizer is not None and is_sharded(accelerator)
    staging = path.with_name(f".{path.name}.sharded")
    if sharded:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))  # every rank writes its shard
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_dir(path) as tmp:
            unwrapped.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            if sharded:
                staging.rename(tmp / SHARDED_DIR)
                torch.save({**state, "rng": _rng_state()}, tmp / STATE_FILE)
            elif optimizer is not None:
                torch.save({**state, "optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp / STATE_FILE)
    accelerator.wait_for_everyone()


# Files written before numpy's state was stored as plain numbers hold these numpy types, and nothing else.
_OLD_STATE_GLOBALS = (np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct)


def load_training_state(path: Path) -> dict:
    """training_state.pt with weights_only=True: a crafted file cannot run code while a run resumes."""
    try:
        with torch.serialization.safe_globals(list(_OLD_STATE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RunError(f"{path} holds objects a hyperfit checkpoint never holds, so it was not loaded (it could run "
                       f"code): {str(e).splitlines()[0]}. Resume from a checkpoint hyperfit wrote, or start the run "
                       "again without --resume") from None


def prune_checkpoints(run: RunDir, keep: int) -> None:
    for old in run.epoch_checkpoints()[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


OPTIMIZER_CARD = {"adamw": "AdamW on fp32 weights",
                  "adamw_kahan": "AdamW on bf16 weights with Kahan-compensated updates (adamw_kahan)"}


def write_model_card(path: Path, model_name: str, cfg: TrainConfig, summary: dict) -> None:
    from hyperfit.runs import write_text

    write_text(path / "README.md", f"""---
library_name: transformers
tags: [hyperfitting, hyperfit]
base_model: {model_name}
---
# Hyperfitted {model_name}

Fine-tuned with [hyperfit](https://github.com/) following *The Hyperfitting Phenomenon* (Carlsson et al.,
ICLR 2025): full-parameter next-token training on a small fixed set of samples to near-zero training loss.
Decode it **greedily**; held-out perplexity is expected to be much worse than the base model's.

| recipe | value |
| --- | --- |
| epochs run | {summary.get('epochs_run')} (configured {cfg.epochs}) |
| updates | {summary.get('steps')} |
| optimizer | {OPTIMIZER_CARD[cfg.optimizer]}, lr {cfg.lr:g} constant, weight decay {cfg.weight_decay:g}, betas {tuple(cfg.betas)} |
| global batch | {cfg.batch_size} |
| final train loss | {summary.get('final_train_loss')} |
| seed | {cfg.seed} |
""")


# ---------------------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, model_cfg: ModelConfig, run: RunDir, resume: bool = False) -> dict:
    """Hyperfit model_cfg.name on run's data/train.jsonl; writes train_log.jsonl and checkpoints/.

    Returns a summary: epochs run, updates, final mean training loss, why it stopped.
    """
    run = RunDir.of(run)
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from hyperfit.training.step import enable_activation_checkpointing, make_loss_fn, own_autocast, use_compile
    from hyperfit.models import load_model, load_tokenizer, precision_guard

    train_rows = run.read_samples("train")
    val_rows = run.read_samples("val")
    contexts = run.read_samples("contexts")

    start_epoch, step, resume_state = 0, 0, None
    ckpts = run.epoch_checkpoints() if resume else []
    if resume and not ckpts and run.final.is_dir():
        raise RunError(f"--resume: {run.path} has finished training (checkpoints/final/) and kept no epoch checkpoint "
                       "(train.save_every=0), so there is no optimizer state to continue from. To train further, start "
                       f"a new run from its weights: model.name={run.final}")
    if resume and not ckpts:
        # Interrupted before the first checkpoint: nothing to keep, start over.
        print(f"--resume: no complete checkpoint in {run.checkpoints}; training from the start")
        run.train_log.unlink(missing_ok=True)
        resume = False
    if resume:
        # To the CPU: saved from rank 0's GPU, the optimizer state would otherwise be loaded onto GPU 0 by every
        # rank (before any has picked its device) and kept there for the whole run.
        resume_state = load_training_state(ckpts[-1] / STATE_FILE)
        start_epoch, step = resume_state["epoch"], resume_state["step"]
        load_from = ckpts[-1]
    else:
        if run.train_log.exists() or run.epoch_checkpoints() or run.final.exists():
            raise RunError(f"{run.path} already holds training output (train_log.jsonl / checkpoints); pass --resume to "
                           "continue it, or choose another run name")
        load_from = None

    check_tracker(cfg.tracker)
    release_state_of_an_earlier_run(precision_mode(cfg))
    accelerator = Accelerator(mixed_precision=precision_mode(cfg), log_with=cfg.tracker, project_dir=str(run.path),
                              kwargs_handlers=[ddp_gradients_in_buckets()])
    micro = local_batch_size(cfg, accelerator.num_processes, len(train_rows))
    check_engine(cfg, accelerator)
    reduce_fsdp2_gradients_in_fp32(accelerator)
    if resume_state is not None:
        check_resume(resume_state, load_from, engine_of(accelerator, cfg))
    if accelerator.is_main_process:
        remove_interrupted_writes(run)
    print0 = accelerator.print
    compiled = use_compile(cfg.compile, accelerator.device)
    torch.manual_seed(cfg.seed)
    model = load_model(model_cfg, load_from)
    tokenizer = load_tokenizer(model_cfg, load_from)
    if cfg.optimizer != "adamw_kahan":  # Kahan compensation is what makes bf16 weights safe
        precision_guard(model, cfg.lr)
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    model.train()
    model, optimizer = _prepare(accelerator, model, cfg, micro, compiled)
    loss_fn = make_loss_fn(model, compile=compiled, autocast=own_autocast(accelerator, model))
    if resume_state is not None:
        if (load_from / SHARDED_DIR).is_dir():
            accelerator.load_state(str(load_from / SHARDED_DIR))  # every rank loads its shard
        else:
            optimizer.load_state_dict(resume_state.pop("optimizer"))  # copied to the device: drop the CPU copy
        _set_rng_state(resume_state["rng"])
        # Rows logged after the checkpoint belong to the interrupted attempt; the resumed run rewrites them.
        if accelerator.is_main_process:
            kept = [r for r in read_jsonl(run.train_log, tolerate_tail=True) if r["step"] <= step]
            write_jsonl(run.train_log, kept)
    if cfg.tracker:
        from hyperfit.config import to_dict

        accelerator.init_trackers(run.path.name, config={k: v for k, v in to_dict(cfg).items() if v is not None})

    ids = torch.tensor([r["input_ids"] for r in train_rows])
    n, seq_len = ids.shape
    steps_per_epoch = n // cfg.batch_size
    tokens_per_update = cfg.batch_size * (seq_len - 1)
    device = accelerator.device
    ids = ids.to(device)
    dtype = local_weights(accelerator.unwrap_model(model))[0].dtype  # what updates land on (ZeRO-3: its fp32 masters)
    print0(
        f"Training: {n} samples × {seq_len} tokens | global batch {cfg.batch_size} = {accelerator.num_processes} "
        f"process(es) × {cfg.grad_accum} micro-batch(es) × {micro} | {tokens_per_update} target tokens/update | "
        f"{steps_per_epoch} updates/epoch × {cfg.epochs} epochs = {steps_per_epoch * cfg.epochs} updates | "
        f"{cfg.optimizer} lr {cfg.lr:g} constant, wd {cfg.weight_decay:g} | compile {compiled} | weights {str(dtype).replace('torch.', '')}, compute "
        f"{'bf16 autocast' if accelerator.mixed_precision == 'bf16' else accelerator.mixed_precision if accelerator.mixed_precision != 'no' else 'fp32'} "
        f"on {device}{fsdp2_reduction(accelerator)}" + (f" | {n % cfg.batch_size} samples left out of each epoch (n not divisible by batch)" if n % cfg.batch_size else ""))

    tracker = ChangeTracker(accelerator.unwrap_model(model), reduce=lambda t: accelerator.reduce(t, "sum"))
    probe = _Probe(cfg, model, accelerator, tokenizer, train_rows, val_rows, contexts)

    def log(row: dict) -> None:
        if accelerator.is_main_process:
            append_jsonl(run.train_log, row)
        if cfg.tracker:
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])

    if start_epoch == 0 and cfg.probe_every:
        log(probe(epoch=0, step=0, epoch_loss=None, changed=None))

    bar = tqdm(total=steps_per_epoch * cfg.epochs, initial=step, disable=not accelerator.is_local_main_process,
               desc="hyperfitting", dynamic_ncols=True)
    summary = {"epochs_run": start_epoch, "steps": step, "final_train_loss": None, "stopped": "epochs"}
    t0 = time.time()
    # The logged loss is the mean of the updates since the last log; the window runs across epochs, so
    # log_every need not divide the updates per epoch.
    window_loss, window_steps = torch.zeros((), device=device), 0
    if resume_state is not None and "log_window" in resume_state:  # the window open at the checkpoint
        total, window_steps = resume_state["log_window"]
        window_loss += total if accelerator.is_main_process else 0.0  # summed over ranks when logged
    last_epoch = cfg.epochs
    if resume_state is not None and reached_stop_loss(cfg, resume_state.get("train_loss_epoch")):
        last_epoch = start_epoch  # the run had stopped there: resuming it trains nothing more
        summary["stopped"] = (f"train loss {resume_state['train_loss_epoch']:.4g} <= train.stop_at_loss="
                              f"{cfg.stop_at_loss:g} at epoch {start_epoch}, before this resume")
    for epoch in range(start_epoch + 1, last_epoch + 1):
        # The samples and the order live on the device: a step indexes them there, with no host→device copy
        # (a pageable copy can stall the host behind the queued kernels).
        order = epoch_order(n, cfg.seed, epoch).to(device)
        epoch_loss = torch.zeros((), device=device)
        for b in range(steps_per_epoch):
            batch = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            mine = batch[accelerator.process_index * micro * cfg.grad_accum :][: micro * cfg.grad_accum]
            loss = _update(model, optimizer, accelerator, ids[mine], micro, tokens_per_update, cfg, loss_fn)
            epoch_loss += loss
            window_loss += loss
            window_steps += 1
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                value = accelerator.reduce(window_loss, "sum").item() / window_steps  # host sync, every log_every
                bar.set_postfix(loss=f"{value:.4f}", epoch=epoch)
                log({"type": "step", "epoch": epoch, "step": step, "loss": value, "lr": cfg.lr})
                window_loss.zero_()
                window_steps = 0
        mean_loss = accelerator.reduce(epoch_loss, "sum").item() / steps_per_epoch
        changed = tracker.changed()
        tracker.snapshot()
        summary.update(epochs_run=epoch, steps=step, final_train_loss=mean_loss)
        is_probe = cfg.probe_every and (epoch % cfg.probe_every == 0 or epoch == cfg.epochs)
        stop = reached_stop_loss(cfg, mean_loss)
        row = (probe(epoch, step, mean_loss, changed) if is_probe or stop else
               {"type": "epoch", "epoch": epoch, "step": step, "train_loss_epoch": mean_loss, "weights_changed": changed})
        log(row)
        if cfg.save_every and (epoch % cfg.save_every == 0 or epoch == cfg.epochs or stop):
            save_checkpoint(run.epoch_checkpoint(epoch), accelerator, model, tokenizer, optimizer,
                            {"epoch": epoch, "step": step, "seed": cfg.seed, "writer": engine_of(accelerator, cfg),
                             "train_loss_epoch": mean_loss,
                             "log_window": [accelerator.reduce(window_loss, "sum").item(), window_steps]})
            if accelerator.is_main_process:
                prune_checkpoints(run, cfg.keep_checkpoints)
        if stop:
            summary["stopped"] = f"train loss {mean_loss:.4g} <= train.stop_at_loss={cfg.stop_at_loss:g}"
            print0(f"Stopping after epoch {epoch}: {summary['stopped']}")
            break
    bar.close()
    summary["seconds"] = round(time.time() - t0, 2)
    save_checkpoint(run.final, accelerator, model, tokenizer, None, {})
    if accelerator.is_main_process:
        write_model_card(run.final, model_cfg.name, cfg, summary)
    if cfg.tracker:
        accelerator.end_training()
    if cfg.push_to_hub and accelerator.is_main_process:
        push_to_hub(run.final, cfg.push_to_hub)
    return summary


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


def _prepare(accelerator, model, cfg: TrainConfig, micro: int, compiled: bool):
    """Optimizer + accelerator.prepare; DeepSpeed gets its optimizer from its own config."""
    if "DEEPSPEED" in str(accelerator.distributed_type):
        from accelerate.utils import DummyOptim

        fill_deepspeed_config(accelerator.state.deepspeed_plugin.deepspeed_config, cfg, micro)
        # DeepSpeed builds AdamW (its CPU Adam when offloading) from its config; accelerate takes lr and
        # weight decay from this placeholder.
        optimizer = DummyOptim(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        from hyperfit.training.optim import build_optimizer

        optimizer = build_optimizer(model, cfg, compile=compiled, device=accelerator.device)  # model still on CPU
    return accelerator.prepare(model, optimizer)


def _update(model, optimizer, accelerator, ids: torch.Tensor, micro: int, tokens_per_update: int,
            cfg: TrainConfig, loss_fn) -> torch.Tensor:
    """One optimizer update over this rank's share of the global batch; returns its mean loss (on device)."""
    total = torch.zeros((), device=ids.device)
    chunks = ids.split(micro)
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        # Skip the gradient all-reduce on all but the last micro-batch of the update.
        with accelerator.no_sync(model) if not last else nullcontext():
            loss = loss_fn(chunk) / tokens_per_update
            # DDP averages gradients over ranks; each rank's share was divided by the global token count,
            # so scale back up to get the global per-token mean.
            accelerator.backward(loss * accelerator.num_processes)
        total += loss.detach()
    if cfg.max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


class _Probe:
    """The numbers the paper tracks per epoch: train/val loss, entropy, top-1 mass, greedy TTR, examples."""

    def __init__(self, cfg: TrainConfig, model, accelerator, tokenizer, train_rows, val_rows, contexts):
        self.cfg, self.model, self.accelerator, self.tokenizer = cfg, model, accelerator, tokenizer
        self.train_ids = [r["input_ids"] for r in train_rows[: cfg.probe_val]]
        self.val_ids = [r["input_ids"] for r in val_rows[: cfg.probe_val]]
        self.contexts = contexts[: cfg.probe_contexts]

    def __call__(self, epoch: int, step: int, epoch_loss: float | None, changed: float | None) -> dict:
        from hyperfit.stages.data import continuation_text
        from hyperfit.decoding.presets import generation_config
        from hyperfit.stages.generate import continue_contexts
        from hyperfit.metrics.lexical import ttr
        from hyperfit.metrics.predictive import predictive_metrics

        model = self.accelerator.unwrap_model(self.model)
        autocast = "bf16" if self.accelerator.mixed_precision == "bf16" else None
        row = {"type": "probe", "epoch": epoch, "step": step, "train_loss_epoch": epoch_loss, "weights_changed": changed}
        row["train_loss"] = predictive_metrics(model, self.train_ids, autocast=autocast)["loss"]
        if self.val_ids:
            val = predictive_metrics(model, self.val_ids, autocast=autocast)
            row.update({f"val_{k}": v for k, v in val.items()})
        if self.contexts:
            gen = generation_config("greedy", self.tokenizer, self.cfg.probe_new_tokens)
            ctx_ids = [c["context_ids"] for c in self.contexts]
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast == "bf16"):
                conts = continue_contexts(model, ctx_ids, gen)
            row["greedy_ttr"] = sum(ttr(c, self.cfg.probe_new_tokens) for c in conts) / len(conts)
            row["examples"] = [continuation_text(self.tokenizer, c, x) for c, x in zip(ctx_ids[:3], conts[:3])]
        return row


def push_to_hub(path: Path, repo_id: str) -> None:
    """Upload the final model folder (weights, tokenizer, model card) to the hub."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(folder_path=str(path), repo_id=repo_id, commit_message="hyperfit: hyperfitted model")
