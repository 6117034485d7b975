"""Command line: parse, call one stage function, print where the output went.

    hyperfit demo                                   # the whole pipeline on a real 260K model, CPU, minutes
    hyperfit run configs/paper.yaml [key.sub=value ...] [--resume]
    hyperfit data|train|generate|evaluate RUN_DIR [key.sub=value ...]
    hyperfit report RUN_DIR [RUN_DIR ...] [--out DIR]
    hyperfit compare RUN_DIR [RUN_DIR ...] --decoders greedy,top_p [--lengths 128,256] [--block-ngrams 6]
    hyperfit import-llama2c SRC_DIR OUT_DIR
    hyperfit agreement RUN_DIR RUN_DIR ... [--base]  # top-1 agreement (the paper's shuffling experiment)
    hyperfit metrics                                # the metric registry
    hyperfit plan llama-3.1-70b [--gpu-gib 79.6]    # memory per strategy, GPUs needed (config only)
    hyperfit study ...                              # blind pairwise human evaluation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hyperfit.errors import HyperfitError


def _parser() -> argparse.ArgumentParser:
    from hyperfit.config import help_text

    fields = "configuration keys (YAML sections or key.sub=value overrides; defaults are the paper's):\n" + help_text()
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="hyperfit", description=__doc__, epilog=fields, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="all stages on a new run directory", epilog=fields, formatter_class=fmt)
    r.add_argument("config", nargs="?", help="YAML config (e.g. configs/paper.yaml); defaults if omitted")
    r.add_argument("overrides", nargs="*", help="key.sub=value, e.g. train.lr=1e-4")
    r.add_argument("--resume", action="store_true", help="continue this run directory; finished stages are skipped")
    r.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the final model + model card (= train.push_to_hub)")

    for name, help_ in [("data", "rewrite data/ of a run"), ("train", "train on a run's data"),
                        ("generate", "continue the held-out contexts"), ("evaluate", "metrics of generations")]:
        s = sub.add_parser(name, help=help_, epilog=fields, formatter_class=fmt)
        s.add_argument("run_dir")
        s.add_argument("overrides", nargs="*", help="key.sub=value")
        if name == "train":
            s.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
            s.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the final model + model card")
        if name == "evaluate":
            s.add_argument("--tag", action="append", help="generations tag to evaluate (repeatable; default all)")

    rep = sub.add_parser("report", help="report.md + plots for one or more runs")
    rep.add_argument("run_dirs", nargs="+")
    rep.add_argument("--out", help="output directory (default: the first run directory)")

    c = sub.add_parser("compare", help="base and hyperfitted models × decoders × lengths → compare.md/.csv",
                       epilog=fields, formatter_class=fmt)
    c.add_argument("items", nargs="+", metavar="RUN_DIR [key.sub=value]",
                   help="run directories, then overrides applied to each run's config (e.g. generate.num_samples=3)")
    c.add_argument("--decoders", default="greedy", help="comma-separated decoders (default: greedy); see "
                   "hyperfit.decoding.presets: greedy, top_p, top_k, temperature, typical, min_p, eta, epsilon, "
                   "repetition_penalty, no_repeat_ngram, beam, contrastive, entropy_matched_temperature")
    c.add_argument("--lengths", help="comma-separated continuation lengths in tokens (default: generate.max_new_tokens)")
    c.add_argument("--block-ngrams", type=int, help="citation blocker: never reproduce a training N-gram (paper: 6)")
    c.add_argument("--out", help="where compare.md and compare.csv go (default: the first run directory)")
    c.add_argument("--contexts-from-first", action="store_true",
                   help="runs hold different contexts: continue the first run's with every model anyway")

    d = sub.add_parser("demo", help="the whole pipeline on karpathy's stories260K, on CPU")
    d.add_argument("--assets", help="folder with stories260K/ and text/tinystories/ (default: $HYPERFIT_ASSETS, "
                                    "then the Hugging Face hub)")
    d.add_argument("--out", default="runs", help="parent of the demo's run directory (default: runs)")
    d.add_argument("overrides", nargs="*", help="key.sub=value on top of the demo's settings")

    i = sub.add_parser("import-llama2c", help="convert a llama2.c checkpoint to a Hugging Face model folder")
    i.add_argument("src", help="folder with the checkpoint .bin and its SentencePiece tokenizer .model")
    i.add_argument("out", help="output folder (save_pretrained layout)")

    a = sub.add_parser("agreement", help="top-1 agreement matrix between runs (the paper's shuffling experiment)")
    a.add_argument("run_dirs", nargs="+")
    a.add_argument("--base", action="store_true", help="include the original model")
    a.add_argument("--out", help="output directory (default: the first run directory)")

    sub.add_parser("metrics", help="list the registered metrics")
    pl = sub.add_parser("plan", help="memory per multi-GPU strategy and GPUs needed, from the model's config")
    pl.add_argument("model", help="preset (tinyllama-1.1b, deepseek-7b, llama-3.1-8b, llama-3.1-70b), hub id or folder")
    size = pl.add_mutually_exclusive_group()
    size.add_argument("--gpu-gib", type=float, help="memory of one GPU in GiB (2^30 bytes), the unit of the table "
                      "(default 79.6: an 80 GB H100 reports 81,559 MiB)")
    size.add_argument("--gpu-gb", type=float, help="memory of one GPU in decimal GB (10^9 bytes), converted to GiB")
    pl.add_argument("--batch", type=int, default=8, help="global batch in samples (paper: 8)")
    pl.add_argument("--seq", type=int, default=256, help="tokens per sample (paper: 256)")
    pl.add_argument("--checkpointing", action="store_true", help="with activation checkpointing")
    sub.add_parser("study", help="blind pairwise human evaluation (hyperfit study --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["study"]:
        from hyperfit.study.cli import main as study_main

        return study_main(argv[1:])
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    rest = _take_late_overrides(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _quiet_libraries()
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted; finished stages and checkpoints are kept (use --resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - known user errors get one clean line, others a traceback
        if _is_user_error(e):
            print(f"hyperfit {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


# The positional list that holds each command's key.sub=value overrides.
OVERRIDES_FIELD = {"run": "overrides", "data": "overrides", "train": "overrides", "generate": "overrides",
                   "evaluate": "overrides", "demo": "overrides", "compare": "items"}


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


def _is_user_error(e: Exception) -> bool:
    return isinstance(e, HyperfitError)


def _dispatch(args) -> int:
    from hyperfit.config import load_config
    from hyperfit.dist import world
    from hyperfit.runs import RunDir, load_run_config, record_stage_overrides

    def say(text: str) -> None:  # once under a launch, not once per process
        if world()[0] == 0:
            print(text)

    if args.command == "run":
        from hyperfit.stages.pipeline import run

        config, overrides = args.config, list(args.overrides)
        if config and "=" in config and not Path(config).is_file():
            config, overrides = None, [config] + overrides  # `hyperfit run key=value ...` without a YAML
        overrides += [f"train.push_to_hub={args.push_to_hub}"] if args.push_to_hub else []
        run_dir = run(load_config(config, overrides), resume=args.resume)
        say(f"done: {run_dir.path}")
    elif args.command in ("data", "train", "generate", "evaluate"):
        run_dir = RunDir(args.run_dir)
        push = [f"train.push_to_hub={args.push_to_hub}"] if getattr(args, "push_to_hub", None) else []
        cfg = load_run_config(run_dir, [*args.overrides, *push])
        record_stage_overrides(run_dir, [*args.overrides, *push])
        if args.command == "data":
            from hyperfit.stages.data import prepare_data
            from hyperfit.models import load_tokenizer

            say(prepare_data(cfg.data, load_tokenizer(cfg.model), run_dir))
        elif args.command == "train":
            from hyperfit.training import train

            say(train(cfg.train, cfg.model, run_dir, resume=args.resume))
        elif args.command == "generate":
            from hyperfit.stages.generate import generate

            say(f"wrote {generate(cfg.generate, cfg.model, run_dir)}")
        else:
            from hyperfit.stages.evaluate import evaluate

            for path in evaluate(cfg.evaluate, cfg.model, run_dir, args.tag):
                say(f"wrote {path}")
    elif args.command == "report":
        from hyperfit.stages.report import report

        say(f"wrote {report([RunDir(p) for p in args.run_dirs], Path(args.out) if args.out else None)}")
    elif args.command == "compare":
        from hyperfit.stages.compare import compare

        runs = [a for a in args.items if "=" not in a]
        overrides = [a for a in args.items if "=" in a]
        lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else None
        decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
        result = compare(runs, decoders, lengths, args.block_ngrams, args.out, overrides, args.contexts_from_first)
        say(f"wrote {result['markdown']} and {result['csv']} ({len(result['generated'])} generated, "
            f"{len(result['cached'])} reused)")
    elif args.command == "demo":
        from hyperfit.demo import demo

        demo(args.assets, args.out, args.overrides)
    elif args.command == "import-llama2c":
        from hyperfit.llama2c import import_llama2c

        print(f"wrote {import_llama2c(args.src, args.out)}")
    elif args.command == "agreement":
        from hyperfit.stages.agreement import agreement

        result = agreement(args.run_dirs, args.base, args.out)
        for name, row in zip(result["models"], result["matrix"]):
            say(f"{name:>20s} " + " ".join(f"{v:.3f}" for v in row))
    elif args.command == "plan":
        from hyperfit.plan import plan

        print(plan(args.model, gpu_gib=args.gpu_gib, gpu_gb=args.gpu_gb, batch=args.batch, seq=args.seq,
                   checkpointing=args.checkpointing))
    elif args.command == "metrics":
        from hyperfit.metrics.registry import available_metrics

        for name, m in sorted(available_metrics().items()):
            print(f"{name:24s} {m.help}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
