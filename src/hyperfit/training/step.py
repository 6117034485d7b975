"""The training step's speed levers, each kept because benchmarks/train_step.py measured it to help.

    autocast = own_autocast(accelerator, model)      # model: the accelerate-prepared model
    loss_fn = make_loss_fn(model, compile=True, autocast=autocast)
    loss = loss_fn(ids)                              # next-token CE summed over target tokens

- torch.compile of the prepared model (train.compile; default on CUDA only: compiling costs tens of
  seconds, and CPU runs are tests and demos). The prepared model is compiled, not the bare one, as torch
  documents for DDP (the compiler then splits graphs at gradient buckets); `accelerator.unwrap_model`
  strips both wrappers, so checkpoints, probes and generation see the plain, uncompiled model.
- The cross-entropy is compiled on its own: its fp32 upcast, log-softmax, gather and their backward become
  one pass over the bf16 logits, instead of materialising full-vocabulary fp32 logits (8 × 256 × 32000 ×
  4 B = 262 MB for TinyLlama) twice in forward and again in backward.
- The loop enters bf16 autocast itself, around the forward only (`own_autocast`), instead of keeping
  the wrapper accelerate puts on model.forward, whose outputs it casts to fp32: with that wrapper the
  logits left the model as fp32 whatever the loss did.
- Chunked cross-entropy (train.chunked_loss=N): the decoder runs once, then the output layer and the loss
  run over N target tokens at a time, each chunk recomputed in backward (torch.utils.checkpoint), so the
  logits of the whole batch never exist: Llama-3.1-8B at 8 × 256 has 2048 × 128,256 logits, 0.5 GiB in
  bf16 plus 2 GiB as the fp32 copy and gradient; a chunk of 1024 tokens holds half of that at most. One
  process only (DDP and FSDP wrap the whole forward, which this splits); the memory modes are for one GPU.
- Activation checkpointing (train.activation_checkpointing) trades ~30 % more compute for activation
  memory; it is off unless memory needs it (see `hyperfit plan`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Optional

import torch

from hyperfit.errors import TrainError


def ce_sum(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits[:, t] against ids[:, t + 1], summed, computed in fp32."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")


_compiled_ce: Optional[Callable] = None


def compiled_ce_sum() -> Callable:
    """ce_sum through torch.compile, made once per process (dynamic=False: the batch shape is fixed)."""
    global _compiled_ce
    if _compiled_ce is None:
        _compiled_ce = torch.compile(ce_sum, dynamic=False)
    return _compiled_ce


def use_compile(flag: Optional[bool], device: torch.device) -> bool:
    """train.compile resolved: None means on for CUDA, off elsewhere."""
    return device.type == "cuda" if flag is None else flag


def own_autocast(accelerator, model) -> Callable[[], AbstractContextManager]:
    """Take mixed precision back from accelerate's forward wrapper; returns the context to run forwards in.

    With mixed precision, accelerator.prepare replaces model.forward with autocast(forward) whose outputs
    are cast to fp32. Two things go wrong with it in place:
    - every training step writes full-vocabulary fp32 logits (262 MB for TinyLlama at 8 × 256) and their
      fp32 gradient, which the compiled cross-entropy exists to avoid;
    - every later forward runs under autocast, even where the caller switched it off: the probes' greedy
      decoder would fill its static KV cache with fp32 keys beside bf16 values, which some transformers
      versions refuse.
    So the wrapper is removed and the loop enters the same autocast (accelerator.autocast) around its
    forward. Without mixed precision (or under DeepSpeed, which does its own) both are no-ops.
    """
    inner = accelerator.unwrap_model(model)
    original = inner.__dict__.pop("_original_forward", None)  # set by accelerate when it wrapped forward
    if original is not None:
        inner.forward = original
    return accelerator.autocast


def make_loss_fn(model, compile: bool = False, autocast: Callable[[], AbstractContextManager] = nullcontext,
                 chunk: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """ids (LongTensor[B, T]) → summed next-token loss; with compile, model and CE are compiled.

    `autocast`: the mixed-precision context of the forward (own_autocast); the loss is computed outside it,
    in fp32 from the bf16 logits. `chunk` > 0: the chunked cross-entropy over that many tokens at a time."""
    if chunk:
        return chunked_loss_fn(model, chunk, compile, autocast)
    forward = torch.compile(model) if compile else model
    ce = compiled_ce_sum() if compile else ce_sum

    def loss_fn(ids: torch.Tensor) -> torch.Tensor:
        with autocast():
            # use_cache=False: training needs no KV cache, but transformers builds one by default, and
            # under activation checkpointing the recomputed layer would append its keys to it a second time.
            logits = forward(input_ids=ids, use_cache=False).logits
        return ce(logits, ids)

    loss_fn.model = forward  # what no_sync / backward must see: the (compiled) prepared model
    return loss_fn


def chunked_loss_fn(model, chunk: int, compile: bool = False,
                    autocast: Callable[[], AbstractContextManager] = nullcontext) -> Callable:
    """make_loss_fn's chunked cross-entropy: decoder once, then output layer + loss per `chunk` target tokens.

    Equal to ce_sum of the full logits (tests/test_lowmem.py compares losses and gradients)."""
    check_chunkable(model)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    body = torch.compile(decoder) if compile else decoder

    def head_ce(h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with autocast():
            logits = head(h)
        return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")

    def loss_fn(ids: torch.Tensor) -> torch.Tensor:
        with autocast():
            hidden = body(input_ids=ids, use_cache=False).last_hidden_state
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        targets = ids[:, 1:].reshape(-1)
        # Non-reentrant checkpoint: each chunk keeps only its slice of h (a view) for backward and
        # recomputes its logits there, so one chunk's logits exist at a time, forward and backward.
        return sum(torch.utils.checkpoint.checkpoint(head_ce, h[i:i + chunk], targets[i:i + chunk],
                                                     use_reentrant=False)
                   for i in range(0, h.shape[0], chunk))

    loss_fn.model = model
    return loss_fn


# Config attributes that change logits after the output layer: a chunked loss that skipped them would train
# another objective (Gemma 2's soft-capping, Cohere's logit scale).
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")


def check_chunkable(model) -> None:
    """The chunked loss calls the decoder and the output layer itself: the model must be one plain causal LM."""
    name = type(model).__name__
    if hasattr(model, "module") or hasattr(model, "device_mesh"):
        raise TrainError(f"train.chunked_loss: {name} is wrapped for several processes (DDP/FSDP), whose forward "
                         "the chunked loss would bypass; use it on one GPU, or set train.chunked_loss=0")
    config = getattr(model, "config", None)
    used = [k for k in LOGIT_TRANSFORMS if getattr(config, k, None) not in (None, 1, 1.0)]
    if model.get_output_embeddings() is None or not hasattr(model, "get_decoder") or used:
        why = f"its config transforms the logits ({', '.join(used)})" if used else "it has no decoder + output layer"
        raise TrainError(f"train.chunked_loss: {name} cannot be split into decoder and output layer ({why}); "
                         "set train.chunked_loss=0")


def enable_activation_checkpointing(model) -> None:
    """Recompute each block's activations in backward (transformers' gradient checkpointing)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"train.activation_checkpointing=true: {type(model).__name__} does not support gradient "
                         "checkpointing in transformers; set it to false (or use FSDP's fsdp_activation_checkpointing)")
    # Non-reentrant: works with torch.compile and with inputs that need no grad (token ids).
    # The method (and its kwargs) has two names across transformers 5.x; use whichever exists.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
