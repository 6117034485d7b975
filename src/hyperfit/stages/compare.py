"""`hyperfit compare`: original vs hyperfitted models × decoders × lengths on the same contexts → one table.

    hyperfit compare runs/demo --decoders greedy,top_p,repetition_penalty,contrastive --lengths 128,256
    hyperfit compare runs/demo --decoders greedy --block-ngrams 6          # the citation blocker
    hyperfit compare runs/a runs/b --decoders greedy,top_p --out reports/ab generate.num_samples=3

Models: `base` (the original model.name, once per distinct model) and each run's final checkpoint. Every
one continues the first run's data/contexts.jsonl with every decoder at every length, so the rows differ
in one thing each (the paper's Table 1 layout), with the human continuation, cut to the same length, as
the reference row. An evaluation set as text (data.contexts) is tokenized by each model's own tokenizer, so
runs of different tokenizer families compare on the same text; token ids never cross tokenizers
(--contexts-from-first refuses that). Generations go to RUN_DIR/generations/<tag>.jsonl in the tag scheme of
`hyperfit.stages.generate` (the run's own length and blocker: greedy, base-greedy, ..., the files `hyperfit
run` wrote; otherwise <checkpoint>-<decoder>-L<length>[-block<N>]), metrics to RUN_DIR/metrics/<tag>.json
(through `evaluate`), the table to OUT/compare.{md,csv}.

A generations file is reused, not regenerated, when its rows carry the job's cache key (a hash of the
weights' content, the decoder's effective settings, the contexts, the loop, ...; see `generate.cache_key`),
whichever command wrote it. So `hyperfit run` then `hyperfit compare RUN --decoders greedy` generates once,
and metrics can be recomputed (or added) without regenerating.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hyperfit.config import RunConfig, to_dict
from hyperfit.decoding.presets import DecoderError, resolve
from hyperfit.dist import world
from hyperfit.metrics.registry import available_metrics
from hyperfit.models import check_lengths, load_model_config, load_tokenizer
from hyperfit.runs import RunDir, RunError, load_run_config, read_jsonl, write_text
from hyperfit.stages.evalset import is_text_set, set_sha256, tokenize_contexts
from hyperfit.stages.evaluate import evaluate, evaluate_reference, reference_tag, training_side
from hyperfit.stages.generate import Job, run_jobs, weights_hash  # noqa: F401 - weights_hash: compare's cache, importable here
from hyperfit.stages.report import human_label, markdown_table

# Columns of compare.md (those registered in this installation); compare.csv has every metric.
TABLE_COLUMNS = ("ttr", "distinct_4", "rep_4", "nonword_rate", "diversity", "self_bleu", "dataset_bleu",
                 "longest_overlap")


@dataclass(frozen=True, eq=False)  # compared by identity: RunConfig holds a dict (generate.params)
class Model:
    """One set of weights to decode with, and the run directory its generations land in."""

    label: str  # base, final, or <run>:final with several runs
    checkpoint: str  # generate.checkpoint: base or final
    run: RunDir
    cfg: RunConfig


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
    """The first run's contexts; other runs must hold the same ones unless --contexts-from-first. An evaluation
    set as text (data.contexts) is the same when its texts are, whatever each run's tokenizer made of them."""
    first = runs[0].read_samples("contexts")
    same = set_sha256 if is_text_set(first) else (lambda rows: [c["context_ids"] for c in rows])
    for run in runs[1:]:
        if same(run.read_samples("contexts")) != same(first) and not contexts_from_first:
            raise RunError(f"{run.data_file('contexts')} differs from {runs[0].data_file('contexts')}, so the "
                           "rows would not be comparable; compare runs prepared with the same data settings, or "
                           "pass --contexts-from-first to continue the first run's contexts with every model")
    return first


def tokenizer_identity(tok) -> tuple[dict, dict]:
    """What makes token ids mean the same text: the vocabulary (with added tokens) and the special-token ids."""
    specials = {k: getattr(tok, f"{k}_id", None) for k in ("bos_token", "eos_token", "unk_token")}
    return tok.get_vocab(), {**specials, "all": sorted(tok.all_special_ids)}


def tokenizer_source(model: Model) -> tuple:
    path = model.run.final if model.checkpoint == "final" else None
    return model.cfg.model, path


def contexts_per_model(models: Sequence[Model], rows: list[dict]) -> dict[str, list[dict]]:
    """An evaluation set as text, tokenized by each model's own tokenizer: models of different tokenizer
    families continue the same text (token ids never cross tokenizers)."""
    done: dict[str, list[dict]] = {}
    out = {}
    for model in models:
        model_cfg, path = tokenizer_source(model)
        source = str(path or model_cfg.name)
        if source not in done:
            done[source] = tokenize_contexts(rows, load_tokenizer(model_cfg, path))
        out[model.label] = done[source]
    return out


def check_tokenizers(runs: Sequence[RunDir], models: Sequence[Model]) -> None:
    """--contexts-from-first hands the first run's token ids to every model: refuse it when a model's tokenizer
    (its vocabulary or special-token ids) is not the one those ids were made with (the first run's model.name)."""
    first = runs[0]
    cfg = next(m.cfg for m in models if m.run is first)
    ours = tokenizer_identity(load_tokenizer(cfg.model))
    seen = {str(cfg.model.name): ours}
    for model in models:
        model_cfg, path = tokenizer_source(model)
        source = str(path or model_cfg.name)
        if source not in seen:
            seen[source] = tokenizer_identity(load_tokenizer(model_cfg, path))
        theirs = seen[source]
        if theirs != ours:
            what = "vocabularies" if theirs[0] != ours[0] else "special-token ids"
            raise RunError(f"--contexts-from-first: {model.run.path} ({model.label}, {source}) and {first.path} "
                           f"({cfg.model.name}) have different tokenizers ({what} differ), so {first.path}'s "
                           "context token ids would be other text to that model; compare runs of one tokenizer "
                           "family, or compare each run on its own (without --contexts-from-first) so each "
                           "continues its own contexts, or prepare the runs with data.contexts (an evaluation set "
                           "as text, which each model tokenizes itself)")


def plan(models: Sequence[Model], decoders: Sequence[str], lengths: Sequence[int],
         contexts: list[dict] | dict[str, list[dict]]) -> tuple[list[Job], list[str]]:
    """(jobs, notes): one job per model × decoder × length (the same jobs `hyperfit run` makes for its own
    length, so their files are shared), each with its cache key computed now. `contexts`: one list for every
    model, or each model's own (by label: a text evaluation set tokenized per model)."""
    for model in models:  # every decoder checked before any work (hashing writes a memo file)
        for name in decoders:
            _resolve(name, model.cfg.generate.params)
    jobs, notes = [], []
    for model in models:
        for name in decoders:
            decoder = _resolve(name, model.cfg.generate.params)
            skip = decoder.method.skip_reason(decoder, model.checkpoint)
            if skip:
                notes.append(f"{name} skipped for {model.label}: {skip}")
                continue
            for length in lengths:
                # generate.tag names one file; compare's jobs are many, so each takes the scheme's tag.
                rows = contexts[model.label] if isinstance(contexts, dict) else contexts
                jobs.append(Job.of(model.run, model.cfg, rows, model.label, checkpoint=model.checkpoint,
                                   decoder=name, max_new_tokens=length, tag=None))
    return jobs, notes


def _resolve(name: str, params: dict):
    try:
        return resolve(name, params)
    except DecoderError as e:
        raise DecoderError(f"{e}. generate.params apply to every decoder of --decoders; compare decoders that "
                           "take different parameters in separate calls") from e


def reference_name(run: RunDir, cfg, length: int) -> str:
    """metrics/<this>.json: the human row at `length`, named as evaluate names it: reference at the run's
    own length and window (the row `hyperfit run` wrote), else reference-L<length>[-w<window>]."""
    own = load_run_config(run)
    return reference_tag(length, cfg.evaluate.window, own.generate.max_new_tokens, own.evaluate.window)


def evaluate_jobs(jobs: Sequence[Job], lengths: Sequence[int]) -> None:
    """metrics/<tag>.json for every job (every registered metric) and the human row per length."""
    for run in dict.fromkeys(j.run for j in jobs):
        cfg = next(j.cfg for j in jobs if j.run == run)
        eval_cfg = dataclasses.replace(cfg.evaluate, metrics=tuple(sorted(available_metrics())))
        evaluate(eval_cfg, cfg.model, run, [j.tag for j in jobs if j.run == run], reference=False)
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
        m = json.loads(job.run.metrics_file(job.tag).read_text())
        first = read_jsonl(job.path)[0]
        found = first["decoder_config"].get("matched_entropy") is not None  # entropy matching: show its T
        decoder = f"{job.decoder} (T={first['decoder_config']['temperature']:.3f})" if found else job.decoder
        rows.append({"model": job.name, "decoder": decoder, "length": job.length,
                     "block_ngrams": first.get("block_ngrams"), "n": m["n"], **_values(m),
                     **{f"val_{k}": v for k, v in m.get("predictive", {}).items()},
                     "decoder_config": json.dumps(first["decoder_config"], sort_keys=True),
                     "tag": job.tag, "run": str(job.run.path), "cache_key": job.key})
    run, cfg = jobs[0].run, jobs[0].cfg
    for length in lengths:
        tag = reference_name(run, cfg, length)
        m = json.loads(run.metrics_file(tag).read_text())
        # Says so when human texts end before `length`: their length-dependent metrics are then not comparable.
        rows.append({"model": human_label(run, m), "decoder": "–", "length": length, "n": m["n"], **_values(m),
                     "tag": tag, "run": str(run.path)})
    return rows


def _values(m: dict) -> dict:
    return {k: v["value"] for k, v in m["metrics"].items() if "value" in v}


def markdown(rows: list[dict], notes: Sequence[str]) -> str:
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
    models = models_of(runs, cfgs)
    if is_text_set(contexts):
        contexts = contexts_per_model(models, contexts)
    elif contexts_from_first and len(runs) > 1:
        check_tokenizers(runs, models)
    jobs, notes = plan(models, decoders, lengths, contexts)
    generated = run_jobs(jobs)
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
