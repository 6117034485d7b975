"""Command line: parse, call one stage function, print where the output went.

    hyperfit demo                                   # the whole pipeline on a real 260K model, CPU, minutes
    hyperfit run configs/paper.yaml [key.sub=value ...] [--resume]
    hyperfit data|train|generate|evaluate RUN_DIR [key.sub=value ...]
    hyperfit report RUN_DIR [RUN_DIR ...] [--out DIR]
    hyperfit compare RUN_DIR [RUN_DIR ...] --decoders greedy,top_p [--lengths 128,256] [--block-ngrams 6]
    hyperfit import-llama2c SRC_DIR OUT_DIR
    hyperfit agreement RUN_DIR RUN_DIR ... [--base]  # top-1 agreement (the paper's shuffling experiment)
    hyperfit experiment configs/experiments/quantity.yaml [--fast] [--launcher submitit]   # a sweep of runs
    hyperfit figure repetition|probabilities|ttr|curves RUN_DIR ...   # the paper's Fig. 1, 4, 9, curves
    hyperfit metrics                                # the metric registry
    hyperfit plan llama-3.1-70b [--gpu-gib 79.6]    # memory per strategy and memory mode, GPUs needed (config only)
    hyperfit bench RUN_DIR [--tasks hellaswag,mmlu] [--limit N]   # lm-eval, original vs hyperfitted
    hyperfit study ...                              # blind pairwise human evaluation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hyperfit.bench import bench
from hyperfit.config import RunConfig, help_text, load_config
from hyperfit.config.load import is_file
from hyperfit.demo import demo
from hyperfit.dist import close_process_group, print0
from hyperfit.errors import ConfigError, HyperfitError
from hyperfit.experiments import LAUNCHERS, load_spec, run_experiment
from hyperfit.figures import FIGURES
from hyperfit.figures import draw as draw_figure
from hyperfit.images import evaluate_images, image_run
from hyperfit.images.demo import demo_images
from hyperfit.images.stage import ensure_base_model, is_image_data, write_image_data
from hyperfit.metrics.registry import available_metrics
from hyperfit.plan import LoraPlan, plan
from hyperfit.runs import RunDir, load_run_config, record_stage_overrides
from hyperfit.stages.data import prepare_data
from hyperfit.stages.evaluate import evaluate
from hyperfit.stages.report import report
from hyperfit.study.cli import main as study_main

FMT = argparse.RawDescriptionHelpFormatter


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["study"]:
        return study_main(argv[1:])
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    rest = _take_late_overrides(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _quiet_libraries()
    try:
        code = args.fn(args)
        close_process_group()
        return code
    except KeyboardInterrupt:
        print("interrupted; finished stages and checkpoints are kept (use --resume)", file=sys.stderr)
        return 130
    except HyperfitError as e:  # the user's to fix: one line; anything else is a bug and keeps its traceback
        print(f"hyperfit {args.command}: error: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------------------
# Commands: one function each, called with the parsed arguments; 0 on success.


def cmd_run(args) -> int:
    from hyperfit.stages.pipeline import run

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not is_file(config):
        config, overrides = None, [config] + overrides  # `hyperfit run key=value ...` without a YAML
    overrides += [f"train.push_to_hub={args.push_to_hub}"] if args.push_to_hub else []
    run_dir = run(load_config(config, overrides), resume=args.resume)
    print0(f"done: {run_dir.path}")
    return 0


def cmd_data(args) -> int:
    from hyperfit.models import load_tokenizer

    run_dir, cfg = _open_run(args)
    if is_image_data(cfg):  # images: colour-cluster tokens, and a scratch model's base weights
        print0(write_image_data(cfg, run_dir))
        ensure_base_model(cfg, run_dir)
        return 0
    print0(prepare_data(cfg.data, load_tokenizer(cfg.model), run_dir))
    return 0


def cmd_train(args) -> int:
    from hyperfit.training import train

    run_dir, cfg = _open_run(args)
    print0(train(cfg.train, cfg.model, run_dir, resume=args.resume))
    return 0


def cmd_generate(args) -> int:
    from hyperfit.stages.generate import generate

    run_dir, cfg = _open_run(args)
    print0(f"wrote {generate(cfg.generate, cfg.model, run_dir)}")
    return 0


def cmd_evaluate(args) -> int:
    run_dir, cfg = _open_run(args)
    for path in evaluate(cfg.evaluate, cfg.model, run_dir, args.tag):
        print0(f"wrote {path}")
    if image_run(run_dir):
        print0(f"wrote {evaluate_images(run_dir)}")
    return 0


def _open_run(args) -> tuple[RunDir, RunConfig]:
    """The run directory a stage command names, and its saved config with this command's overrides (noted
    in config.yaml's provenance, so a reader sees that the stage ran with other settings)."""
    run_dir = RunDir(args.run_dir)
    push = [f"train.push_to_hub={args.push_to_hub}"] if getattr(args, "push_to_hub", None) else []
    overrides = [*args.overrides, *push]
    cfg = load_run_config(run_dir, overrides)
    record_stage_overrides(run_dir, overrides)
    return run_dir, cfg


def cmd_report(args) -> int:
    print0(f"wrote {report([RunDir(p) for p in args.run_dirs], Path(args.out) if args.out else None)}")
    return 0


def cmd_compare(args) -> int:
    from hyperfit.stages.compare import compare  # loads torch: only this command pays for it

    runs = [a for a in args.items if "=" not in a]
    overrides = [a for a in args.items if "=" in a]
    lengths = parse_lengths(args.lengths) if args.lengths else None
    decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
    result = compare(runs, decoders, lengths, args.block_ngrams, args.out, overrides, args.contexts_from_first)
    print0(f"wrote {result['markdown']} and {result['csv']} ({len(result['generated'])} generated, "
           f"{len(result['cached'])} reused)")
    return 0


def parse_lengths(text: str) -> list[int]:
    """'128,256' -> [128, 256]; anything but positive whole numbers is refused with the value.

    >>> parse_lengths("128, 256")
    [128, 256]
    """
    items = [x.strip() for x in text.split(",")]
    if not all(x.isascii() and x.isdigit() and int(x) > 0 for x in items):
        raise ConfigError(f"--lengths {text!r}: give positive whole numbers of tokens separated by commas, "
                          "e.g. --lengths 128,256")
    return [int(x) for x in items]


def cmd_demo(args) -> int:
    if args.images:
        demo_images(args.assets, args.out, args.overrides, resume=args.resume)
        return 0
    demo(args.assets, args.out, args.overrides, resume=args.resume)
    return 0


def cmd_import_llama2c(args) -> int:
    from hyperfit.llama2c import import_llama2c

    print0(f"wrote {import_llama2c(args.src, args.out)}")
    return 0


def cmd_agreement(args) -> int:
    from hyperfit.stages.agreement import agreement  # loads torch: only this command pays for it

    result = agreement(args.run_dirs, args.base, args.out)
    for name, row in zip(result["models"], result["matrix"]):
        print0(f"{name:>20s} " + " ".join(f"{v:.3f}" for v in row))
    return 0


def cmd_figure(args) -> int:
    options = {k: v for k, v in (("index", args.index), ("n", args.n), ("text", args.text), ("tag", args.tag),
                                 ("window", args.window)) if v is not None}
    for path in draw_figure(args.kind, args.runs, Path(args.out) if args.out else None, **options):
        print0(f"wrote {path}")
    return 0


def cmd_experiment(args) -> int:
    spec = load_spec(args.spec, fast=args.fast, overrides=args.overrides)
    command = " ".join(["hyperfit experiment", args.spec, *(["--fast"] if args.fast else []),
                        *([f"--launcher {args.launcher}"] if args.launcher != "local" else []),
                        *([f"--out {args.out}"] if args.out != "runs" else []), *args.overrides])
    summary = run_experiment(spec, args.launcher, Path(args.out), command, reuse=args.reuse)
    print0(f"{summary.line()}\nreport: {summary.report}")
    return 1 if summary.failed else 0  # a failed cell is the sweep's result, not a usage error (2)


def cmd_plan(args) -> int:
    lora = (LoraPlan(args.lora_rank, args.lora_layers, 4 if args.dtype == "float32" else 2)
            if args.lora_rank is not None else None)
    print0(plan(args.model, gpu_gib=args.gpu_gib, gpu_gb=args.gpu_gb, batch=args.batch, seq=args.seq,
                checkpointing=args.checkpointing, lora=lora))
    return 0


def cmd_bench(args) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    path = bench(args.run_dir, tasks, args.limit, args.text, args.batch_size, args.tag)
    print0(f"wrote {path} and {report([RunDir(args.run_dir)])}")
    return 0


def cmd_metrics(args) -> int:
    for name, m in sorted(available_metrics().items()):
        print0(f"{name:24s} {m.help}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# The parser: one small function per command family, each naming the cmd_ function it runs.


def _parser() -> argparse.ArgumentParser:
    fields = "configuration keys (YAML sections or key.sub=value overrides; defaults are the paper's):\n" + help_text()
    p = argparse.ArgumentParser(prog="hyperfit", description=__doc__, epilog=fields, formatter_class=FMT)
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub, fields)
    _add_stages(sub, fields)
    _add_report_compare(sub, fields)
    _add_tools(sub)
    _add_plan(sub)
    _add_experiment(sub, fields)
    _add_bench(sub)
    sub.add_parser("study", help="blind pairwise human evaluation (hyperfit study --help)", add_help=False)
    return p


def _add_run(sub, fields: str) -> None:
    r = sub.add_parser("run", help="all stages on a new run directory", epilog=fields, formatter_class=FMT)
    r.add_argument("config", nargs="?", help="YAML config (e.g. configs/paper.yaml); defaults if omitted")
    r.add_argument("overrides", nargs="*", help="key.sub=value, e.g. train.lr=1e-4")
    r.add_argument("--resume", action="store_true", help="continue this run directory; finished stages are skipped")
    r.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the final model + model card (= train.push_to_hub)")
    r.set_defaults(fn=cmd_run)


def _add_stages(sub, fields: str) -> None:
    for name, help_, fn in [("data", "rewrite data/ of a run", cmd_data), ("train", "train on a run's data", cmd_train),
                            ("generate", "continue the held-out contexts", cmd_generate),
                            ("evaluate", "metrics of generations", cmd_evaluate)]:
        s = sub.add_parser(name, help=help_, epilog=fields, formatter_class=FMT)
        s.add_argument("run_dir")
        s.add_argument("overrides", nargs="*", help="key.sub=value")
        s.set_defaults(fn=fn)
        if name == "train":
            s.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
            s.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the final model + model card")
        if name == "evaluate":
            s.add_argument("--tag", action="append", help="generations tag to evaluate (repeatable; default all)")


def _add_report_compare(sub, fields: str) -> None:
    rep = sub.add_parser("report", help="report.md + plots for one or more runs")
    rep.add_argument("run_dirs", nargs="+")
    rep.add_argument("--out", help="output directory (default: the first run directory)")
    rep.set_defaults(fn=cmd_report)

    c = sub.add_parser("compare", help="base and hyperfitted models × decoders × lengths → compare.md/.csv",
                       epilog=fields, formatter_class=FMT)
    c.add_argument("items", nargs="+", metavar="RUN_DIR [key.sub=value]",
                   help="run directories, then overrides applied to each run's config (e.g. generate.num_samples=3)")
    c.add_argument("--decoders", default="greedy", help="comma-separated decoders (default: greedy); see "
                   "hyperfit.decoding.presets: greedy, top_p, top_k, temperature, typical, min_p, eta, epsilon, "
                   "repetition_penalty, no_repeat_ngram, beam, contrastive, entropy_matched_temperature")
    c.add_argument("--lengths",
                   help="comma-separated continuation lengths in tokens (default: generate.max_new_tokens)")
    c.add_argument("--block-ngrams", type=int, help="citation blocker: never reproduce a training N-gram (paper: 6)")
    c.add_argument("--out", help="where compare.md and compare.csv go (default: the first run directory)")
    c.add_argument("--contexts-from-first", action="store_true",
                   help="runs hold different contexts: continue the first run's with every model anyway "
                        "(refused when the runs' tokenizers differ: token ids mean other text there)")
    c.set_defaults(fn=cmd_compare)


def _add_tools(sub) -> None:
    d = sub.add_parser("demo", help="the whole pipeline on karpathy's stories260K, on CPU")
    d.add_argument("--assets", help="folder with stories260K/ and text/tinystories/ (default: $HYPERFIT_ASSETS, "
                                    "then the Hugging Face hub)")
    d.add_argument("--out", default="runs", help="parent of the demo's run directory (default: runs)")
    d.add_argument("--resume", action="store_true",
                   help="finish an interrupted demo run instead of replacing it")
    d.add_argument("--images", action="store_true",
                   help="the image demo: pretrain a tiny ImageGPT on MNIST (assets/images/mnist), hyperfit it, and "
                        "complete held-out digits (overrides prefixed pretrain. go to the pretraining run)")
    d.add_argument("overrides", nargs="*", help="key.sub=value on top of the demo's settings")
    d.set_defaults(fn=cmd_demo)

    i = sub.add_parser("import-llama2c", help="convert a llama2.c checkpoint to a Hugging Face model folder")
    i.add_argument("src", help="folder with the checkpoint .bin and its SentencePiece tokenizer .model")
    i.add_argument("out", help="output folder (save_pretrained layout)")
    i.set_defaults(fn=cmd_import_llama2c)

    a = sub.add_parser("agreement", help="top-1 agreement matrix between runs (the paper's shuffling experiment)")
    a.add_argument("run_dirs", nargs="+")
    a.add_argument("--base", action="store_true", help="include the original model")
    a.add_argument("--out", help="output directory (default: the first run directory)")
    a.set_defaults(fn=cmd_agreement)

    sub.add_parser("metrics", help="list the registered metrics").set_defaults(fn=cmd_metrics)


def _add_plan(sub) -> None:
    pl = sub.add_parser("plan", help="memory per multi-GPU strategy and per single-GPU memory mode "
                        "(train.optimizer), GPUs needed, from the model's config")
    pl.add_argument("model", help="preset (tinyllama-1.1b, deepseek-7b, llama-3.1-8b, llama-3.1-70b), hub id or folder")
    size = pl.add_mutually_exclusive_group()
    size.add_argument("--gpu-gib", type=float, help="memory of one GPU in GiB (2^30 bytes), the unit of the table "
                      "(default 79.6: an 80 GB H100 reports 81,559 MiB)")
    size.add_argument("--gpu-gb", type=float, help="memory of one GPU in decimal GB (10^9 bytes), converted to GiB")
    pl.add_argument("--batch", type=int, default=8, help="global batch in samples (paper: 8)")
    pl.add_argument("--seq", type=int, default=256, help="tokens per sample (paper: 256)")
    pl.add_argument("--checkpointing", action="store_true", help="with activation checkpointing")
    pl.add_argument("--lora-rank", type=int, help="plan train.method=lora with adapters of this rank instead of "
                    "full training: frozen base + adapters and their optimizer state")
    pl.add_argument("--lora-layers", default="all", help="with --lora-rank: train.lora_layers (all, last:K, indices)")
    pl.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                    help="with --lora-rank: model.dtype of the frozen base (default bfloat16: adapters stay fp32)")
    pl.set_defaults(fn=cmd_plan)


def _add_experiment(sub, fields: str) -> None:
    e = sub.add_parser("experiment", help="a sweep: one run per cell of a spec's axes, cached, + an aggregate report",
                       epilog=fields, formatter_class=FMT)
    e.add_argument("spec", help="experiment spec (e.g. configs/experiments/quantity.yaml; see docs/experiments.md)")
    e.add_argument("overrides", nargs="*", help="key.sub=value for every cell; an axis key replaces that axis's "
                   "values (data.seed=0, data.num_train=[8,16])")
    e.add_argument("--fast", action="store_true",
                   help="the spec's fast: cut (few cells, tiny settings), into <name>-fast")
    e.add_argument("--launcher", default="local", choices=list(LAUNCHERS),
                   help="local: one cell after another here (default); submitit: one SLURM job per cell")
    e.add_argument("--out", default="runs", help="parent of the experiment's folder (default: runs)")
    e.add_argument("--no-reuse", dest="reuse", action="store_false",
                   help="compute the tokenized data and the base model's generations in every cell instead of once "
                   "per sweep (<experiment>/cache/)")
    e.set_defaults(fn=cmd_experiment)

    f = sub.add_parser("figure", help="the paper's per-run figures: repetition (Fig. 1), probabilities (Fig. 4), ttr "
                       "(Fig. 9), curves", formatter_class=FMT,
                       epilog="\n".join(f"  {k}: {v}" for k, v in FIGURES.items()))
    f.add_argument("kind", choices=list(FIGURES))
    f.add_argument("runs", nargs="+", help="run directories (several: one plot)")
    f.add_argument("--out", help="folder for the files (default: the first run's plots/)")
    f.add_argument("--index", type=int, help="repetition: which continuation (default 0)")
    f.add_argument("--n", type=int, help="repetition: n of the repeated n-grams, in tokens (default 3)")
    f.add_argument("--text", help="probabilities: the text (default: the first run's first validation sample)")
    f.add_argument("--tag", help="ttr: the generations file (default greedy; base-<tag> is the original model)")
    f.add_argument("--window", type=int, help="ttr: the TTR window (default: the run's evaluate.window)")
    f.set_defaults(fn=cmd_figure)


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="lm-evaluation-harness on the original and the hyperfitted model")
    b.add_argument("run_dir")
    b.add_argument("--tasks", help="comma-separated lm-eval task names (hellaswag, mmlu, lambada_openai: need the "
                   "hub), or the local ones hyperfit_cloze,hyperfit_ppl (default; offline)")
    b.add_argument("--limit", type=int, help="at most this many documents per task")
    b.add_argument("--text", help="text file the local tasks are built from (default: the run's data.source when "
                   "it is a file, else $HYPERFIT_ASSETS/text/tinystories/tinystories_val.txt); the run's own documents "
                   "are left out")
    b.add_argument("--batch-size", type=int, default=8, help="requests per forward (default 8)")
    b.add_argument("--tag", help="results go to metrics/bench-<tag>.json (default: the task names)")
    b.set_defaults(fn=cmd_bench)


# The positional list that holds each command's key.sub=value overrides.
OVERRIDES_FIELD = {"run": "overrides", "data": "overrides", "train": "overrides", "generate": "overrides",
                   "evaluate": "overrides", "demo": "overrides", "compare": "items", "experiment": "overrides"}


def _take_late_overrides(args, rest: list[str]) -> list[str]:
    """Move key=value arguments that follow an option (`train RUN --resume train.epochs=4`) into the overrides.

    argparse fills a command's positionals once, before its first option, so later ones land in `rest`.
    parse_intermixed_args would fix that but refuses parsers with subcommands (TypeError). Returns what is
    still unrecognized, in order."""
    field = OVERRIDES_FIELD.get(args.command)
    if field is None:
        return rest
    late = [r for r in rest if "=" in r and not r.startswith("-")]
    setattr(args, field, [*getattr(args, field), *late])
    return [r for r in rest if r not in late]


def _quiet_libraries() -> None:
    # transformers draws a progress bar for every shard it loads or writes (several per epoch here);
    # our own bar and log lines say what is happening.
    import transformers.utils.logging as tlog

    tlog.disable_progress_bar()
    tlog.set_verbosity_error()


if __name__ == "__main__":
    sys.exit(main())
