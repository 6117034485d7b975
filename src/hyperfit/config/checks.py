"""Ranges and contradictions of a built config, each problem naming the flag to change.

    hyperfit run configs/paper.yaml train.lr=-1     # → "train.lr=-1.0 must be positive"

Values out of range crash late (torch: "Invalid learning rate: nan" after the run folder is written) or run
silently wrong (weight_decay -1 grows the weights), so every numeric field has a range here
(test_every_numeric_field_and_decoder_parameter_has_a_range checks that none is missing). Decoder names and
parameters are checked against the decoding presets, metric names against the metric registry: both are
light modules, so `import hyperfit.config` loads neither torch nor transformers.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from hyperfit.config.schema import EvaluateConfig, GenerateConfig, RunConfig, TrainConfig
from hyperfit.decoding.presets import resolve
from hyperfit.errors import DecoderError, did_you_mean
from hyperfit.memory_modes import config_problems
from hyperfit.metrics.registry import available_metrics
from hyperfit.values import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Range, coerce

SEED = Range(0, 2**32, open_high=True, why=" (numpy refuses negative seeds; 32 bits fit every generator)")

# Every int and float field of the schema.
RANGES: dict[str, Range] = {
    "data.seq_len": Range(2), "data.num_train": AT_LEAST_1, "data.num_val": NON_NEGATIVE,
    "data.num_contexts": NON_NEGATIVE, "data.context_len": AT_LEAST_1, "data.seed": SEED,
    "data.context_words": AT_LEAST_1,
    "data.max_documents": Range(1, why=", or null to read them all"),
    "data.samples_per_document": AT_LEAST_1,
    "train.epochs": NON_NEGATIVE, "train.lr": POSITIVE, "train.weight_decay": NON_NEGATIVE, "train.eps": POSITIVE,
    "train.chunked_loss": NON_NEGATIVE,
    "train.batch_size": AT_LEAST_1, "train.grad_accum": AT_LEAST_1, "train.seed": SEED,
    "train.max_grad_norm": Range(0, open_low=True, why=", or null for no clipping"),
    "train.stop_at_loss": Range(0, why=" (a cross-entropy loss never is), or null to run all epochs"),
    "train.probe_every": NON_NEGATIVE, "train.probe_contexts": NON_NEGATIVE, "train.probe_new_tokens": NON_NEGATIVE,
    "train.probe_val": NON_NEGATIVE, "train.save_every": NON_NEGATIVE, "train.log_every": AT_LEAST_1,
    "train.order_swaps": NON_NEGATIVE,
    "train.updates": Range(1, why=", or null to train for train.epochs"),
    "train.probe_every_updates": Range(0, why=" (0: no probes), or null for 10 evenly spaced probes"),
    "train.save_every_updates": Range(0, why=" (0: the final weights only)"),
    "train.keep_checkpoints": Range(1, why=" (the checkpoint that --resume needs)"),
    "train.lora_rank": AT_LEAST_1, "train.lora_alpha": POSITIVE,
    "train.lora_dropout": Range(0, 1, open_high=True),
    "generate.num_samples": AT_LEAST_1, "generate.max_new_tokens": AT_LEAST_1, "generate.batch_size": AT_LEAST_1,
    "generate.block_ngrams": Range(2, why=" (the paper blocks 6-grams), or null"), "generate.seed": SEED,
    "evaluate.window": AT_LEAST_1, "evaluate.batch_size": AT_LEAST_1,
    "data.image_size": Range(1, why=", or null to keep the images' size"), "train.warmup_updates": NON_NEGATIVE,
    "generate.prefix_fraction": Range(0, 1, True, True, why=": the share of rows given as context"),
}

# Numeric decoder parameters (generate.params), as transformers' logits processors check them when
# generation starts, i.e. after training; (decoder, name) entries take precedence over name alone.
DECODER_RANGES: dict[Any, Range] = {
    "temperature": POSITIVE, "top_p": Range(0, 1), "top_k": Range(0, why=" (0: off)"), "min_p": Range(0, 1),
    "typical_p": Range(0, 1, True, True), "eta_cutoff": Range(0, 1, True, True),
    "epsilon_cutoff": Range(0, 1, True, True), "repetition_penalty": Range(0, open_low=True, why=" (1: none)"),
    "no_repeat_ngram_size": AT_LEAST_1, "num_beams": AT_LEAST_1, "length_penalty": Range(),
    "penalty_alpha": Range(0, 1), "max_sequences": AT_LEAST_1, "tolerance": POSITIVE,
    ("contrastive", "top_k"): Range(1, why=" (candidates scored per step)"),
}


def validate(cfg: RunConfig) -> list[str]:
    """Contradictions and out-of-range values, each naming the flag to change."""
    p = _range_problems(cfg)
    d, t, g = cfg.data, cfg.train, cfg.generate
    if not d.source:
        p.append("data.source is empty: set it to a text file or a datasets id, e.g. data.source=stories.txt")
    if d.context_len >= d.seq_len:
        p.append(f"data.context_len={d.context_len} must be shorter than data.seq_len={d.seq_len}: contexts are "
                 "the start of held-out documents and the rest is the human continuation")
    if t.grad_accum >= 1 and t.batch_size % t.grad_accum:
        p.append(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}; "
                 "the global batch is fixed, so choose grad_accum among its divisors")
    p += _update_cadence_problems(t)
    p += _text_problems(d)
    p += context_set_problems(d.contexts)
    p += extra_generation_problems(g)
    if t.precision not in ("auto", "bf16", "fp16", "no"):
        p.append(f"train.precision={t.precision!r} must be one of auto, bf16, fp16, no")
    p += config_problems(t.optimizer, cfg.model.dtype)
    if t.method not in ("full", "lora"):
        p.append(f"train.method={t.method!r} must be full (every weight, the paper's) or lora (adapters through peft)")
    elif t.method == "lora" and t.optimizer != "adamw":
        p.append(f"train.optimizer={t.optimizer} keeps updates on bf16 weights, but LoRA adapters are fp32 whatever "
                 "model.dtype is; use train.optimizer=adamw with train.method=lora")
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        p.append(f"model.dtype={cfg.model.dtype!r} must be one of float32, bfloat16, float16")
    if g.dtype not in ("auto", "float32", "bfloat16", "float16"):
        p.append(f"generate.dtype={g.dtype!r} must be one of auto, float32, bfloat16, float16")
    p += _image_problems(cfg)
    p += _decoder_problems(g)
    if not (g.checkpoint in ("final", "base") or g.checkpoint.startswith(("epoch-", "step-"))):
        p.append(f"generate.checkpoint={g.checkpoint!r} must be final, base, epoch-NNNN or step-NNNNNNN")
    return p + _metric_problems(cfg.evaluate)


# The data.* text options (docs/data.md) and the values each accepts.
TEXT_CHOICES = {"strip_boilerplate": ("auto", "none"), "reflow": ("auto", "always", "none"),
                "markup": ("auto", "wikitext", "none"), "unknown_marker": ("drop", "keep", "replace")}


def _text_problems(d) -> list[str]:
    return [f"data.{name}={getattr(d, name)!r} must be one of {', '.join(choices)}"
            for name, choices in TEXT_CHOICES.items() if getattr(d, name) not in choices]


def _image_problems(cfg: RunConfig) -> list[str]:
    p = []
    if cfg.data.kind not in ("auto", "text", "images"):
        p.append(f"data.kind={cfg.data.kind!r} must be auto, text or images")
    if cfg.model.arch not in ("auto", "causal_lm", "imagegpt"):
        p.append(f"model.arch={cfg.model.arch!r} must be auto, causal_lm or imagegpt")
    if cfg.model.init not in ("pretrained", "scratch"):
        p.append(f"model.init={cfg.model.init!r} must be pretrained or scratch")
    elif cfg.model.init == "scratch" and cfg.model.config.get("model_type", "imagegpt") not in ("imagegpt", "llama"):
        p.append(f"model.config.model_type={cfg.model.config['model_type']!r}: model.init=scratch builds imagegpt "
                 "or llama")
    if cfg.train.schedule not in ("constant", "cosine"):
        p.append(f"train.schedule={cfg.train.schedule!r} must be constant or cosine")
    return p


CONTEXT_SOURCE_KEYS = ("source", "count", "domain", "text_field", "split", "hf_config", "max_documents")


def context_set_problems(entries) -> list[str]:
    """data.contexts: each entry a mapping with a source and a positive count, known keys, distinct domains.

    >>> context_set_problems([{"source": "a.txt", "count": 2}, {"source": "b.txt", "count": 0, "lang": "x"}])[0]
    'data.contexts[1].count=0 must be a whole number of at least 1 (documents drawn from b.txt)'
    """
    p, domains = [], []
    for i, e in enumerate(entries):
        where = f"data.contexts[{i}]"
        if not isinstance(e, dict):
            p.append(f"{where}={e!r} must be a mapping such as {{source: wiki.txt, count: 100, domain: wikipedia}}")
            continue
        if not isinstance(e.get("source"), str) or not e["source"]:
            p.append(f"{where} has no source; give a file or datasets id, e.g. source: wiki.txt")
        count = e.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            p.append(f"{where}.count={count!r} must be a whole number of at least 1 (documents drawn from "
                     f"{e.get('source')})")
        p += [f"unknown key {where}.{k}; known: {', '.join(CONTEXT_SOURCE_KEYS)}" for k in e
              if k not in CONTEXT_SOURCE_KEYS]
        domains.append(str(e.get("domain") or Path(str(e.get("source", ""))).stem))
    repeated = sorted({d for d in domains if domains.count(d) > 1})
    if repeated:
        p.append(f"data.contexts: domain {', '.join(repeated)} is named by more than one entry; give each entry "
                 "its own domain: (metrics are grouped by it)")
    return p


EXTRA_FIXED = ("extra", "tag", "with_base")  # what one extra generation cannot set: they describe the whole run


def extra_changes(g: GenerateConfig) -> list[dict]:
    """generate.extra's entries as typed generate settings (ValueError or TypeError when one is not)."""
    hints = get_type_hints(GenerateConfig)
    return [{k: coerce(v, hints[k]) for k, v in e.items()} for e in g.extra]


def extra_generation_problems(g: GenerateConfig) -> list[str]:
    """generate.extra: mappings of known generate keys with valid values and decoders."""
    known = [f.name for f in fields(GenerateConfig) if f.name not in EXTRA_FIXED]
    p = []
    for i, e in enumerate(g.extra):
        where = f"generate.extra[{i}]"
        if not isinstance(e, dict):
            p.append(f"{where}={e!r} must be a mapping of generate settings, e.g. {{checkpoint: base, decoder: top_p}}")
            continue
        bad = [k for k in e if k not in known]
        p += [f"unknown key {where}.{k}; known: {', '.join(known)}.{did_you_mean(k, known)}" for k in bad]
        try:
            changes = {k: coerce(v, get_type_hints(GenerateConfig)[k]) for k, v in e.items() if k not in bad}
            p += [m for k, v in changes.items() if f"generate.{k}" in RANGES
                  and (m := RANGES[f"generate.{k}"].problem(f"{where}.{k}", v))]
            one = replace(g, extra=(), **changes)
            resolve(one.decoder, one.params)
        except (TypeError, ValueError, DecoderError) as err:
            p.append(f"{where}={e!r}: {err or 'a value of the wrong type'}")
    return p


def _update_cadence_problems(t: TrainConfig) -> list[str]:
    """Update cadences belong to an update budget; without one they would be silently ignored."""
    if t.updates is not None:
        return []
    return [f"train.{name}={value} counts updates of a train.updates budget, but train.updates is not set: set "
            f"train.updates=N, or use train.{name.removesuffix('_updates')} (epochs)"
            for name, value in (("probe_every_updates", t.probe_every_updates),
                                ("save_every_updates", t.save_every_updates)) if value is not None]


def _range_problems(cfg: RunConfig) -> list[str]:
    p = [RANGES[key].problem(key, _get(cfg, key)) for key in RANGES]
    betas = cfg.train.betas
    if len(betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in betas):  # torch: IndexError, or refusal
        p.append(f"train.betas={list(betas)} must be two numbers in [0, 1) (Adam's beta1 and beta2), "
                 "e.g. train.betas=[0.9,0.999]")
    return [m for m in p if m]


def _get(cfg: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _decoder_problems(g: GenerateConfig) -> list[str]:
    try:
        decoder = resolve(g.decoder, g.params)
    except DecoderError as e:
        return [str(e)]
    p = []
    for name in g.params:  # the presets' own defaults are in range; check what the user gave
        rule = DECODER_RANGES.get((g.decoder, name)) or DECODER_RANGES.get(name)
        if rule is not None and isinstance(decoder.params[name], (int, float)):
            p.append(rule.problem(f"generate.params.{name}", decoder.params[name]))
    return [m for m in p if m]


def _metric_problems(e: EvaluateConfig) -> list[str]:
    """Unknown metric names: found here, before the run folder is written, not by evaluate after training."""
    known = available_metrics()
    return [f"evaluate.metrics: unknown metric {name!r}.{did_you_mean(name, known)} Known metrics: "
            f"{', '.join(sorted(known))}." for name in e.metrics if name not in known]
