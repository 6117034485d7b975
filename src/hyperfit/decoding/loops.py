"""The one decoding dispatch: model + contexts + decoder → continuations, and which loop wrote them.

    hyperfit generate runs/demo generate.decoder=greedy            # fast greedy on CUDA, generate() elsewhere
    hyperfit generate runs/demo generate.decoder=contrastive       # hyperfit.decoding.contrastive

Three loops exist: `fast_greedy` (static KV cache, hyperfit.decoding.fast_greedy), `generate`
(transformers' model.generate()) and `contrastive` (hyperfit.decoding.contrastive). A preset's method
names its loop; a greedy config of the `generate` loop runs in `fast_greedy` when `fast_greedy_runs` says
so. That function is the only place the choice is made: the cache key of a generation job asks it too,
because in bf16 the two greedy loops can part where two logits nearly tie.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hyperfit.decoding.contrastive import contrastive_search
from hyperfit.decoding.fast_greedy import ATTENTION, GreedyDecoder, fast_greedy_applies
from hyperfit.decoding.tokens import banned_eos, batches, cut_at_eos, left_pad
from hyperfit.dist import gather_batches, my_batches
from hyperfit.models import has_sharded_weights

LOOPS = ("fast_greedy", "generate", "contrastive")


def fast_greedy_runs(gen_config, contexts: Sequence[Sequence[int]], fast: bool | None, device_type: str,
                     attention: str | None) -> bool:
    """Whether a `generate`-loop config decodes in the fast greedy loop: generate.fast (None: on CUDA), a
    plain greedy config over equal-length contexts, and an attention kernel the loop supports (sdpa, eager;
    None is transformers' default, sdpa)."""
    on = device_type == "cuda" if fast is None else fast
    return on and (attention or "sdpa") in ATTENTION and fast_greedy_applies(gen_config, contexts)


def model_runs_fast_greedy(model, gen_config, contexts: Sequence[Sequence[int]], fast: bool | None) -> bool:
    """`fast_greedy_runs` for a loaded model (its device and attention kernel)."""
    return fast_greedy_runs(gen_config, contexts, fast, *_device_and_attention(model))


# Models whose attention ignores a static cache's empty slots only when given a mask, which the fast loop does
# not pass: ImageGPT builds its mask from attention_mask alone, so its fast-loop tokens differed from generate().
NO_STATIC_CACHE = ("imagegpt",)


def _device_and_attention(model) -> tuple[str, str | None]:
    if getattr(model.config, "model_type", None) in NO_STATIC_CACHE:
        return next(model.parameters()).device.type, "no static cache"  # not in ATTENTION: generate() runs
    return next(model.parameters()).device.type, getattr(model.config, "_attn_implementation", None)


def loop_for(decoder, gen_config, contexts: Sequence[Sequence[int]], fast: bool | None, device_type: str,
             attention: str | None) -> str:
    """The loop (one of LOOPS) that `decode` will run for `decoder` on a model of this device and kernel."""
    if decoder.method.loop == "generate" and fast_greedy_runs(gen_config, contexts, fast, device_type, attention):
        return "fast_greedy"
    return decoder.method.loop


@dataclass(frozen=True)
class Decoded:
    samples: list[list[list[int]]]
    """Continuations [sample][context], new tokens only."""
    loop: str
    """The loop that wrote them (one of LOOPS)."""


def decode(model, contexts: Sequence[Sequence[int]], decoder, gen_config, *, batch_size: int = 32,
           num_samples: int = 1, seed: int = 0, fast: bool | None = None, logits_processor=None) -> Decoded:
    """Continuations of every context by a resolved decoder; `num_samples` of them when it samples."""
    loop = loop_for(decoder, gen_config, contexts, fast, *_device_and_attention(model))
    samples = []
    for s in range(num_samples if decoder.samples else 1):
        if loop == "contrastive":
            samples.append(contrastive_search(model, contexts, gen_config, decoder.params["penalty_alpha"],
                                              decoder.params["top_k"], batch_size, logits_processor))
        else:
            samples.append(continue_contexts(model, contexts, gen_config, batch_size, logits_processor,
                                             seed=sample_seed(seed, s), fast=loop == "fast_greedy"))
    return Decoded(samples, loop)


def sample_seed(seed: int, sample: int) -> int:
    """Seed of sample `sample`: sample 0 keeps generate.seed, so its tokens do not depend on num_samples.

    >>> sample_seed(0, 0), sample_seed(0, 1) != sample_seed(1, 0)
    (0, True)
    """
    if sample == 0:
        return seed
    # continue_contexts adds the batch index to the seed, so neighbouring integers would share batches.
    return int(hashlib.sha256(f"{seed}/{sample}".encode()).hexdigest()[:8], 16)


@torch.no_grad()
def continue_contexts(model, contexts: Sequence[Sequence[int]], gen_config, batch_size: int = 32,
                      logits_processor=None, seed: int = 0, fast: bool | None = None) -> list[list[int]]:
    """Continuations (new tokens only) of each context, batched, left-padded when lengths differ.

    Under `accelerate launch` the batches are dealt out over the processes and gathered back in order
    (hyperfit.dist). Greedy decoding of equal-length contexts goes through hyperfit.decoding.fast_greedy when
    `model_runs_fast_greedy` says so (`fast` None: on CUDA); in fp32 it gives the tokens of generate() (bf16
    rounds differently there).
    """
    device = next(model.parameters()).device
    sharded = has_sharded_weights(model)
    fast = model_runs_fast_greedy(model, gen_config, contexts, fast)
    todo = batches(contexts, batch_size)
    saved = model.generation_config
    # generate() fills "unset" fields from model.generation_config; installing ours means nothing the
    # model ships (e.g. do_sample=True) can leak into the call.
    model.generation_config = gen_config
    was_training = model.training
    model.eval()
    results, decoder = {}, None
    try:
        for b in my_batches(len(todo)):
            batch = todo[max(b, 0)]  # b = -1: padding batch, so every rank runs as many forwards
            if fast:
                rows, decoder = _fast_batch(model, batch, gen_config, logits_processor, decoder, sharded)
            else:
                rows = _generate_batch(model, batch, gen_config, logits_processor, seed + max(b, 0), device, sharded)
            results[b] = [cut_at_eos(row, gen_config) for row in rows]
    finally:
        model.generation_config = saved
        model.train(was_training)
    return gather_batches(results, len(todo))


def _generate_batch(model, batch, gen_config, logits_processor, seed: int, device, sharded: bool = False
                    ) -> list[list[int]]:
    ids, mask = left_pad(batch, gen_config.pad_token_id, device)
    if gen_config.do_sample:
        torch.manual_seed(seed)  # per batch, so a rerun with the same batch size reproduces
    # Sharded: a rank whose rows all ended keeps stepping until every rank's have (transformers detects
    # this for its own FSDP wrapping and ZeRO-3, not for accelerate's FSDP2).
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config,
                         logits_processor=logits_processor, synced_gpus=True if sharded else None)
    return out[:, ids.shape[1]:].tolist()


def _fast_batch(model, batch, gen_config, logits_processor, decoder, sharded: bool):
    """One batch through a GreedyDecoder built once per call (a short last batch is padded with its first
    row, so the recorded shapes never change). Sharded weights: the eager loop, since every forward is a
    collective that a recorded CUDA graph cannot hold; it computes what the graph replays, so a sharded
    launch writes the tokens one process writes, in bf16 too (generate() rounds differently there)."""
    if decoder is None:
        # The first batch is full unless it is the only one, so its size fits every later batch.
        decoder = GreedyDecoder(model, len(batch), len(batch[0]), gen_config.max_new_tokens,
                                ban_ids=banned_eos(gen_config), processor=logits_processor,
                                mode="eager" if sharded else "auto")
    rows = batch + [batch[0]] * (decoder.B - len(batch))
    out = decoder(torch.tensor(rows, device=decoder.device))
    return out[: len(batch)].tolist(), decoder
