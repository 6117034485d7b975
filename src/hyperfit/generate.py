"""Generate stage: continue every held-out context → generations/<tag>.jsonl.

    hyperfit generate runs/demo generate.decoder=greedy generate.max_new_tokens=128
    hyperfit generate runs/demo generate.checkpoint=base      # the model before hyperfitting

One row per (context, sample): context id and text, continuation token ids and text, the decoder's name
and effective settings, and which weights produced it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from hyperfit.config import GenerateConfig, ModelConfig
from hyperfit.data import continuation_text
from hyperfit.decoding import effective_settings, generation_config, get_preset
from hyperfit.runs import RunDir, RunError, write_jsonl


def default_device() -> torch.device:
    from hyperfit.ranks import device

    return device()  # cuda:LOCAL_RANK under a multi-GPU `accelerate launch`


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
    (hyperfit.ranks). Greedy decoding of equal-length contexts goes through hyperfit.fast_greedy when
    `fast` (None: on CUDA); it gives the same tokens as generate().
    """
    from hyperfit.fast_greedy import fast_greedy_applies
    from hyperfit.ranks import gather_batches, my_batches

    device = next(model.parameters()).device
    fast = (device.type == "cuda" if fast is None else fast) and fast_greedy_applies(gen_config, contexts)
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
                rows, decoder = _fast_batch(model, batch, gen_config, logits_processor, decoder, batch_size)
            else:
                rows = _generate_batch(model, batch, gen_config, logits_processor, seed + max(b, 0), device)
            results[b] = [_cut_at_eos(row, gen_config) for row in rows]
    finally:
        model.generation_config = saved
        model.train(was_training)
    return gather_batches(results, len(batches))


def _generate_batch(model, batch, gen_config, logits_processor, seed: int, device) -> list[list[int]]:
    pad = gen_config.pad_token_id
    width = max(len(c) for c in batch)
    ids = torch.tensor([[pad] * (width - len(c)) + c for c in batch], device=device)
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in batch], device=device)
    if gen_config.do_sample:
        torch.manual_seed(seed)  # per batch, so a rerun with the same batch size reproduces
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config,
                         logits_processor=logits_processor)
    return out[:, width:].tolist()


def _fast_batch(model, batch, gen_config, logits_processor, decoder, batch_size: int):
    """One batch through a GreedyDecoder built once per call (a short last batch is padded with its first
    row, so the recorded shapes never change)."""
    from hyperfit.fast_greedy import GreedyDecoder, eos_ban

    if decoder is None:
        # The first batch is full unless it is the only one, so its size fits every later batch.
        decoder = GreedyDecoder(model, len(batch), len(batch[0]), gen_config.max_new_tokens, ban_ids=eos_ban(gen_config),
                                processor=logits_processor)
    rows = batch + [batch[0]] * (decoder.B - len(batch))
    out = decoder(torch.tensor(rows, device=decoder.device))
    return out[: len(batch)].tolist(), decoder


def _cut_at_eos(row: list[int], gen_config) -> list[int]:
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


def generate(cfg: GenerateConfig, model_cfg: ModelConfig, run: RunDir, model=None, tokenizer=None) -> Path:
    """Continue data/contexts.jsonl with the configured checkpoint and decoder; returns the output file."""
    from hyperfit.models import load_model, load_tokenizer

    get_preset(cfg.decoder)  # fail on a typo before loading anything
    contexts = run.read_samples("contexts")
    source = checkpoint_path(run, model_cfg, cfg.checkpoint)
    if model is None:
        model = load_model(model_cfg, None if cfg.checkpoint == "base" else source).to(default_device())
    if tokenizer is None:
        tokenizer = load_tokenizer(model_cfg, None if cfg.checkpoint == "base" else source)
    gen_config = generation_config(cfg.decoder, tokenizer, cfg.max_new_tokens, cfg.stop_at_eos)
    conts = continue_contexts(model, [c["context_ids"] for c in contexts], gen_config, cfg.batch_size, seed=cfg.seed)
    settings = effective_settings(gen_config)
    rows = [
        {"context_id": c["id"], "context": c["context"], "continuation_ids": ids,
         "continuation": continuation_text(tokenizer, c["context_ids"], ids), "decoder": cfg.decoder,
         "decoder_config": settings, "checkpoint": cfg.checkpoint, "model": str(source), "sample": 0,
         "seed": cfg.seed if gen_config.do_sample else None}
        for c, ids in zip(contexts, conts)
    ]
    out = run.generation_file(default_tag(cfg))
    write_jsonl(out, rows)
    return out
