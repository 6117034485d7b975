"""Generate stage: continue every held-out context → generations/<tag>.jsonl.

    hyperfit generate runs/demo generate.decoder=greedy generate.max_new_tokens=128
    hyperfit generate runs/demo generate.checkpoint=base      # the model before hyperfitting
    hyperfit generate runs/demo generate.decoder=top_p generate.num_samples=4 generate.seed=1
    hyperfit generate runs/demo generate.block_ngrams=6       # the citation blocker

One row per (context, sample): context id and text, continuation token ids and text, the decoder's name
and effective settings, and which weights produced it. Every decoder shares the contexts, the length rule
and the detokenisation (`data.continuation_text`), so their numbers are comparable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

from hyperfit.config import GenerateConfig, ModelConfig
from hyperfit.stages.data import continuation_text
from hyperfit.decoding.presets import Decoder, effective_settings, generation_config, resolve
from hyperfit.runs import RunDir, RunError, write_jsonl


def checkpoint_path(run: RunDir, model_cfg: ModelConfig, checkpoint: str) -> str | Path:
    """Where the weights named by generate.checkpoint live (base = the untrained model.name)."""
    if checkpoint == "base":
        return model_cfg.name
    path = run.final if checkpoint == "final" else run.checkpoints / checkpoint
    if not path.is_dir():
        have = ", ".join(["base"] + [p.name for p in run.epoch_checkpoints()] + (["final"] if run.final.is_dir() else []))
        raise RunError(f"generate.checkpoint={checkpoint!r}: {path} does not exist (train first); available: {have}")
    return path


@torch.no_grad()
def continue_contexts(model, contexts: Sequence[Sequence[int]], gen_config, batch_size: int = 32,
                      logits_processor=None, seed: int = 0, fast: bool | None = None) -> list[list[int]]:
    """Continuations (new tokens only) of each context, batched, left-padded when lengths differ.

    Under `accelerate launch` the batches are dealt out over the processes and gathered back in order
    (hyperfit.dist). Greedy decoding of equal-length contexts goes through hyperfit.decoding.fast_greedy when
    `fast` (None: on CUDA); in fp32 it gives the tokens of generate() (bf16 rounds differently there).
    """
    from hyperfit.models import has_sharded_weights
    from hyperfit.dist import gather_batches, my_batches

    device = next(model.parameters()).device
    sharded = has_sharded_weights(model)
    fast = uses_fast_loop(model, gen_config, contexts, fast)
    batches = [[list(c) for c in contexts[s : s + batch_size]] for s in range(0, len(contexts), batch_size)]
    saved = model.generation_config
    # generate() fills "unset" fields from model.generation_config; installing ours means nothing the
    # model ships (e.g. do_sample=True) can leak into the call.
    model.generation_config = gen_config
    was_training = model.training
    model.eval()
    results, decoder = {}, None
    try:
        for b in my_batches(len(batches)):
            batch = batches[max(b, 0)]  # b = -1: padding batch, so every rank runs as many forwards
            if fast:
                rows, decoder = _fast_batch(model, batch, gen_config, logits_processor, decoder, sharded)
            else:
                rows = _generate_batch(model, batch, gen_config, logits_processor, seed + max(b, 0), device, sharded)
            results[b] = [cut_at_eos(row, gen_config) for row in rows]
    finally:
        model.generation_config = saved
        model.train(was_training)
    return gather_batches(results, len(batches))


def uses_fast_loop(model, gen_config, contexts: Sequence[Sequence[int]], fast: bool | None) -> bool:
    """Whether continue_contexts decodes with hyperfit.decoding.fast_greedy: generate.fast (None: on CUDA), a plain
    greedy config over equal-length contexts, and an attention kernel the loop supports (sdpa, eager)."""
    from hyperfit.decoding.fast_greedy import ATTENTION, fast_greedy_applies

    on = next(model.parameters()).device.type == "cuda" if fast is None else fast
    attention = getattr(model.config, "_attn_implementation", None) or "sdpa"
    return on and attention in ATTENTION and fast_greedy_applies(gen_config, contexts)


def _generate_batch(model, batch, gen_config, logits_processor, seed: int, device, sharded: bool = False
                    ) -> list[list[int]]:
    pad = gen_config.pad_token_id
    width = max(len(c) for c in batch)
    ids = torch.tensor([[pad] * (width - len(c)) + c for c in batch], device=device)
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in batch], device=device)
    if gen_config.do_sample:
        torch.manual_seed(seed)  # per batch, so a rerun with the same batch size reproduces
    # Sharded: a rank whose rows all ended keeps stepping until every rank's have (transformers detects
    # this for its own FSDP wrapping and ZeRO-3, not for accelerate's FSDP2).
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config,
                         logits_processor=logits_processor, synced_gpus=True if sharded else None)
    return out[:, width:].tolist()


def _fast_batch(model, batch, gen_config, logits_processor, decoder, sharded: bool):
    """One batch through a GreedyDecoder built once per call (a short last batch is padded with its first
    row, so the recorded shapes never change). Sharded weights: the eager loop, since every forward is a
    collective that a recorded CUDA graph cannot hold; it computes what the graph replays, so a sharded
    launch writes the tokens one process writes, in bf16 too (generate() rounds differently there)."""
    from hyperfit.decoding.fast_greedy import GreedyDecoder, eos_ban

    if decoder is None:
        # The first batch is full unless it is the only one, so its size fits every later batch.
        decoder = GreedyDecoder(model, len(batch), len(batch[0]), gen_config.max_new_tokens, ban_ids=eos_ban(gen_config),
                                processor=logits_processor, mode="eager" if sharded else "auto")
    rows = batch + [batch[0]] * (decoder.B - len(batch))
    out = decoder(torch.tensor(rows, device=decoder.device))
    return out[: len(batch)].tolist(), decoder


def cut_at_eos(row: list[int], gen_config) -> list[int]:
    if gen_config.min_new_tokens == gen_config.max_new_tokens:
        return row  # fixed length: EOS was suppressed, nothing to cut
    eos = gen_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    for i, t in enumerate(row):
        if t in eos:
            return row[: i + 1]
    return row


def default_tag(cfg: GenerateConfig) -> str:
    if cfg.tag:
        return cfg.tag
    return cfg.decoder if cfg.checkpoint == "final" else f"{cfg.checkpoint}-{cfg.decoder}"


def sample_seed(seed: int, sample: int) -> int:
    """Seed of sample `sample`: sample 0 keeps generate.seed, so num_samples=1 runs reproduce older ones.

    >>> sample_seed(0, 0), sample_seed(0, 1) != sample_seed(1, 0)
    (0, True)
    """
    if sample == 0:
        return seed
    # continue_contexts adds the batch index to the seed, so neighbouring integers would share batches.
    return int(hashlib.sha256(f"{seed}/{sample}".encode()).hexdigest()[:8], 16)


def blocker_processor(run: RunDir, cfg: GenerateConfig, tokenizer):
    """LogitsProcessorList with the citation blocker over data/train.jsonl's token ids (None when off)."""
    if cfg.block_ngrams is None:
        return None
    from transformers import LogitsProcessorList

    from hyperfit.decoding.blocker import NgramBlocker, starts_word_from_tokenizer

    train_ids = [r["input_ids"] for r in run.read_samples("train")]
    starts_word = starts_word_from_tokenizer(tokenizer) if cfg.block_until_word_end else None
    return LogitsProcessorList([NgramBlocker.from_samples(train_ids, cfg.block_ngrams, starts_word=starts_word,
                                                          delay_until_word_end=cfg.block_until_word_end)])


def decode(model, contexts: Sequence[Sequence[int]], decoder: Decoder, gen_config, cfg: GenerateConfig,
           logits_processor=None) -> list[list[list[int]]]:
    """Continuations [sample][context] of every context; one sample unless the decoder samples."""
    from hyperfit.decoding.contrastive import contrastive_search

    samples = []
    for s in range(cfg.num_samples if decoder.samples else 1):
        if decoder.preset.method == "contrastive":
            samples.append(contrastive_search(model, contexts, gen_config, decoder.params["penalty_alpha"],
                                              decoder.params["top_k"], cfg.batch_size, logits_processor))
        else:
            samples.append(continue_contexts(model, contexts, gen_config, cfg.batch_size, logits_processor,
                                             seed=sample_seed(cfg.seed, s), fast=cfg.fast))
    return samples


def prepare_decoder(cfg: GenerateConfig, model_cfg: ModelConfig, run: RunDir, model) -> Decoder:
    """The resolved decoder; a search that needs the model (entropy matching) runs here."""
    decoder = resolve(cfg.decoder, cfg.params)
    if decoder.preset.method == "entropy_matched":
        from hyperfit.decoding.entropy_match import prepare

        decoder = prepare(decoder, model, run, model_cfg)
    return decoder


def generation_rows(cfg: GenerateConfig, model_cfg: ModelConfig, run: RunDir, model, tokenizer,
                    contexts: list[dict] | None = None) -> list[dict]:
    """Rows for generations/<tag>.jsonl: every context (× sample) continued by cfg's decoder and checkpoint."""
    contexts = run.read_samples("contexts") if contexts is None else contexts
    decoder = prepare_decoder(cfg, model_cfg, run, model)
    gen_config = generation_config(decoder, tokenizer, cfg.max_new_tokens, cfg.stop_at_eos)
    samples = decode(model, [c["context_ids"] for c in contexts], decoder, gen_config, cfg,
                     blocker_processor(run, cfg, tokenizer))
    settings = effective_settings(gen_config, decoder)
    # Which loop wrote the rows: in bf16 the static-cache loop and generate() can part where logits nearly tie.
    fast = decoder.preset.method != "contrastive" and uses_fast_loop(model, gen_config,
                                                                      [c["context_ids"] for c in contexts], cfg.fast)
    source = checkpoint_path(run, model_cfg, cfg.checkpoint)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return [
        {"context_id": c["id"], "context": c["context"], "continuation_ids": ids,
         "continuation": continuation_text(tokenizer, c["context_ids"], ids), "decoder": cfg.decoder,
         "decoder_config": settings, "block_ngrams": cfg.block_ngrams,
         "block_until_word_end": cfg.block_until_word_end if cfg.block_ngrams else None, "checkpoint": cfg.checkpoint,
         "model": str(source), "dtype": dtype, "fast_greedy": fast, "sample": s, "seed": sample_seed(cfg.seed, s) if decoder.samples else None}
        for s, conts in enumerate(samples) for c, ids in zip(contexts, conts)
    ]


def inference_dtype(cfg: GenerateConfig) -> str:
    """generate.dtype resolved: auto is bfloat16 when this process decodes on CUDA, float32 otherwise."""
    from hyperfit.dist import device

    if cfg.dtype != "auto":
        return cfg.dtype
    return "bfloat16" if device().type == "cuda" else "float32"


def load_checkpoint(cfg: GenerateConfig, model_cfg: ModelConfig, run: RunDir):
    """(model ready for inference in generate.dtype, tokenizer) for generate.checkpoint."""
    from dataclasses import replace

    from hyperfit.models import load_for_inference, load_tokenizer

    source = checkpoint_path(run, model_cfg, cfg.checkpoint)
    path = None if cfg.checkpoint == "base" else source
    model = load_for_inference(replace(model_cfg, dtype=inference_dtype(cfg)), path)
    return model, load_tokenizer(model_cfg, path)


def generate(cfg: GenerateConfig, model_cfg: ModelConfig, run: RunDir, model=None, tokenizer=None) -> Path:
    """Continue data/contexts.jsonl with the configured checkpoint and decoder; returns the output file."""
    from hyperfit.dist import barrier, world

    run = RunDir.of(run)

    resolve(cfg.decoder, cfg.params)  # fail on a typo before loading anything
    if model is None or tokenizer is None:
        loaded_model, loaded_tokenizer = load_checkpoint(cfg, model_cfg, run)
        model = loaded_model if model is None else model
        tokenizer = loaded_tokenizer if tokenizer is None else tokenizer
    rows = generation_rows(cfg, model_cfg, run, model, tokenizer)
    out = run.generation_file(default_tag(cfg))
    rank, size = world()
    if rank == 0:  # every rank holds all rows (gathered); one writes them
        write_jsonl(out, rows)
        print(f"{len(rows)} continuations from {size} process(es)")
    barrier()
    return out
