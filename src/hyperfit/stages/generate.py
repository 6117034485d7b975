"""Generate stage: continue every held-out context → generations/<tag>.jsonl.

    hyperfit generate runs/demo generate.decoder=greedy generate.max_new_tokens=128
    hyperfit generate runs/demo generate.checkpoint=base      # the model before hyperfitting
    hyperfit generate runs/demo generate.decoder=top_p generate.num_samples=4 generate.seed=1
    hyperfit generate runs/demo generate.block_ngrams=6       # the citation blocker

One row per (context, sample): context id and text, continuation token ids and text, the decoder's name
and effective settings, which weights produced it, which loop ran (`fast_greedy`) and the job's cache key.
Every decoder shares the contexts, the length rule and the detokenisation (`data.continuation_text`), so
their numbers are comparable.

`hyperfit run`, `hyperfit generate` and `hyperfit compare` all describe their work as `Job`s and hand them
to `run_jobs`, so they share one tag scheme and one cache: a job whose generations file already holds rows
with its cache key (a hash of the weights' content, the decoder's effective settings, the contexts, the
loop, ...) is not generated again. Tags: the run's own length and blocker give `<decoder>` (final weights)
and `<checkpoint>-<decoder>` (others), the files the report, evaluate and the demo read; any other length
or blocker gives `<checkpoint>-<decoder>-L<length>[-block<N>[-wordend]]`. generate.tag names the file
instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

from hyperfit import reuse
from hyperfit.config import GenerateConfig, ModelConfig, RunConfig
from hyperfit.decoding.loops import continue_contexts, decode, loop_for, sample_seed  # noqa: F401 - continue_contexts: the probe's import
from hyperfit.decoding.presets import Decoder, effective_settings, generation_config, resolve
from hyperfit.dist import barrier, device, world
from hyperfit.errors import RunError
from hyperfit.models import load_for_inference, load_tokenizer
from hyperfit.runs import RunDir, file_sha256, json_sha256, load_run_config, read_jsonl, write_json, write_jsonl
from hyperfit.stages.data import continuation_text

HASH_FILE = ".hyperfit-sha256.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# The cache key needs a decoder's effective settings, which never include special tokens: no tokenizer needed.
NO_TOKENIZER = SimpleNamespace(eos_token_id=None, pad_token_id=None, bos_token_id=None)


# The job ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # compared by identity: RunConfig holds a dict (generate.params)
class Job:
    """One generations file: `checkpoint`'s weights continue `contexts` with `decoder` (`params`), `length`
    tokens each, with or without the citation blocker. `cfg.generate` holds those and the rest of the recipe
    (seed, samples, batch size, dtype, generate.fast); `own` is the run's saved generate settings, which
    decide whether the tag takes the short form."""

    run: RunDir
    cfg: RunConfig
    contexts: list[dict]
    own: GenerateConfig
    label: str = ""
    """How compare's table names the weights (base, final, <run>:final); the checkpoint when empty."""

    @classmethod
    def of(cls, run: RunDir, cfg: RunConfig, contexts: list[dict] | None = None, label: str = "", **changes) -> Job:
        """A job of run with cfg.generate's settings, `changes` (e.g. checkpoint="base") applied."""
        own = load_run_config(run).generate if run.config.is_file() else cfg.generate
        contexts = run.read_samples("contexts") if contexts is None else contexts
        return cls(run, dataclasses.replace(cfg, generate=dataclasses.replace(cfg.generate, **changes)), contexts,
                   own, label)

    @property
    def gen(self) -> GenerateConfig:
        return self.cfg.generate

    @property
    def checkpoint(self) -> str:
        return self.gen.checkpoint

    @property
    def decoder(self) -> str:
        return self.gen.decoder

    @property
    def length(self) -> int:
        return self.gen.max_new_tokens

    @property
    def name(self) -> str:
        return self.label or self.checkpoint

    @property
    def tag(self) -> str:
        return job_tag(self.gen, self.own)

    @property
    def path(self) -> Path:
        return self.run.generation_file(self.tag)

    @cached_property
    def key(self) -> str:
        return json_sha256(cache_key(self))

    def cached(self) -> bool:
        """Whether generations/<tag>.jsonl already holds this job's rows (every row carries its key)."""
        if not self.path.is_file():
            return False
        rows = read_jsonl(self.path)
        return bool(rows) and all(r.get("cache_key") == self.key for r in rows)


def job_tag(gen: GenerateConfig, own: GenerateConfig) -> str:
    """The file name of a job's generations (the one tag scheme; see the module docstring).

    >>> run = GenerateConfig(max_new_tokens=24)
    >>> [job_tag(dataclasses.replace(run, **c), run) for c in ({}, {"checkpoint": "base"}, {"max_new_tokens": 8},
    ...                                                        {"block_ngrams": 6, "decoder": "top_p"})]
    ['greedy', 'base-greedy', 'final-greedy-L8', 'final-top_p-L24-block6']
    """
    if gen.tag:
        return gen.tag
    if gen.max_new_tokens == own.max_new_tokens and _blocker(gen) == _blocker(own):
        return gen.decoder if gen.checkpoint == "final" else f"{gen.checkpoint}-{gen.decoder}"
    block = f"-block{gen.block_ngrams}" + ("-wordend" if gen.block_until_word_end else "") if gen.block_ngrams else ""
    return f"{gen.checkpoint}-{gen.decoder}-L{gen.max_new_tokens}{block}"


def _blocker(gen: GenerateConfig) -> tuple:
    return (gen.block_ngrams, gen.block_ngrams is not None and gen.block_until_word_end)


# The cache key ------------------------------------------------------------------------------------------


def cache_key(job: Job) -> dict:
    """Everything that decides a job's tokens: the weights' content, the decoder's effective settings, the
    contexts, the loop that will run, the dtype, and (for sampling decoders) seed, samples and batch size."""
    g, model_cfg = job.gen, job.cfg.model
    decoder = resolve(g.decoder, g.params)
    gen_config = generation_config(decoder, NO_TOKENIZER, g.max_new_tokens, g.stop_at_eos)
    ids = [c["context_ids"] for c in job.contexts]
    key = {"weights": weights_of(job.run, model_cfg, g.checkpoint), "decoder": g.decoder,
           "settings": effective_settings(gen_config, decoder), "contexts": json_sha256(ids),
           "batch_size": g.batch_size, "block_ngrams": g.block_ngrams,
           "block_until_word_end": g.block_until_word_end, "dtype": inference_dtype(g),
           # In bf16 the static-cache loop and generate() can part where logits nearly tie.
           "loop": loop_for(decoder, gen_config, ids, g.fast, device().type, model_cfg.attn_implementation)}
    if decoder.samples:
        key.update(seed=g.seed, num_samples=g.num_samples)
    if g.block_ngrams is not None:  # the blocker's index is the training data
        key["train"] = json_sha256([r["input_ids"] for r in job.run.read_samples("train")])
    target = decoder.method.target(decoder)
    if target is not None:  # entropy matching measures the target model on the val text
        key["target"] = weights_of(job.run, model_cfg, target)
        key["val"] = json_sha256([r["input_ids"] for r in job.run.read_samples("val")])
    return key


def weights_of(run: RunDir, model_cfg: ModelConfig, checkpoint: str) -> str:
    return weights_hash(run.weights_for(checkpoint) or model_cfg.name, model_cfg.revision)


def weights_hash(model_dir: str | Path, revision: str | None = None) -> str:
    """sha256 over a model folder's weight files, remembered in HASH_FILE beside them (by size and mtime).

    A hub id that is not a local folder is named, not hashed: hub revisions are the hub's content address.
    """
    path = Path(model_dir)
    if not path.is_dir():
        return f"hub:{model_dir}@{revision or 'main'}"
    files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise RunError(f"{path} holds no weight files ({', '.join(WEIGHT_SUFFIXES)}); it is not a saved model")
    memo_path = path / HASH_FILE
    memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
    digest, changed = hashlib.sha256(), False
    for f in files:
        stat = f.stat()
        entry = memo.get(f.name)
        if not entry or entry["size"] != stat.st_size or entry["mtime_ns"] != stat.st_mtime_ns:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(f)}
            memo[f.name], changed = entry, True
        digest.update(f"{f.name}:{entry['sha256']}\n".encode())
    if changed:
        try:
            write_json(memo_path, memo)
        except OSError:
            pass  # a read-only model folder: hash again next time
    return digest.hexdigest()


# Running ------------------------------------------------------------------------------------------------


def run_jobs(jobs: Sequence[Job], model=None, tokenizer=None) -> list[Job]:
    """Generate every job whose generations file does not hold its cache key yet; returns those generated.

    Each distinct set of weights is loaded once, in job order. `model` (and `tokenizer`): weights already
    loaded, used for every job instead (they must be the jobs' checkpoint; nothing is reused then).
    """
    todo = list(jobs) if model is not None else [j for j in jobs if not j.cached()]
    barrier()  # every rank has decided what to do before rank 0 writes anything
    main = world()[0] == 0
    for job in jobs:
        if job not in todo and main:
            print(f"reused {job.path} ({job.name} / {job.decoder} / L{job.length}: same cache key)")
    if model is None:
        todo = [j for j in todo if not _from_store(j, main)]
    for group in dict.fromkeys(_weights_id(j) for j in todo):
        batch = [j for j in todo if _weights_id(j) == group]
        first = batch[0]
        weights, tok = load_checkpoint(first.gen, first.cfg.model, first.run) if model is None else (None, None)
        for job in batch:
            rows = generation_rows(job, model if model is not None else weights, tokenizer or tok)
            if main:  # every rank holds all rows (gathered); one writes them
                write_jsonl(job.path, rows)
                if job.checkpoint == "base":  # the same in every cell of a sweep (hyperfit.reuse)
                    reuse.save("generations", job.key, rows)
                print(f"generated {job.name} / {job.decoder} / L{job.length}: {len(rows)} continuations from "
                      f"{world()[1]} process(es) → {job.path}")
        del weights
    barrier()
    return todo


def _from_store(job: Job, main: bool) -> bool:
    """Whether the sweep's store (hyperfit.reuse) held this job's rows, now written to its file. Only the base
    model's are stored: every cell of a sweep continues the same contexts with it, and nothing else repeats."""
    if job.checkpoint != "base" or not reuse.active():
        return False
    rows = reuse.load("generations", job.key)
    if rows is None:
        return False
    if main:
        write_jsonl(job.path, rows)
        print(f"reused {job.name} / {job.decoder} / L{job.length} from the sweep's store → {job.path}")
    return True


def _weights_id(job: Job) -> tuple:
    return (str(job.run.path), job.checkpoint, inference_dtype(job.gen), id(job.cfg.model))


def blocker_processor(run: RunDir, cfg: GenerateConfig, tokenizer):
    """LogitsProcessorList with the citation blocker over data/train.jsonl's token ids (None when off)."""
    if cfg.block_ngrams is None:
        return None
    from transformers import LogitsProcessorList

    from hyperfit.decoding.blocker import NgramBlocker, build_index, starts_word_from_tokenizer

    train_ids = [r["input_ids"] for r in run.read_samples("train")]
    if getattr(tokenizer, "sos_token_id", None) is not None:
        # Images: the start-of-image token is input only (ImageGPT has no logit for it) and opens every sample.
        train_ids = [ids[1:] for ids in train_ids]
    starts_word = starts_word_from_tokenizer(tokenizer) if cfg.block_until_word_end else None
    # The index is the training data's: cells (or decoders) over the same samples build it once (hyperfit.reuse).
    index = reuse.remember("blocker", json_sha256([train_ids, cfg.block_ngrams]),
                           lambda: build_index(train_ids, cfg.block_ngrams))
    return LogitsProcessorList([NgramBlocker(index, starts_word=starts_word,
                                             delay_until_word_end=cfg.block_until_word_end)])


def prepare_decoder(job: Job, model) -> Decoder:
    """The resolved decoder; a search that needs the model (entropy matching) runs here."""
    decoder = resolve(job.decoder, job.gen.params)
    return decoder.method.prepare(decoder, model, job.run,
                                  lambda name: load_for_inference(job.cfg.model, job.run.weights_for(name)))


def generation_rows(job: Job, model, tokenizer) -> list[dict]:
    """Rows for generations/<tag>.jsonl: every context (× sample) continued as the job says."""
    g, contexts = job.gen, job.contexts
    decoder = prepare_decoder(job, model)
    gen_config = generation_config(decoder, tokenizer, g.max_new_tokens, g.stop_at_eos)
    decoded = decode(model, [c["context_ids"] for c in contexts], decoder, gen_config, batch_size=g.batch_size,
                     num_samples=g.num_samples, seed=g.seed, fast=g.fast,
                     logits_processor=blocker_processor(job.run, g, tokenizer))
    settings = effective_settings(gen_config, decoder)
    source = job.run.weights_for(g.checkpoint) or job.cfg.model.name
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return [
        {"context_id": c["id"], "context": c["context"], "continuation_ids": ids,
         "continuation": continuation_text(tokenizer, c["context_ids"], ids), "decoder": g.decoder,
         "decoder_config": settings, "block_ngrams": g.block_ngrams,
         "block_until_word_end": g.block_until_word_end if g.block_ngrams else None, "checkpoint": g.checkpoint,
         "model": str(source), "dtype": dtype, "fast_greedy": decoded.loop == "fast_greedy", "sample": s,
         "seed": sample_seed(g.seed, s) if decoder.samples else None, "cache_key": job.key}
        for s, conts in enumerate(decoded.samples) for c, ids in zip(contexts, conts)
    ]


def inference_dtype(cfg: GenerateConfig) -> str:
    """generate.dtype resolved: auto is bfloat16 when this process decodes on CUDA, float32 otherwise."""
    if cfg.dtype != "auto":
        return cfg.dtype
    return "bfloat16" if device().type == "cuda" else "float32"


def load_checkpoint(cfg: GenerateConfig, model_cfg: ModelConfig, run: RunDir):
    """(model ready for inference in generate.dtype, tokenizer) for generate.checkpoint."""
    path = run.weights_for(cfg.checkpoint)
    model = load_for_inference(dataclasses.replace(model_cfg, dtype=inference_dtype(cfg)), path)
    return model, load_tokenizer(model_cfg, path)


def generate(cfg: GenerateConfig, model_cfg: ModelConfig, run: RunDir, model=None, tokenizer=None) -> Path:
    """Continue data/contexts.jsonl with the configured checkpoint and decoder, unless the generations file
    already holds this job's rows; returns the file. `model`/`tokenizer`: cfg.checkpoint's, already loaded."""
    run = RunDir.of(run)
    resolve(cfg.decoder, cfg.params)  # fail on a typo before loading anything
    run_cfg = load_run_config(run) if run.config.is_file() else RunConfig()
    job = Job.of(run, dataclasses.replace(run_cfg, model=model_cfg, generate=cfg))
    if model is not None and tokenizer is None:
        tokenizer = load_tokenizer(model_cfg, run.weights_for(cfg.checkpoint))
    run_jobs([job], model, tokenizer)
    return job.path
