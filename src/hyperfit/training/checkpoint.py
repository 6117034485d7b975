"""Checkpoints of `hyperfit train` and what `--resume` reads back from them.

    hyperfit train runs/demo --resume              # continue from the last complete checkpoint

checkpoints/epoch-NNNN/ (or step-NNNNNNN/ under train.updates, possibly inside an epoch) holds the model
(safetensors) and tokenizer, plus training_state.pt: epochs done, step, the open loss-log window (and the
epoch's loss so far, inside an epoch), RNG state and (one process, DDP) the optimizer state. Sharded engines (FSDP2,
DeepSpeed) keep every rank's shard of model and optimizer in sharded_state/ instead, written by
accelerator.save_state. This layout is part of the run-directory contract: runs written earlier resume.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

from hyperfit.errors import RunError, TrainError
from hyperfit.runs import RunDir, atomic_dir, read_jsonl, sweep_interrupted_writes, write_jsonl
from hyperfit.training.engine import is_sharded
from hyperfit.training.lora import ADAPTER_DIR, merged, save_adapter

STATE_FILE = "training_state.pt"
SHARDED_DIR = "sharded_state"  # accelerator.save_state output under FSDP / DeepSpeed


@dataclass
class Start:
    """Where training starts: epoch 0 of a new run, or the last complete checkpoint of an interrupted one."""

    epoch: int = 0
    step: int = 0
    state: dict | None = None  # the checkpoint's training_state.pt, when resuming
    checkpoint: Path | None = None  # the folder the weights load from, when resuming


def find_start(run: RunDir, resume: bool) -> Start:
    """The last complete checkpoint under --resume, else a fresh start; refuses to overwrite training output."""
    ckpts = run.epoch_checkpoints() if resume else []
    if resume and not ckpts and run.final.is_dir():
        raise RunError(f"--resume: {run.path} has finished training (checkpoints/final/) and kept no epoch checkpoint "
                       "(train.save_every=0, or train.updates without train.save_every_updates), so there is no "
                       f"optimizer state to continue from. To train further, start a new run from its weights: "
                       f"model.name={run.final}")
    if resume and not ckpts:
        # Interrupted before the first checkpoint: nothing to keep, start over.
        print(f"--resume: no complete checkpoint in {run.checkpoints}; training from the start")
        run.train_log.unlink(missing_ok=True)
    elif resume:
        # To the CPU: saved from rank 0's GPU, the optimizer state would otherwise be loaded onto GPU 0 by every
        # rank (before any has picked its device) and kept there for the whole run.
        state = load_training_state(ckpts[-1] / STATE_FILE)
        return Start(state["epoch"], state["step"], state, ckpts[-1])
    if run.train_log.exists() or run.epoch_checkpoints() or run.final.exists():
        raise RunError(f"{run.path} already holds training output (train_log.jsonl / checkpoints); pass --resume to "
                       "continue it, or choose another run name")
    return Start()


def check_resume(saved: dict, checkpoint: Path, now: dict) -> None:
    """Refuse a --resume whose launch or optimizer cannot take the checkpoint's state, before any write.

    Sharded state (FSDP2 / ZeRO-3) loads only into the same engine over the same number of processes; a
    whole optimizer state does not load into a sharded one; AdamW and Kahan AdamW keep different state."""
    # Run-directory format 1 checkpoints written before the writer was recorded have no "writer": only
    # whether they are sharded is known, and their engine and process count are not checked.
    then = {"sharded": (checkpoint / SHARDED_DIR).is_dir(), **saved.get("writer", {})}
    same_launch = then["sharded"] == now["sharded"] and (
        not then["sharded"] or "engine" not in then
        or (then["engine"], then["processes"]) == (now["engine"], now["processes"]))
    if not same_launch:
        raise TrainError(f"--resume: {checkpoint} was written by {_launch_name(then)}, but this launch is "
                         f"{_launch_name(now)}. Its optimizer state only loads under the launch that wrote it: resume "
                         "with the same accelerate config and --num_processes (or start a new run from its weights: "
                         f"model.name={checkpoint})")
    was, now_method = then.get("method", "full"), now.get("method", "full")
    if was != now_method:
        raise TrainError(f"--resume: {checkpoint} was trained with train.method={was}, not {now_method}; a LoRA "
                         f"checkpoint holds an adapter, a full one the whole model. Resume with train.method={was}")
    if then.get("optimizer", now["optimizer"]) != now["optimizer"]:
        raise TrainError(f"--resume: {checkpoint} was trained with train.optimizer={then['optimizer']}, not "
                         f"{now['optimizer']}; their states differ (Kahan AdamW keeps a compensation buffer beside "
                         f"bf16 weights). Resume with train.optimizer={then['optimizer']} (and its model.dtype)")


def _launch_name(writer: dict) -> str:
    """'FSDP over 2 process(es)', 'one process', ... for a checkpoint's writer or this launch."""
    if "engine" not in writer:  # a checkpoint that records no writer (see check_resume)
        return "a sharded engine" if writer["sharded"] else "one process or DDP"
    if writer["engine"] == "NO":
        return "one process"
    engine = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}.get(writer["engine"], "DDP")
    return f"{engine} over {writer['processes']} process(es)"


def restore(start: Start, accelerator, optimizer, run: RunDir) -> None:
    """Optimizer and RNG state of the checkpoint start resumes from; the log is cut back to it."""
    if (start.checkpoint / SHARDED_DIR).is_dir():
        accelerator.load_state(str(start.checkpoint / SHARDED_DIR))  # every rank loads its shard
    else:
        optimizer.load_state_dict(start.state.pop("optimizer"))  # copied to the device: drop the CPU copy
    _set_rng_state(start.state["rng"])
    # Rows logged after the checkpoint belong to the interrupted attempt; the resumed run rewrites them.
    if accelerator.is_main_process:
        kept = [r for r in read_jsonl(run.train_log, tolerate_tail=True) if r["step"] <= start.step]
        write_jsonl(run.train_log, kept)


def save_checkpoint(path: Path, accelerator, model, tokenizer, optimizer, state: dict,
                    files: dict[str, str] | None = None, adapter=None) -> None:
    """Model (safetensors) + tokenizer + optimizer/RNG state (+ `files`: name → text, e.g. the model card),
    written to a temp dir and renamed, so the folder appears with all of them or not at all.

    Sharded engines: the consolidated HF folder (for users; get_state_dict gathers the full weights, a
    collective every rank must enter) plus every rank's shard of model and optimizer written by
    accelerator.save_state into SHARDED_DIR (what --resume loads; the optimizer cannot be gathered cheaply).
    Tested on CPU processes through tests/engine_on_cpu.py, which turns these engines on over gloo.

    `adapter` (train.method=lora: the PeftModel): a checkpoint holds the adapter, not the frozen base; the
    final folder (no optimizer) the merged model with the adapter in adapter/ (lora.py).
    """
    unwrapped = accelerator.unwrap_model(model)
    weights = accelerator.get_state_dict(model) if adapter is None else None
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
            if adapter is None:
                unwrapped.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
            else:
                _save_lora(tmp, adapter, final=optimizer is None)
            tokenizer.save_pretrained(tmp)
            for name, text in (files or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")
            if sharded:
                staging.rename(tmp / SHARDED_DIR)
                torch.save({**state, "rng": _rng_state()}, tmp / STATE_FILE)
            elif optimizer is not None:
                torch.save({**state, "optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp / STATE_FILE)
    accelerator.wait_for_everyone()


def _save_lora(folder: Path, adapter, final: bool) -> None:
    """A LoRA checkpoint: the adapter; the final folder: the merged model, the adapter in adapter/."""
    if not final:
        save_adapter(adapter, folder)
        return
    save_adapter(adapter, folder / ADAPTER_DIR)
    merged(adapter).save_pretrained(folder, safe_serialization=True)  # training is over: merging in place is fine


# training_state.pt files of run-directory format 1 written before numpy's RNG state was stored as plain
# numbers hold it as these numpy types, the only globals they need allowed.
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
    """Keep the newest `keep` epoch checkpoints (each a full model copy)."""
    for old in run.epoch_checkpoints()[:-keep]:
        # Renamed first: a kill during the delete leaves a hidden .pruned folder the next start sweeps, not a
        # partial epoch-NNNN/ that no longer counts as a checkpoint and so is never pruned.
        doomed = old.with_name(f".{old.name}.pruned")  # not .old: that suffix is a copy to put back
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def remove_interrupted_writes(run: RunDir) -> None:
    """What checkpoint writes cut short by a kill left (SIGTERM and SIGKILL skip atomic_dir's cleanup): temp
    folders, each a full model copy, and the sharded staging folder; a previous complete copy is put back."""
    sweep_interrupted_writes(run.checkpoints)


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
