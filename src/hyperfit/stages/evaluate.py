"""Evaluate stage: generations + chosen metrics → metrics/<tag>.json (and metrics/reference*.json).

    hyperfit evaluate runs/demo                      # every generations/*.jsonl
    hyperfit evaluate runs/demo --tag greedy evaluate.window=96

The human continuations of the same contexts get the same metrics as a reference row, cut to the same
number of tokens as the generations, so "human level" is measured, not assumed. At the run's own settings
(generate.max_new_tokens, evaluate.window) that row is metrics/reference.json; generations of another
length, or a window given to this stage, get their own, e.g. reference-L128.json or reference-L256-w64.json,
so evaluating one of them never rewrites the row that the others were measured against. Each metrics file
names its reference row ("reference"). Human texts that end before that length are not padded: the reference
file records their real lengths (min / median / max, how many are shorter), and the report marks the row.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from hyperfit import reuse
from hyperfit.config import EvaluateConfig, ModelConfig
from hyperfit.dist import world
from hyperfit.metrics.registry import GenerationSet, compute, get_metric
from hyperfit.runs import (
    RunDir,
    RunError,
    file_sha256,
    json_sha256,
    load_run_config,
    provenance,
    read_jsonl,
    write_json,
)
from hyperfit.stages.data import continuation_text, load_vocabulary

REFERENCE_TAG = "reference"


def training_side(run: RunDir, train_rows, tokenizer) -> dict:
    """What metrics compare generations against: training ids and texts, the corpus vocabulary.

    Built once per evaluation (decoding 2000 samples and reading the vocabulary is not free), shared by
    every generations file and the reference row.
    """
    train_ids = [r["input_ids"] for r in train_rows]
    train_texts = [tokenizer.decode(t, skip_special_tokens=True) for t in train_ids] if tokenizer else None
    return {"train_ids": train_ids, "train_texts": train_texts, "vocabulary": load_vocabulary(run)}


def reference_tag(length: int, window: int, run_length: int | None, run_window: int) -> str:
    """The human row's name at these settings: plain "reference" at the run's own, otherwise the length
    (and the window, where it is not the run's) in the name, as compare names its per-length rows."""
    if (length, window) == (run_length, run_window):
        return REFERENCE_TAG
    return f"{REFERENCE_TAG}-L{length}" + ("" if window == run_window else f"-w{window}")


def generated_length(rows: list[dict]) -> int:
    """The length the generations were asked for (rows cut at EOS are shorter), else the longest row."""
    asked = {r.get("decoder_config", {}).get("max_new_tokens") for r in rows} - {None}
    return max(asked) if asked else max((len(r["continuation_ids"]) for r in rows), default=0)


def generation_set(cfg: EvaluateConfig, token_ids, texts, side: dict) -> GenerationSet:
    return GenerationSet(token_ids=token_ids, texts=texts, window=cfg.window, **side)


def by_domain(cfg: EvaluateConfig, domains: list, token_ids, texts, side: dict) -> dict:
    """{"domains": {domain: {"n", "metrics": {name: value}}}, "domain_mean": {name: mean over domains}} for
    rows whose contexts carry a domain (data.contexts); {} otherwise. The mean weighs each domain once (the
    paper's "average" column), whatever its count."""
    if all(d is None for d in domains):
        return {}
    out = {}
    for domain in dict.fromkeys(domains):
        keep = [i for i, d in enumerate(domains) if d == domain]
        gens = generation_set(cfg, [token_ids[i] for i in keep], [texts[i] for i in keep], side)
        values = {k: v["value"] for k, v in compute(cfg.metrics, gens).items() if "value" in v}
        out[str(domain)] = {"n": len(keep), "metrics": values}
    names = dict.fromkeys(k for d in out.values() for k in d["metrics"])
    mean = {k: statistics.fmean(d["metrics"][k] for d in out.values()) for k in names
            if all(k in d["metrics"] for d in out.values())}
    return {"domains": out, "domain_mean": mean}


def domain_texts(contexts: list[dict], length: int = 256) -> dict[str, list[list[int]]]:
    """Per domain, each context's document (context + human continuation) as token ids, cut to one length (the
    shortest, at most `length`): what the per-domain perplexity is measured on."""
    groups: dict[str, list[list[int]]] = {}
    for c in contexts:
        if c.get("domain") is not None:
            groups.setdefault(str(c["domain"]), []).append(list(c["context_ids"]) + list(c["reference_ids"]))
    return {d: [x[: min(length, *map(len, seqs))] for x in seqs] for d, seqs in groups.items()}


def evaluate(cfg: EvaluateConfig, model_cfg: ModelConfig, run: RunDir, tags: list[str] | None = None,
             reference: bool = True) -> list[Path]:
    """Metrics for each generations/<tag>.jsonl (all of them by default) and for the human reference."""
    run = RunDir.of(run)
    if world()[1] == 1:  # under a launch every rank writes the same files: none may sweep another's temp
        run.sweep_interrupted_writes()
    from hyperfit.models import load_tokenizer

    for name in cfg.metrics:
        get_metric(name)  # fail on a typo before any work
    if tags is None:
        tags = sorted(p.stem for p in run.generations.glob("*.jsonl"))
    if not tags:
        raise RunError(f"no generations in {run.generations}; run `hyperfit generate {run.path}` first")
    files = [run.require(run.generation_file(t), "hyperfit generate") for t in tags]
    train_rows = run.read_samples("train")
    val_ids = [r["input_ids"] for r in run.read_samples("val")]
    tokenizer = load_tokenizer(model_cfg, run.final if run.final.is_dir() else None)
    side = training_side(run, train_rows, tokenizer)
    run_cfg = load_run_config(run)
    contexts = run.read_samples("contexts")
    domain = {c["id"]: c.get("domain") for c in contexts}
    written, references, predictive_cache = [], {}, {}
    for tag, path in zip(tags, files):
        rows = read_jsonl(path)
        if not rows:
            raise RunError(f"{path} holds no continuations (a run with data.num_contexts=0 has none to measure); "
                           "prepare contexts (data.num_contexts >= 1) and rerun `hyperfit generate`")
        token_ids = [r["continuation_ids"] for r in rows]
        length = generated_length(rows)
        ref = reference_tag(length, cfg.window, run_cfg.generate.max_new_tokens, run_cfg.evaluate.window)
        references[ref] = length
        gens = generation_set(cfg, token_ids, [r["continuation"] for r in rows], side)
        result = {"tag": tag, "n": len(rows), "window": cfg.window, "ttr_tokens": min(cfg.window, length),
                  "reference": ref if reference else None,
                  "generations_sha256": file_sha256(path),
                  "checkpoint": rows[0]["checkpoint"] if rows else None,
                  "decoder": rows[0]["decoder"] if rows else None,
                  "decoder_config": rows[0]["decoder_config"] if rows else None,
                  "metrics": compute(cfg.metrics, gens),
                  **by_domain(cfg, [domain.get(r["context_id"]) for r in rows], token_ids, gens.texts, side)}
        ckpt = result["checkpoint"]
        if cfg.predictive and val_ids and ckpt is not None:
            if ckpt not in predictive_cache:
                predictive_cache[ckpt] = predictive(cfg, model_cfg, run, ckpt, val_ids, contexts)
            result["predictive"], per_domain = predictive_cache[ckpt]
            if per_domain:
                result["predictive_domains"] = per_domain
        result["provenance"] = provenance()
        write_json(run.metrics_file(tag), result)
        written.append(run.metrics_file(tag))
    if reference:
        written += [evaluate_reference(cfg, run, length, train_rows, tokenizer, ref, side)
                    for ref, length in sorted(references.items())]
    return written


def predictive(cfg: EvaluateConfig, model_cfg: ModelConfig, run: RunDir, ckpt: str, val_ids, contexts
               ) -> tuple[dict, dict]:
    """Teacher-forced metrics of a checkpoint on the validation text, and per domain of a text evaluation set on
    its documents (the paper's Table 1 perplexity column; {} without domains). The base model's are reused across
    a sweep's cells over the same texts (hyperfit.reuse)."""
    from hyperfit.metrics.predictive import predictive_metrics
    from hyperfit.models import load_for_inference
    from hyperfit.stages.generate import weights_of

    key = None
    domains = domain_texts(contexts)
    if ckpt == "base" and reuse.active():
        key = json_sha256({"weights": weights_of(run, model_cfg, ckpt), "val": val_ids, "domains": domains,
                           "batch": cfg.batch_size, "dtype": model_cfg.dtype})
        stored = reuse.load("predictive", key)
        if stored is not None:
            return stored[0], stored[1]
    model = load_for_inference(model_cfg, run.weights_for(ckpt))
    per_domain = {d: predictive_metrics(model, seqs, cfg.batch_size) for d, seqs in domains.items()}
    value = predictive_metrics(model, val_ids, cfg.batch_size), per_domain
    if key is not None:
        reuse.save("predictive", key, list(value))
    return value


def reference_lengths(ids: list[list[int]], asked: int | None, window: int) -> dict:
    """How long the human texts measured really are. A story may end before the generations' length (the
    demo's: median 110 of 256 tokens), and distinct-n, Self-BLEU and whole-text TTR depend on length, so
    the reference file says so instead of "tokens": 256 alone. `asked` None: not cut.

    >>> reference_lengths([[1] * 3, [1] * 5, [1] * 8], 8, 4)["shorter_than_asked"]
    2
    """
    lengths = sorted(len(x) for x in ids)
    spread = {"min": lengths[0], "median": statistics.median(lengths), "max": lengths[-1]} if lengths else None
    # "tokens" repeats tokens_asked for run-directory format 1 readers written before tokens_asked existed.
    return {"tokens": asked, "tokens_asked": asked,
            "reference_tokens": spread, "shorter_than_asked": sum(n < asked for n in lengths) if asked else 0,
            "shorter_than_window": sum(n < window for n in lengths)}


def evaluate_reference(cfg: EvaluateConfig, run: RunDir, length: int | None, train_rows, tokenizer,
                       tag: str = REFERENCE_TAG, side: dict | None = None) -> Path:
    """The same metrics on the human continuations, cut to the generations' length (those that end
    earlier stay shorter: the file records their real lengths, and the report marks the row)."""
    contexts = run.read_samples("contexts")
    ids = [c["reference_ids"][:length] if length else c["reference_ids"] for c in contexts]
    texts = [continuation_text(tokenizer, c["context_ids"], x) for c, x in zip(contexts, ids)]
    gens = generation_set(cfg, ids, texts, side or training_side(run, train_rows, tokenizer))
    result = {"tag": tag, "n": len(ids), "window": cfg.window, "checkpoint": None, "decoder": "human",
              "ttr_tokens": min(cfg.window, length) if length else cfg.window,
              **reference_lengths(ids, length, cfg.window),
              # which texts these are: `hyperfit data` may rewrite the contexts later (the report then says STALE)
              "contexts_sha256": file_sha256(run.data_file("contexts")),
              "metrics": compute(cfg.metrics, gens),
              **by_domain(cfg, [c.get("domain") for c in contexts], ids, texts, gens_side(gens)),
              "provenance": provenance()}
    write_json(run.metrics_file(tag), result)
    return run.metrics_file(tag)


def gens_side(gens: GenerationSet) -> dict:
    return {"train_ids": gens.train_ids, "train_texts": gens.train_texts, "vocabulary": gens.vocabulary}
