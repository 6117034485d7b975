"""`hyperfit run`: every stage in order on one run directory — data → train → generate → evaluate → report.

    hyperfit run configs/paper.yaml
    hyperfit run configs/paper.yaml model.name=PATH data.source=stories.jsonl train.epochs=5
    hyperfit run configs/paper.yaml --resume        # finish an interrupted run; finished stages are skipped

Checks that need only the config and the model's config (paths, lengths, keys) run before anything is
written, so a mistake costs seconds, not a half-made run directory. Under `accelerate launch` every rank
checks, rank 0 alone writes the config and data, and the others wait for it. Under a DeepSpeed launch
(ZeRO-3: the 70B path) the run stops after training, saying so up front: generation and evaluation need
the FSDP2 launch, and the same command with --resume under it finishes the run.
"""

from __future__ import annotations

import shutil

import yaml

from hyperfit.config import RunConfig, to_dict
from hyperfit.config.checks import extra_changes
from hyperfit.decoding.presets import resolve
from hyperfit.dist import barrier, world
from hyperfit.errors import ConfigError
from hyperfit.images import evaluate_images
from hyperfit.images.stage import (
    check_kinds,
    ensure_base_model,
    image_config,
    is_image_data,
    sampled_changes,
    write_image_data,
)
from hyperfit.metrics.registry import get_metric
from hyperfit.models import (
    check_lengths,
    check_model_files,
    deepspeed_launch,
    load_model,
    load_model_config,
    precision_guard,
)
from hyperfit.runs import RunDir, RunError, load_run_config, save_config
from hyperfit.stages.convergence import not_near_zero
from hyperfit.stages.data import prepare_data
from hyperfit.stages.evaluate import evaluate
from hyperfit.stages.generate import Job, run_jobs
from hyperfit.stages.report import report

NEXT_UNDER_FSDP2 = ("to generate, evaluate and report, run the same `hyperfit run` command with --resume under "
                    "`accelerate launch --config_file configs/accelerate/fsdp2.yaml`, which skips the finished "
                    "stages")


def check(cfg: RunConfig, trains: bool = True, images: bool = False) -> None:
    """Everything that can be checked cheaply: the model's config loads, lengths fit its context, and
    (when the run will train) the batch splits over the launched processes."""
    from hyperfit.training import check_tracker, local_batch_size

    if cfg.data.num_contexts == 0 and not cfg.data.contexts:
        raise ConfigError("data.num_contexts=0: `hyperfit run` continues held-out contexts and measures them, and "
                          "would report rows of nothing; set data.num_contexts >= 1 (the paper: 300), or run only "
                          "the stages you need (hyperfit train RUN_DIR after the data stage)")
    if trains:
        local_batch_size(cfg.train, world()[1], cfg.data.num_train)
    resolve(cfg.generate.decoder, cfg.generate.params)
    for name in cfg.evaluate.metrics:
        get_metric(name)
    check_kinds(cfg, images)
    if cfg.model.init != "scratch":  # a scratch model is built to fit the data, after the data stage
        check_model_files(cfg.model)
        # An image's last pixel is generated, never read: a completion needs one position fewer than its tokens.
        check_lengths(load_model_config(cfg.model), cfg.data, cfg.generate.max_new_tokens - images,
                      cfg.train.probe_new_tokens - images)
    check_tracker(cfg.train.tracker)
    trains_at_all = (cfg.train.updates or cfg.train.epochs) > 0
    if cfg.model.dtype != "float32" and trains_at_all:
        # Low-precision weights: load them once now so the precision guard can refuse before any writing.
        precision_guard(load_model(cfg.model), cfg.train.lr, cfg.train.optimizer)


def check_resumable(cfg: RunConfig, run_dir: RunDir) -> None:
    """--resume continues the saved experiment: the data and model must be the saved ones, and a finished
    run's training settings too (they would not take effect, yet config.yaml would record them)."""
    saved = load_run_config(run_dir)
    if to_dict(saved.data) != to_dict(cfg.data) or to_dict(saved.model) != to_dict(cfg.model):
        raise RunError(f"--resume: the data or model settings differ from those saved in {run_dir.config}; "
                       "resuming would mix two experiments. Use the saved settings or a new run name")
    changed = changed_keys(to_dict(saved.train), to_dict(cfg.train), "train")
    if run_dir.final.is_dir() and changed:
        raise RunError(f"--resume: {run_dir.path} has finished training, so {', '.join(changed)} would not take "
                       f"effect (the weights were trained with the saved settings). Drop those overrides, or train "
                       f"a new run from its weights: model.name={run_dir.final}")


def changed_keys(saved: dict, now: dict, prefix: str) -> list[str]:
    """'train.lr 0.001 → 0.5' for each key whose value differs.

    >>> changed_keys({"lr": 0.001, "epochs": 2}, {"lr": 0.5, "epochs": 2}, "train")
    ['train.lr 0.001 → 0.5']
    """
    return [f"{prefix}.{k} {saved.get(k)} → {now[k]}" for k in now if saved.get(k) != now[k]]


def _write_config_and_data(cfg: RunConfig, run_dir: RunDir, resume: bool) -> None:
    """config.yaml and data/; a run directory this call created is removed again if the data fails
    (a missing file, too few documents, a wrong field), so the corrected command can use the same name."""

    from hyperfit.models import load_tokenizer

    created = not run_dir.path.exists()
    try:
        save_config(run_dir, cfg)
        images = is_image_data(cfg)
        if images and not (resume and run_dir.data_file("contexts").exists()):
            manifest = write_image_data(cfg, run_dir)
            print(f"data: {manifest['train']} train / {manifest['val']} val / {manifest['contexts']} context images "
                  f"of {manifest['height']}×{manifest['width']}, {manifest['clusters']} colours "
                  f"({manifest['palette']}), context = top {manifest['prefix_rows']} rows")
        if images:
            ensure_base_model(cfg, run_dir)
        if not images and not (resume and run_dir.data_file("contexts").exists()):
            manifest = prepare_data(cfg.data, load_tokenizer(cfg.model), run_dir)
            print(f"data: {manifest['train']} train / {manifest['val']} val / {manifest['contexts']} contexts "
                  f"from {manifest['qualifying']} of {manifest['documents']} documents with ≥ {cfg.data.seq_len} "
                  "tokens")
            if "contexts_per_domain" in manifest:
                print(f"data: contexts as text, {manifest['contexts_per_domain']}; "
                      f"{manifest['training_documents_overlapping_contexts']} documents of data.source overlap them "
                      "and are left out of training")
    except BaseException:
        if created:
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise


def generation_jobs(cfg: RunConfig, run_dir: RunDir) -> list[Job]:
    """The run's generations: its checkpoint with its decoder, and (generate.with_base) the base model's,
    tagged greedy / base-greedy (or the user's generate.tag and base-<tag>), the files the report reads."""
    contexts = run_dir.read_samples("contexts")
    jobs = [Job.of(run_dir, cfg, contexts)]
    if cfg.generate.with_base:
        # With a tag of the user's, the base model's rows need their own (they overwrote the trained ones).
        base_tag = f"base-{cfg.generate.tag}" if cfg.generate.tag else None
        jobs.append(Job.of(run_dir, cfg, contexts, checkpoint="base", tag=base_tag))
    if is_image_data(cfg) and not cfg.generate.tag and cfg.generate.decoder != sampled_changes()["decoder"]:
        # Images: greedy and sampled completions, as the paper shows both.
        jobs.append(Job.of(run_dir, cfg, contexts, **sampled_changes()))
        if cfg.generate.with_base:
            jobs.append(Job.of(run_dir, cfg, contexts, checkpoint="base", **sampled_changes()))
    for changes in extra_changes(cfg.generate):  # generate.extra: one file each, unless it names one made above
        job = Job.of(run_dir, cfg, contexts, tag=None, **changes)
        if job.tag not in {j.tag for j in jobs}:
            jobs.append(job)
    return jobs


def run(cfg: RunConfig, resume: bool = False) -> RunDir:
    """Run all stages; with resume=True, continue a run directory, skipping stages already done."""
    from hyperfit.training import train

    run_dir = RunDir(cfg.run_dir)
    images = is_image_data(cfg)
    if images:
        cfg = image_config(cfg, run_dir)
    if run_dir.config.exists() and not resume:
        raise RunError(f"{run_dir.path} already exists; pass --resume to continue it, or choose another name "
                       f"(name=... or out_dir=...)")
    if resume and run_dir.config.exists():
        check_resumable(cfg, run_dir)
    check(cfg, trains=not (resume and run_dir.final.is_dir()), images=images)
    main = world()[0] == 0
    stop_after_training = deepspeed_launch()
    if stop_after_training and main:
        print(f"DeepSpeed launch: this run stops after training ({NEXT_UNDER_FSDP2})")
    barrier()  # every rank has looked at the run directory before rank 0 writes to it
    if main:
        print("Resolved config:\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False))
        run_dir.sweep_interrupted_writes()  # no rank writes before the next barrier
        _write_config_and_data(cfg, run_dir, resume)
    barrier()  # the data files are there for every rank
    if not (resume and run_dir.final.is_dir()):
        # train() resumes from the last checkpoint, or starts over when an interrupted attempt left none.
        summary = train(cfg.train, cfg.model, run_dir, resume=resume)
        if main:
            print(f"train: {summary['epochs_run']} epochs, {summary['steps']} updates, final train loss "
                  f"{summary['final_train_loss']}, {summary['seconds']} s ({summary['stopped']})")
            warning = not_near_zero(summary["final_train_loss"], cfg.train)
            if warning:
                print(f"WARNING: {warning}")
    if stop_after_training:
        if main:
            print(f"Trained under DeepSpeed; generation and evaluation do not run there: {NEXT_UNDER_FSDP2}")
        return run_dir
    jobs = generation_jobs(cfg, run_dir)
    run_jobs(jobs)  # a job whose file already holds its rows (e.g. --resume) is not generated again
    if main:
        print("\n".join(f"generate: {job.path}" for job in jobs))
    evaluate(cfg.evaluate, cfg.model, run_dir)
    if images and main:
        evaluate_images(run_dir)
    path = report([run_dir])
    if main:
        print(f"report: {path}")
    return run_dir
