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

import dataclasses

import yaml

from hyperfit.config import RunConfig, to_dict
from hyperfit.models import deepspeed_launch
from hyperfit.dist import barrier, world
from hyperfit.runs import RunDir, RunError, load_run_config, save_config

NEXT_UNDER_FSDP2 = ("to generate, evaluate and report, run the same `hyperfit run` command with --resume under "
                    "`accelerate launch --config_file configs/accelerate/fsdp2.yaml`, which skips the finished "
                    "stages")


def check(cfg: RunConfig, trains: bool = True) -> None:
    """Everything that can be checked cheaply: the model's config loads, lengths fit its context, and
    (when the run will train) the batch splits over the launched processes."""
    from hyperfit.decoding.presets import resolve
    from hyperfit.metrics.registry import get_metric
    from hyperfit.models import check_lengths, load_model_config
    from hyperfit.training import check_tracker, local_batch_size

    if trains:
        local_batch_size(cfg.train, world()[1], cfg.data.num_train)
    resolve(cfg.generate.decoder, cfg.generate.params)
    for name in cfg.evaluate.metrics:
        get_metric(name)
    check_lengths(load_model_config(cfg.model), cfg.data, cfg.generate.max_new_tokens, cfg.train.probe_new_tokens)
    check_tracker(cfg.train.tracker)
    if cfg.model.dtype != "float32" and cfg.train.epochs > 0 and cfg.train.optimizer != "adamw_kahan":
        # Low-precision weights: load them once now so the precision guard can refuse before any writing.
        from hyperfit.models import load_model, precision_guard

        precision_guard(load_model(cfg.model), cfg.train.lr)


def _write_config_and_data(cfg: RunConfig, run_dir: RunDir, resume: bool) -> None:
    """config.yaml and data/; a run directory this call created is removed again if the data fails
    (a missing file, too few documents, a wrong field), so the corrected command can use the same name."""
    import shutil

    from hyperfit.stages.data import prepare_data
    from hyperfit.models import load_tokenizer

    created = not run_dir.path.exists()
    try:
        save_config(run_dir, cfg)
        if not (resume and run_dir.data_file("contexts").exists()):
            manifest = prepare_data(cfg.data, load_tokenizer(cfg.model), run_dir)
            print(f"data: {manifest['train']} train / {manifest['val']} val / {manifest['contexts']} contexts "
                  f"from {manifest['qualifying']} of {manifest['documents']} documents with ≥ {cfg.data.seq_len} "
                  "tokens")
    except BaseException:
        if created:
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise


def run(cfg: RunConfig, resume: bool = False) -> RunDir:
    """Run all stages; with resume=True, continue a run directory, skipping stages already done."""
    from hyperfit.stages.evaluate import evaluate
    from hyperfit.stages.generate import generate
    from hyperfit.stages.report import report
    from hyperfit.training import train

    run_dir = RunDir(cfg.run_dir)
    if run_dir.config.exists() and not resume:
        raise RunError(f"{run_dir.path} already exists; pass --resume to continue it, or choose another name "
                       f"(name=... or out_dir=...)")
    if resume and run_dir.config.exists():
        saved = load_run_config(run_dir)
        if to_dict(saved.data) != to_dict(cfg.data) or to_dict(saved.model) != to_dict(cfg.model):
            raise RunError(f"--resume: the data or model settings differ from those saved in {run_dir.config}; "
                           "resuming would mix two experiments. Use the saved settings or a new run name")
    check(cfg, trains=not (resume and run_dir.final.is_dir()))
    main = world()[0] == 0
    stop_after_training = deepspeed_launch()
    if stop_after_training and main:
        print(f"DeepSpeed launch: this run stops after training ({NEXT_UNDER_FSDP2})")
    barrier()  # every rank has looked at the run directory before rank 0 writes to it
    if main:
        print("Resolved config:\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False))
        _write_config_and_data(cfg, run_dir, resume)
    barrier()  # the data files are there for every rank
    if not (resume and run_dir.final.is_dir()):
        # train() resumes from the last checkpoint, or starts over when an interrupted attempt left none.
        summary = train(cfg.train, cfg.model, run_dir, resume=resume)
        if main:
            print(f"train: {summary['epochs_run']} epochs, {summary['steps']} updates, final train loss "
                  f"{summary['final_train_loss']}, {summary['seconds']} s ({summary['stopped']})")
    if stop_after_training:
        if main:
            print(f"Trained under DeepSpeed; generation and evaluation do not run there: {NEXT_UNDER_FSDP2}")
        return run_dir
    jobs = [cfg.generate]
    if cfg.generate.with_base:
        # With a tag of the user's, the base model's rows need their own (they overwrote the trained ones).
        base_tag = f"base-{cfg.generate.tag}" if cfg.generate.tag else None
        jobs.append(dataclasses.replace(cfg.generate, checkpoint="base", tag=base_tag))
    for job in jobs:
        path = generate(job, cfg.model, run_dir)
        if main:
            print(f"generate: {path}")
    evaluate(cfg.evaluate, cfg.model, run_dir)
    path = report([run_dir])
    if main:
        print(f"report: {path}")
    return run_dir
