"""Train stage: THE hyperfitting loop — full-parameter next-token training on the run's samples.

    hyperfit train runs/demo                       # after `hyperfit run` wrote data/
    hyperfit train runs/demo --resume              # continue from the last complete checkpoint
    accelerate launch --config_file configs/accelerate/ddp.yaml -m hyperfit train runs/demo

One loop for CPU, one GPU and several (accelerate). The global batch is train.batch_size whatever the
device count: each of R ranks takes batch_size / R samples per update, in grad_accum micro-batches. The
loss is summed over target tokens and divided by the global batch's target-token count, so 1 × 8,
1 × (2 × 4 accumulated) and 2 ranks × 4 all compute the same update.

train() reads as its three parts: `setup` (engine, model, optimizer, resume), `fit` (the epochs) and
`finish` (checkpoints/final/, trackers, hub). The engine policy lives in engine.py, checkpoints in
checkpoint.py, the per-epoch probe in probe.py, the final folder in export.py, and how long to train (epochs,
or train.updates) and when to probe and save in budget.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from hyperfit.config import ModelConfig, TrainConfig, to_dict
from hyperfit.errors import TrainError
from hyperfit.models import load_model, load_tokenizer, precision_guard
from hyperfit.runs import RunDir, append_jsonl
from hyperfit.training.budget import Budget
from hyperfit.training.checkpoint import (
    Start,
    check_resume,
    find_start,
    prune_checkpoints,
    remove_interrupted_writes,
    restore,
    save_checkpoint,
)
from hyperfit.training.engine import (
    check_engine,
    compute_precision,
    engine_of,
    fsdp2_reduction,
    local_batch_size,
    local_weights,
    make_accelerator,
    prepare,
    reduce_fsdp2_gradients_in_fp32,
)
from hyperfit.training.export import push_to_hub, save_final
from hyperfit.training.lora import Trained, add_adapters, trained
from hyperfit.training.optim import scheduled_lr, set_lr
from hyperfit.training.probe import ChangeTracker, Probe
from hyperfit.training.step import enable_activation_checkpointing, make_loss_fn, own_autocast, use_compile


def train(cfg: TrainConfig, model_cfg: ModelConfig, run: RunDir, resume: bool = False) -> dict:
    """Hyperfit model_cfg.name on run's data/train.jsonl; writes train_log.jsonl and checkpoints/.

    Returns a summary: epochs run (the last may be partial under train.updates), updates run ("steps"), the
    budget, final mean training loss, why it stopped.
    """
    session = setup(cfg, model_cfg, RunDir.of(run), resume)
    summary = fit(session)
    finish(session, model_cfg, summary)
    return summary


@dataclass
class Session:
    """What setup builds for fit and finish: the prepared model and everything an update or a probe reads."""

    cfg: TrainConfig
    run: RunDir
    start: Start
    accelerator: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    tokenizer: object
    loss_fn: Callable[[torch.Tensor], torch.Tensor]
    micro: int  # samples per micro-batch on one rank
    ids: torch.Tensor  # every training sample, on the device
    probe: Probe
    tracker: ChangeTracker
    budget: Budget
    adapter: object = None  # train.method=lora: the PeftModel around `model`, which saves the adapter

    @property
    def tokens_per_update(self) -> int:
        return self.cfg.batch_size * (self.ids.shape[1] - 1)

    def log(self, row: dict) -> None:
        """One train_log.jsonl row (rank 0), and its numbers to the tracker when one is configured."""
        if self.accelerator.is_main_process:
            append_jsonl(self.run.train_log, row)
        if self.cfg.tracker:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])


# ---------------------------------------------------------------------------------------------------------
# Setup: engine, model, optimizer, resume


def setup(cfg: TrainConfig, model_cfg: ModelConfig, run: RunDir, resume: bool) -> Session:
    """Everything fit needs, checked before the first update; a resumed run gets its optimizer and RNG back."""
    train_rows, val_rows, contexts = (run.read_samples(split) for split in ("train", "val", "contexts"))
    start = find_start(run, resume)
    budget = Budget.of(cfg, len(train_rows))
    _check_budget_kind(cfg, start)
    accelerator = make_accelerator(cfg, run)
    micro = local_batch_size(cfg, accelerator.num_processes, len(train_rows))
    check_engine(cfg, accelerator)
    reduce_fsdp2_gradients_in_fp32(accelerator)
    if start.state is not None:
        check_resume(start.state, start.checkpoint, engine_of(accelerator, cfg))
    if accelerator.is_main_process:
        remove_interrupted_writes(run)
    compiled = use_compile(cfg.compile, accelerator.device)
    model, optimizer, tokenizer, loss_fn, adapter = _build(cfg, model_cfg, accelerator, micro, compiled, start)
    if start.state is not None:
        restore(start, accelerator, optimizer, run)
    if cfg.tracker:
        accelerator.init_trackers(run.path.name, config={k: v for k, v in to_dict(cfg).items() if v is not None})
    # The samples live on the device: a step indexes them there, with no host→device copy (a pageable copy
    # can stall the host behind the queued kernels).
    ids = torch.tensor([r["input_ids"] for r in train_rows]).to(accelerator.device)
    what = trained(accelerator.unwrap_model(model), cfg, adapter)
    accelerator.print(_banner(cfg, accelerator, model, ids, micro, compiled, budget, what))
    tracker = ChangeTracker(accelerator.unwrap_model(model), reduce=lambda t: accelerator.reduce(t, "sum"))
    probe = Probe(cfg, model, accelerator, tokenizer, train_rows, val_rows, contexts)
    session = Session(cfg, run, start, accelerator, model, optimizer, tokenizer, loss_fn, micro, ids, probe, tracker,
                      budget, adapter)
    if start.step == 0:
        session.log(what.row())  # which parameters train: the report's "Trained parameters" line
    return session


def _check_budget_kind(cfg: TrainConfig, start: Start) -> None:
    """A step-NNNNNNN checkpoint (train.updates) sorts after epoch-NNNN ones: continuing it under an epoch
    budget would write epoch checkpoints that the next resume ranks older than it."""
    if cfg.updates is None and start.checkpoint is not None and start.checkpoint.name.startswith("step-"):
        raise TrainError(f"--resume: {start.checkpoint} was written under a train.updates budget, and this run sets "
                         "none; resume with train.updates (the total number of updates to reach)")


def _build(cfg: TrainConfig, model_cfg: ModelConfig, accelerator, micro: int, compiled: bool, start: Start):
    """The model (from the resumed checkpoint if any), its tokenizer, the prepared optimizer, the loss and,
    under train.method=lora, the PeftModel that saves the adapter (else None)."""
    torch.manual_seed(cfg.seed)
    lora = cfg.method == "lora"
    # A LoRA checkpoint holds the adapter only: the frozen base comes from model.name.
    model = load_model(model_cfg, None if lora else start.checkpoint)
    tokenizer = load_tokenizer(model_cfg, start.checkpoint)
    adapter = add_adapters(model, cfg, start.checkpoint) if lora else None
    precision_guard(model, cfg.lr, cfg.optimizer)  # bf16 modes: measured on this model's weights
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    model.train()
    model, optimizer = prepare(accelerator, model, cfg, micro, compiled)
    loss_fn = make_loss_fn(model, compile=compiled, autocast=own_autocast(accelerator, model), chunk=cfg.chunked_loss)
    return model, optimizer, tokenizer, loss_fn, adapter


def _banner(cfg: TrainConfig, accelerator, model, ids: torch.Tensor, micro: int, compiled: bool,
            budget: Budget, what: Trained) -> str:
    """The Training: line, printed once before the first update: the numbers a user checks."""
    n, seq_len = ids.shape
    dtype = local_weights(accelerator.unwrap_model(model))[0].dtype  # what updates land on (ZeRO-3: its fp32 masters)
    left_out = n % cfg.batch_size
    return (
        f"Training: {n} samples × {seq_len} tokens | global batch {cfg.batch_size} = {accelerator.num_processes} "
        f"process(es) × {cfg.grad_accum} micro-batch(es) × {micro} | {cfg.batch_size * (seq_len - 1)} target "
        f"tokens/update | {budget.describe()} ({budget.per_epoch}/epoch) | {budget.cadence()} "
        f"| {cfg.optimizer} lr {cfg.lr:g} {cfg.schedule}, wd {cfg.weight_decay:g} | compile {compiled} | weights "
        f"{str(dtype).replace('torch.', '')}, compute {compute_precision(accelerator)} on {accelerator.device}"
        f"{fsdp2_reduction(accelerator)}"
        + (f" | LoRA r={cfg.lora_rank} alpha={cfg.lora_alpha:g} on blocks {cfg.lora_layers} "
           f"({', '.join(what.targets)}): {what.trainable:,} trainable parameters, {what.share:.2%} of the base"
           if what.method == "lora" else "")
        + (f" | {left_out} samples left out of each epoch (n not divisible by batch)" if left_out else ""))


# ---------------------------------------------------------------------------------------------------------
# Fit: the epochs


class LossWindow:
    """The mean loss of a run of updates: those since the last log, or those of the epoch so far. The log
    window runs across epochs, so log_every need not divide the updates per epoch; a checkpoint saves the
    open windows (a mid-epoch one, under train.updates, the epoch's too) and a resume reopens them."""

    def __init__(self, accelerator, saved: list | None = None):
        self.accelerator = accelerator
        self.total, self.steps = torch.zeros((), device=accelerator.device), 0
        if saved is not None:
            total, self.steps = saved
            self.total += total if accelerator.is_main_process else 0.0  # summed over ranks when logged

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        self.steps += 1

    def take(self) -> float:
        """The window's mean over all ranks, and a new window (a host sync: once every log_every)."""
        value = self.accelerator.reduce(self.total, "sum").item() / self.steps
        self.total.zero_()
        self.steps = 0
        return value

    def saved(self) -> list:
        """[summed loss over the ranks, updates] of the open window, for the checkpoint."""
        return [self.accelerator.reduce(self.total, "sum").item(), self.steps]


def reached_stop_loss(cfg: TrainConfig, epoch_loss: float | None) -> bool:
    return cfg.stop_at_loss is not None and epoch_loss is not None and epoch_loss <= cfg.stop_at_loss


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a pure function of (seed, epoch), so resume needs no sampler state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def swap_batches(order: torch.Tensor, batch_size: int, swaps: int, seed: int) -> torch.Tensor:
    """`order` with `swaps` disjoint pairs of whole batches exchanged (drawn from `seed`; at most batches // 2
    pairs, so no swap undoes another): the same batches, a slightly different sequence of updates.

    >>> swap_batches(torch.arange(6), 2, 1, seed=0).tolist()
    [0, 1, 4, 5, 2, 3]
    >>> swap_batches(torch.arange(4), 2, 2, seed=0).tolist()   # two batches: one pair, swapped once
    [2, 3, 0, 1]
    """
    batches = len(order) // batch_size
    pairs = min(swaps, batches // 2)
    if pairs <= 0:
        return order
    g = torch.Generator().manual_seed(seed * 1_000_003 + 999_983)
    chosen = torch.randperm(batches, generator=g)[: 2 * pairs].tolist()
    out = order.clone()
    for i, j in zip(chosen[::2], chosen[1::2]):
        a, b = slice(i * batch_size, (i + 1) * batch_size), slice(j * batch_size, (j + 1) * batch_size)
        out[a], out[b] = order[b], order[a]
    return out


def fit(s: Session) -> dict:
    """Train from s.start to the budget (train.epochs or train.updates) or train.stop_at_loss; returns the
    summary train() returns."""
    cfg, state, budget = s.cfg, s.start.state or {}, s.budget
    if s.start.step == 0 and budget.probe_every:
        s.log(s.probe(epoch=0, step=0, epoch_loss=None, changed=None))
    bar = tqdm(total=budget.total, initial=min(s.start.step, budget.total),
               disable=not s.accelerator.is_local_main_process, desc="hyperfitting", dynamic_ncols=True)
    summary = {"epochs_run": s.start.epoch, "steps": s.start.step, "budget": budget.describe(),
               "updates_per_epoch": budget.per_epoch,
               "final_train_loss": None, "stopped": "updates" if budget.in_updates else "epochs"}
    t0 = time.time()
    window = LossWindow(s.accelerator, state.get("log_window"))
    # A checkpoint taken inside an epoch (train.updates) carries that epoch's loss so far.
    carried = state.get("epoch_loss")
    last_epoch, step = (budget.epochs if s.start.step < budget.total else s.start.epoch), s.start.step
    if reached_stop_loss(cfg, state.get("train_loss_epoch")):
        last_epoch = s.start.epoch  # the run had stopped there: resuming it trains nothing more
        summary["stopped"] = (f"train loss {state['train_loss_epoch']:.4g} <= train.stop_at_loss="
                              f"{cfg.stop_at_loss:g} at epoch {s.start.epoch}, before this resume")
    for epoch in range(s.start.epoch + 1, last_epoch + 1):
        mean_loss, step = _epoch(s, epoch, step, window, bar, carried)
        carried = None
        summary.update(epochs_run=epoch, steps=step, final_train_loss=mean_loss)
        if _close_epoch(s, epoch, step, mean_loss, window):
            summary["stopped"] = f"train loss {mean_loss:.4g} <= train.stop_at_loss={cfg.stop_at_loss:g}"
            s.accelerator.print(f"Stopping after epoch {epoch}: {summary['stopped']}")
            break
    bar.close()
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


def _epoch(s: Session, epoch: int, step: int, window: LossWindow, bar, carried: list | None) -> tuple[float, int]:
    """The updates of one epoch from `step` (past 0 when resumed inside it) to its end, which under
    train.updates may come before the epoch's last batch; returns its mean loss over the ranks and the step
    count after it. `carried`: the epoch's loss so far, saved by a checkpoint inside it."""
    cfg, budget, per_rank = s.cfg, s.budget, s.micro * s.cfg.grad_accum
    order = epoch_order(len(s.ids), cfg.seed, epoch)
    if epoch == 1:  # train.order_swaps: a minor reshuffle, pure in (seed, swaps) so a resume sees the same order
        order = swap_batches(order, cfg.batch_size, cfg.order_swaps, cfg.seed)
    order = order.to(s.ids.device)
    epoch_loss = LossWindow(s.accelerator, carried)
    begin = (epoch - 1) * budget.per_epoch  # the step count when the epoch started
    for b in range(step - begin, budget.epoch_end(epoch) - begin):
        batch = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        mine = batch[s.accelerator.process_index * per_rank :][:per_rank]
        if cfg.schedule != "constant":
            set_lr(s.optimizer, scheduled_lr(cfg.lr, cfg.schedule, cfg.warmup_updates, step, budget.total))
        loss = _update(s.model, s.optimizer, s.accelerator, s.ids[mine], s.micro, s.tokens_per_update, cfg,
                       s.loss_fn)
        epoch_loss.add(loss)
        window.add(loss)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            value = window.take()
            bar.set_postfix(loss=f"{value:.4f}", epoch=epoch)
            s.log({"type": "step", "epoch": epoch, "step": step, "loss": value,
                   "lr": scheduled_lr(cfg.lr, cfg.schedule, cfg.warmup_updates, step - 1, budget.total)})
        if budget.in_updates and step < budget.epoch_end(epoch):
            _inside_epoch(s, epoch, step, window, epoch_loss)
    return epoch_loss.take(), step


def _inside_epoch(s: Session, epoch: int, step: int, window: LossWindow, epoch_loss: LossWindow) -> None:
    """Under train.updates, a probe or checkpoint that falls inside an epoch (epoch ends: _close_epoch).
    Its probe row has no epoch loss or weight change: those are per epoch."""
    budget = s.budget
    if budget.due(budget.probe_every, epoch, step):
        s.log(s.probe(epoch, step, None, None))
    if budget.due(budget.save_every, epoch, step):
        _save(s, epoch - 1, step, None, window, epoch_loss)


def _close_epoch(s: Session, epoch: int, step: int, mean_loss: float, window: LossWindow) -> bool:
    """Log the epoch (a probe when due), save its checkpoint when due; True when train.stop_at_loss is reached."""
    cfg, budget = s.cfg, s.budget
    changed = s.tracker.changed()
    s.tracker.snapshot()
    stop = reached_stop_loss(cfg, mean_loss)
    s.log(s.probe(epoch, step, mean_loss, changed) if budget.due(budget.probe_every, epoch, step) or stop else
          {"type": "epoch", "epoch": epoch, "step": step, "train_loss_epoch": mean_loss, "weights_changed": changed})
    if budget.due(budget.save_every, epoch, step) or (stop and budget.save_every):
        _save(s, epoch, step, mean_loss, window, None)
    return stop


def _save(s: Session, epochs_done: int, step: int, mean_loss: float | None, window: LossWindow,
          epoch_loss: LossWindow | None) -> None:
    """A resumable checkpoint after `step` updates: epoch-NNNN/ at an epoch end, step-NNNNNNN/ under
    train.updates (two can fall in one epoch); the oldest beyond train.keep_checkpoints are deleted."""
    path = s.run.step_checkpoint(step) if s.budget.in_updates else s.run.epoch_checkpoint(epochs_done)
    save_checkpoint(path, s.accelerator, s.model, s.tokenizer, s.optimizer,
                    {"epoch": epochs_done, "step": step, "seed": s.cfg.seed, "writer": engine_of(s.accelerator, s.cfg),
                     "train_loss_epoch": mean_loss, "log_window": window.saved(),
                     "epoch_loss": epoch_loss.saved() if epoch_loss is not None else None}, adapter=s.adapter)
    if s.accelerator.is_main_process:
        prune_checkpoints(s.run, s.cfg.keep_checkpoints)


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


# ---------------------------------------------------------------------------------------------------------
# Finish: the final folder, trackers, hub


def finish(s: Session, model_cfg: ModelConfig, summary: dict) -> None:
    """checkpoints/final/ with its model card; trackers closed; the folder pushed when train.push_to_hub."""
    save_final(s.run, s.accelerator, s.model, s.tokenizer, model_cfg.name, s.cfg, summary, adapter=s.adapter)
    if s.cfg.tracker:
        s.accelerator.end_training()
    if s.cfg.push_to_hub and s.accelerator.is_main_process:
        push_to_hub(s.run.final, s.cfg.push_to_hub)
