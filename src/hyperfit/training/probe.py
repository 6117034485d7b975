"""The per-epoch probe of `hyperfit train`: the numbers the paper tracks while a model hyperfits.

    hyperfit train runs/demo train.probe_every=1    # a probe row in train_log.jsonl after every epoch

Train and validation loss, entropy and top-1 mass of the next-token distribution, the type-token ratio of
greedy continuations and a few examples (`Probe`); the share of weights each epoch changed (`ChangeTracker`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from hyperfit.config import TrainConfig
from hyperfit.decoding.presets import generation_config
from hyperfit.metrics.lexical import ttr
from hyperfit.metrics.predictive import predictive_metrics
from hyperfit.stages import generate as generate_stage
from hyperfit.stages.data import continuation_text
from hyperfit.training.engine import local_weights


class Probe:
    """The numbers the paper tracks per epoch: train/val loss, entropy, top-1 mass, greedy TTR, examples."""

    def __init__(self, cfg: TrainConfig, model, accelerator, tokenizer, train_rows, val_rows, contexts):
        self.cfg, self.model, self.accelerator, self.tokenizer = cfg, model, accelerator, tokenizer
        self.train_ids = [r["input_ids"] for r in train_rows[: cfg.probe_val]]
        self.val_ids = [r["input_ids"] for r in val_rows[: cfg.probe_val]]
        self.contexts = contexts[: cfg.probe_contexts]

    def __call__(self, epoch: int, step: int, epoch_loss: float | None, changed: float | None) -> dict:
        model = self.accelerator.unwrap_model(self.model)
        autocast = "bf16" if self.accelerator.mixed_precision == "bf16" else None
        row = {"type": "probe", "epoch": epoch, "step": step, "train_loss_epoch": epoch_loss,
               "weights_changed": changed}
        row["train_loss"] = predictive_metrics(model, self.train_ids, autocast=autocast)["loss"]
        if self.val_ids:
            val = predictive_metrics(model, self.val_ids, autocast=autocast)
            row.update({f"val_{k}": v for k, v in val.items()})
        if self.contexts:
            row.update(self._greedy(model, autocast))
        return row

    def _greedy(self, model, autocast: str | None) -> dict:
        """Greedy continuations of the probe contexts: their mean TTR and the first three as text."""
        gen = generation_config("greedy", self.tokenizer, self.cfg.probe_new_tokens)
        ctx_ids = [c["context_ids"] for c in self.contexts]
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast == "bf16"):
            conts = generate_stage.continue_contexts(model, ctx_ids, gen)
        return {"greedy_ttr": sum(ttr(c, self.cfg.probe_new_tokens) for c in conts) / len(conts),
                "examples": [continuation_text(self.tokenizer, c, x) for c, x in zip(ctx_ids[:3], conts[:3])]}


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
