"""`hyperfit compare`: original vs hyperfitted models × decoders × lengths on the same contexts → one table.

    hyperfit compare runs/demo --decoders greedy,top_p,repetition_penalty,contrastive --lengths 128,256
    hyperfit compare runs/demo --decoders greedy --block-ngrams 6          # the citation blocker
    hyperfit compare runs/a runs/b --decoders greedy,top_p --out reports/ab generate.num_samples=3

Models: `base` (the original model.name, once per distinct model) and each run's final checkpoint. Every
one continues the first run's data/contexts.jsonl with every decoder at every length, so the rows differ
in one thing each (the paper's Table 1 layout), with the human continuation, cut to the same length, as
the reference row. Generations go to RUN_DIR/generations/<checkpoint>-<decoder>-L<length>[-block<N>].jsonl,
metrics to RUN_DIR/metrics/<tag>.json (through `evaluate`), the table to OUT/compare.{md,csv}.

A generations file is reused, not regenerated, when its rows carry the same cache key: a hash of the
weights' content, the decoder's effective settings, the contexts, the seed, samples, batch size (sampling
seeds are per batch), length and blocker. So metrics can be recomputed (or added) without regenerating.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from hyperfit.config import RunConfig, to_dict
from hyperfit.dist import world
from hyperfit.runs import RunDir, RunError, load_run_config, read_jsonl, write_json, write_jsonl, write_text

# Columns of compare.md (those registered in this installation); compare.csv has every metric.
TABLE_COLUMNS = ("ttr", "distinct_4", "rep_4", "nonword_rate", "diversity", "self_bleu", "dataset_bleu",
                 "longest_overlap")
HASH_FILE = ".hyperfit-sha256.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# The cache key needs a decoder's effective settings, which never include special tokens: no tokenizer needed.
NO_TOKENIZER = SimpleNamespace(eos_token_id=None, pad_token_id=None, bos_token_id=None)


@dataclass(frozen=True, eq=False)  # compared by identity: RunConfig holds a dict (generate.params)
class Model:
    """One set of weights to decode with, and the run directory its generations land in."""

    label: str  # base, final, or <run>:final with several runs
    checkpoint: str  # generate.checkpoint: base or final
    run: RunDir
    cfg: RunConfig


@dataclass(frozen=True)
class Job:
    model: Model
    decoder: str
    length: int
    tag: str
    key: str


# Content hashes ------------------------------------------------------------------------------------------


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
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _file_sha256(f)}
            memo[f.name], changed = entry, True
        digest.update(f"{f.name}:{entry['sha256']}\n".encode())
    if changed:
        try:
            write_json(memo_path, memo)
        except OSError:
            pass  # a read-only model folder: hash again next time
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _json_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _weights_of(model: Model, checkpoint: str) -> str:
    from hyperfit.stages.generate import checkpoint_path

    return weights_hash(checkpoint_path(model.run, model.cfg.model, checkpoint), model.cfg.model.revision)


# Planning: everything is checked before anything is generated or written ----------------------------------


def models_of(runs: Sequence[RunDir], cfgs: Sequence[RunConfig]) -> list[Model]:
    """base once per distinct original model (attached to the first run using it), then each run's final."""
    bases: dict[tuple, Model] = {}
    for run, cfg in zip(runs, cfgs):
        bases.setdefault((cfg.model.name, cfg.model.revision), Model("", "base", run, cfg))
    models = [dataclasses.replace(m, label="base" if len(bases) == 1 else f"base:{Path(name).name}")
              for (name, _), m in bases.items()]
    for run, cfg in zip(runs, cfgs):
        models.append(Model("final" if len(runs) == 1 else f"{run.path.name}:final", "final", run, cfg))
    return models


def check_contexts(runs: Sequence[RunDir], contexts_from_first: bool) -> list[dict]:
    """The first run's contexts; other runs must hold the same ones unless --contexts-from-first."""
    first = runs[0].read_samples("contexts")
    for run in runs[1:]:
        if [c["context_ids"] for c in run.read_samples("contexts")] != [c["context_ids"] for c in first]:
            if not contexts_from_first:
                raise RunError(f"{run.data_file('contexts')} differs from {runs[0].data_file('contexts')}, so the "
                               "rows would not be comparable; compare runs prepared with the same data settings, or "
                               "pass --contexts-from-first to continue the first run's contexts with every model")
    return first


def plan(models: Sequence[Model], decoders: Sequence[str], lengths: Sequence[int], contexts: list[dict]) -> tuple[list[Job], list[str]]:
    """(jobs, notes): one job per model × decoder × length, with its tag and cache key."""
    import torch

    from hyperfit.decoding.presets import effective_settings, generation_config
    from hyperfit.stages.generate import inference_dtype

    for model in models:  # every decoder checked before any work (hashing writes a memo file)
        for name in decoders:
            _resolve(name, model.cfg.generate.params)
    contexts_hash = _json_hash([c["context_ids"] for c in contexts])
    jobs, notes = [], []
    for model in models:
        g = model.cfg.generate
        weights = _weights_of(model, model.checkpoint)
        for name in decoders:
            decoder = _resolve(name, g.params)
            target = decoder.params.get("target")
            if decoder.preset.method == "entropy_matched" and target == model.checkpoint:
                notes.append(f"{name} skipped for {model.label}: it is its own target ({target})")
                continue
            for length in lengths:
                settings = effective_settings(generation_config(decoder, NO_TOKENIZER, length, g.stop_at_eos), decoder)
                key = {"weights": weights, "decoder": name, "settings": settings, "contexts": contexts_hash,
                       "seed": g.seed, "num_samples": g.num_samples, "batch_size": g.batch_size,
                       "block_ngrams": g.block_ngrams, "block_until_word_end": g.block_until_word_end,
                       "dtype": inference_dtype(g)}
                if decoder.preset.method == "generate" and not settings.get("do_sample"):
                    # Greedy: the static-cache loop or generate(), which in bf16 can part where logits nearly tie.
                    key["fast"] = g.fast if g.fast is not None else torch.cuda.is_available()
                if g.block_ngrams is not None:  # the blocker's index is the training data
                    key["train"] = _json_hash([r["input_ids"] for r in model.run.read_samples("train")])
                if target is not None:  # entropy matching measures the target model on the val text
                    key["target"] = _weights_of(model, target)
                    key["val"] = _json_hash([r["input_ids"] for r in model.run.read_samples("val")])
                tag = f"{model.checkpoint}-{name}-L{length}" + (f"-block{g.block_ngrams}" if g.block_ngrams else "")
                tag += "-wordend" if g.block_ngrams and g.block_until_word_end else ""
                jobs.append(Job(model, name, length, tag, _json_hash(key)))
    return jobs, notes


def _resolve(name: str, params: dict):
    from hyperfit.decoding.presets import DecoderError, resolve

    try:
        return resolve(name, params)
    except DecoderError as e:
        raise DecoderError(f"{e}. generate.params apply to every decoder of --decoders; compare decoders that "
                           "take different parameters in separate calls") from e


def is_cached(job: Job) -> bool:
    path = job.model.run.generation_file(job.tag)
    if not path.is_file():
        return False
    rows = read_jsonl(path)
    return bool(rows) and all(r.get("cache_key") == job.key for r in rows)


# Running ------------------------------------------------------------------------------------------------


def run_jobs(jobs: Sequence[Job], contexts: list[dict]) -> list[Job]:
    """Generate every job whose cache key has no generations file yet; returns those generated."""
    from hyperfit.stages.generate import generation_rows, load_checkpoint

    todo = [j for j in jobs if not is_cached(j)]
    for model in dict.fromkeys(j.model for j in todo):  # load each model once, in plan order
        gen_cfg = dataclasses.replace(model.cfg.generate, checkpoint=model.checkpoint)
        weights, tokenizer = load_checkpoint(gen_cfg, model.cfg.model, model.run)
        for job in (j for j in todo if j.model == model):
            cfg = dataclasses.replace(gen_cfg, decoder=job.decoder, max_new_tokens=job.length)
            rows = generation_rows(cfg, model.cfg.model, model.run, weights, tokenizer, contexts)
            if world()[0] == 0:
                print(f"generated {job.model.label} / {job.decoder} / L{job.length} → {job.model.run.generation_file(job.tag)}")
            write_jsonl(job.model.run.generation_file(job.tag), [{**r, "cache_key": job.key} for r in rows])
        del weights
    return todo


def reference_name(run: RunDir, cfg, length: int) -> str:
    """metrics/<this>.json: the human row at `length`, named as evaluate names it (reference-L<length>,
    with -w<window> when this comparison's evaluate.window is not the run's own)."""
    from hyperfit.stages.evaluate import reference_tag

    return reference_tag(length, cfg.evaluate.window, None, load_run_config(run).evaluate.window)


def evaluate_jobs(jobs: Sequence[Job], lengths: Sequence[int]) -> None:
    """metrics/<tag>.json for every job (every registered metric) and the human row per length."""
    from hyperfit.stages.evaluate import evaluate, evaluate_reference, training_side
    from hyperfit.metrics.registry import available_metrics
    from hyperfit.models import load_tokenizer

    for run in dict.fromkeys(j.model.run for j in jobs):
        cfg = next(j.model.cfg for j in jobs if j.model.run == run)
        eval_cfg = dataclasses.replace(cfg.evaluate, metrics=tuple(sorted(available_metrics())))
        evaluate(eval_cfg, cfg.model, run, [j.tag for j in jobs if j.model.run == run], reference=False)
        tokenizer = load_tokenizer(cfg.model, run.final if run.final.is_dir() else None)
        train_rows = run.read_samples("train")
        side = training_side(run, train_rows, tokenizer)  # once for every length
        for length in lengths:
            evaluate_reference(eval_cfg, run, length, train_rows, tokenizer, reference_name(run, cfg, length), side)


# The table ----------------------------------------------------------------------------------------------


def table_rows(jobs: Sequence[Job], lengths: Sequence[int]) -> list[dict]:
    """One dict per model × decoder × length, then the human reference per length."""
    rows = []
    for job in jobs:
        m = json.loads(job.model.run.metrics_file(job.tag).read_text())
        first = read_jsonl(job.model.run.generation_file(job.tag))[0]
        found = first["decoder_config"].get("matched_entropy") is not None  # entropy matching: show its T
        decoder = f"{job.decoder} (T={first['decoder_config']['temperature']:.3f})" if found else job.decoder
        rows.append({"model": job.model.label, "decoder": decoder, "length": job.length,
                     "block_ngrams": first.get("block_ngrams"), "n": m["n"], **_values(m),
                     **{f"val_{k}": v for k, v in m.get("predictive", {}).items()},
                     "decoder_config": json.dumps(first["decoder_config"], sort_keys=True),
                     "tag": job.tag, "run": str(job.model.run.path), "cache_key": job.key})
    run, cfg = jobs[0].model.run, jobs[0].model.cfg
    for length in lengths:
        from hyperfit.stages.report import human_label

        tag = reference_name(run, cfg, length)
        m = json.loads(run.metrics_file(tag).read_text())
        # Says so when human texts end before `length`: their length-dependent metrics are then not comparable.
        rows.append({"model": human_label(run, m), "decoder": "–", "length": length, "n": m["n"], **_values(m),
                     "tag": tag, "run": str(run.path)})
    return rows


def _values(m: dict) -> dict:
    return {k: v["value"] for k, v in m["metrics"].items() if "value" in v}


def markdown(rows: list[dict], notes: Sequence[str]) -> str:
    from hyperfit.stages.report import markdown_table

    metric_cols = [c for c in TABLE_COLUMNS if any(c in r for r in rows)]
    header = ["model", "decoder", "length", "n", *metric_cols, "val_entropy"]
    lines = markdown_table(header, [[r.get(c) for c in header] for r in rows])
    lines += ["", "TTR over the last `evaluate.window` tokens (paper: 96); n = continuations (contexts × samples); "
              "val_entropy: teacher-forced, nats/token on the validation text. Every metric: compare.csv."]
    return "\n".join(lines + [f"- {n}" for n in notes]) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


# Entry point --------------------------------------------------------------------------------------------


def compare(run_dirs: Sequence[str | Path], decoders: Sequence[str], lengths: Sequence[int] | None = None,
            block_ngrams: int | None = None, out: str | Path | None = None, overrides: Sequence[str] = (),
            contexts_from_first: bool = False) -> dict:
    """Generate (or reuse), evaluate and tabulate; returns {"markdown", "csv", "generated", "cached"}."""
    from hyperfit.models import check_lengths, load_model_config

    if not decoders:
        raise RunError("--decoders is empty; name at least one, e.g. --decoders greedy,top_p")
    runs = [RunDir(p) for p in run_dirs]
    extra = [f"generate.block_ngrams={block_ngrams}"] if block_ngrams is not None else []
    # generate.params are checked against generate.decoder when the config loads: make that a compared one.
    extra += [f"generate.decoder={decoders[0]}"] if decoders else []
    cfgs = [load_run_config(r, [*overrides, *extra]) for r in runs]
    lengths = list(lengths or [cfgs[0].generate.max_new_tokens])
    for run, cfg in zip(runs, cfgs):
        run.require(run.final, "hyperfit run (or train)")
        check_lengths(load_model_config(cfg.model), cfg.data, max(lengths), 0)
    contexts = check_contexts(runs, contexts_from_first)
    jobs, notes = plan(models_of(runs, cfgs), decoders, lengths, contexts)
    generated = run_jobs(jobs, contexts)
    evaluate_jobs(jobs, lengths)
    rows = table_rows(jobs, lengths)
    out = Path(out) if out is not None else runs[0].path
    md, csv_path = out / "compare.md", out / "compare.csv"
    text = markdown(rows, notes)
    write_text(md, f"# hyperfit compare\n\nRuns: {', '.join(f'`{r.path}`' for r in runs)}\n\n{text}")
    write_csv(csv_path, rows)
    if world()[0] == 0:
        print(text)
    return {"markdown": md, "csv": csv_path, "generated": [j.tag for j in generated],
            "cached": [j.tag for j in jobs if j not in generated], "config": to_dict(cfgs[0].generate)}
