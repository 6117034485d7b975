"""Greedy generation speed: transformers generate() against hyperfit.decoding.fast_greedy, in one process.

    python benchmarks/generate.py                                  # tiny model on CPU
    python benchmarks/generate.py --size 1b --dtype bf16           # TinyLlama-1.1B shape on one GPU

Modes: generate (transformers, default dynamic cache: the speed baseline; when it does not run, the
first mode that did, named in the table's "x <mode>" header and as "baseline" in the JSON), eager
(static-cache loop), graph (decode step as a CUDA graph: generate.fast's default on CUDA), graph_block
(graph + the citation blocker, N = 6, indexed over a paper-sized training set of 2000 × 256 tokens that
holds generate()'s own continuations, so the blocker really bans), generate_block (generate() + the same
blocker), compile (torch.compile mode="reduce-overhead"). Each is timed on its second call (the first
records/compiles; its time is printed as setup). `agree` is the share of tokens equal to generate()'s
(for the blocked modes: to generate_block's; graph's or graph_block's when those did not run; the JSON
names it as `agree_vs`), and `changed` says how many the blocker changed against unblocked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, build_model, device_name, dump, kernel_table, now, peak_gib, peak_kind, peak_note, reset_peak  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def blocker_for(model, reference: torch.Tensor, samples: int = 2000, length: int = 256):
    """The real citation blocker over random training samples plus `reference`'s rows (so it bans)."""
    from hyperfit.decoding.blocker import NgramBlocker

    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    train = torch.randint(3, vocab, (samples, length), generator=g).tolist()
    train[: len(reference)] = reference.tolist()
    return NgramBlocker.from_samples(train, n=6)


def hf_generate(model, ids, n, processor=None):
    """generate() greedy, fixed length: min_new_tokens = n bans the model's EOS at every step (so the fast
    decoder is built with ban_ids=[eos] to match)."""
    from transformers import GenerationConfig

    eos = model.config.eos_token_id
    from transformers import LogitsProcessorList

    cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
    procs = LogitsProcessorList([processor] if processor is not None else [])
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                          logits_processor=procs)[:, ids.shape[1]:]


def run_mode(mode, model, ids, n, device, blocker=None):
    from hyperfit.decoding.fast_greedy import GreedyDecoder

    reset_peak(device)
    t0 = now(device)
    hook = blocker if mode.endswith("_block") else None
    if mode.startswith("generate"):
        hf_generate(model, ids, 8, hook)  # warm-up (kernels, allocator) on a short run
        setup = now(device) - t0
        t1 = now(device)
        out = hf_generate(model, ids, n, hook)
    else:
        dec = GreedyDecoder(model, ids.shape[0], ids.shape[1], n, ban_ids=[model.config.eos_token_id],
                            processor=hook, mode=mode.removesuffix("_block"))
        dec(ids)  # records the graph / compiles
        setup = now(device) - t0
        t1 = now(device)
        out = dec(ids)
    seconds = now(device) - t1
    return out, {"mode": mode, "seconds": seconds, "setup_s": setup, "tokens_per_s": out.numel() / seconds,
                 "peak_gib": peak_gib(device)}


def reference(outs, mode) -> str | None:
    """The mode whose tokens `mode`'s are compared with: generate() (blocked modes: generate() + blocker),
    else the graph mode when generate() was not run; None while neither has run."""
    names = ("generate_block", "graph_block") if mode.endswith("_block") else ("generate", "graph")
    return next((n for n in names if n in outs and (n != mode or n.startswith("generate"))), None)


def compare(row, outs) -> None:
    """Fill row's `agree` (share of all tokens equal to its reference's: `agree_vs`) and `agree_first` (of
    the first new token's), None while the reference has not run; for a blocked mode also `changed`, the
    share the blocker changed against the same mode unblocked. Called again at the end, for modes timed
    before their reference (or unblocked counterpart) ran."""
    out, ref = outs[row["mode"]], reference(outs, row["mode"])
    row["agree_vs"] = ref
    row["agree"] = None if ref is None else (out == outs[ref]).float().mean().item()
    # bf16 on random weights: near-tied logits make kernels' rounding flip an argmax, and a row then
    # diverges for good; the first new token shows whether the paths agree before any such flip.
    row["agree_first"] = None if ref is None else (out[:, 0] == outs[ref][:, 0]).float().mean().item()
    plain = outs.get(row["mode"].removesuffix("_block"))
    if row["mode"].endswith("_block") and plain is not None:
        row["changed"] = (out != plain).float().mean().item()


def speed_baseline(ok: list[dict]) -> dict | None:
    """The row the speed ratios divide: generate() when it ran, else the first mode that did."""
    return next((r for r in ok if r["mode"] == "generate"), ok[0] if ok else None)


def table(ok: list[dict], base: dict, device) -> list[str]:
    """The summary table's lines; the ratio column names the mode it compares with (not always generate)."""
    ratio = f"x {base['mode']}"
    w = max(10, len(ratio))
    lines = [f"{'mode':14s} {'seconds':>8s} {'tokens/s':>10s} {ratio:>{w}s} {'setup s':>8s} {'peak GiB':>9s} "
             f"{'agree':>6s}"]
    for r in ok:
        agree = "" if r["agree"] is None else f"{r['agree']:6.1%}"
        lines.append(f"{r['mode']:14s} {r['seconds']:8.3f} {r['tokens_per_s']:10.0f} "
                     f"{base['seconds'] / r['seconds']:{w}.2f} {r['setup_s']:8.2f} {r['peak_gib']:9.2f} {agree:>6s}")
    if base["mode"] != "generate":
        lines.append(f"(generate did not run: ratios are against {base['mode']}, the first mode that did)")
    return lines + [peak_note(device)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--contexts", type=int, default=None, help="batch of contexts (default 32 on GPU, 4 on CPU)")
    p.add_argument("--context-len", type=int, default=32)
    p.add_argument("--new", type=int, default=None, help="new tokens (default 256 on GPU, 16 on CPU)")
    p.add_argument("--modes", default=None,
                   help="comma list (GPU default generate,graph,graph_block,generate_block,eager,compile)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json")
    p.add_argument("--profile", action="store_true",
                   help="print the kernels of 8 eager decode steps by device time (a CUDA graph replays the same)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.contexts = args.contexts or (32 if gpu else 4)
    args.new = args.new or (256 if gpu else 16)
    modes = args.modes.split(",") if args.modes else (
        ["generate", "graph", "graph_block", "generate_block", "eager", "compile"] if gpu
        else ["generate", "eager", "eager_block", "generate_block"])
    model = build_model(args.size, device, DTYPES[args.dtype]).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, SIZES[args.size]["vocab_size"], (args.contexts, args.context_len), generator=g).to(device)
    print(f"generate: {args.size} model {args.dtype}, {args.contexts} contexts × {args.context_len} + {args.new} new "
          f"tokens, on {device_name(device)}")
    rows, outs, blocker = [], {}, None
    for mode in modes:
        if mode.endswith("_block") and blocker is None:
            t = now(device)
            # Its training set holds the unblocked greedy continuations, which it must then change.
            unblocked = next((outs[m] for m in ("generate", "graph", "eager") if m in outs), None)
            blocker = blocker_for(model, unblocked if unblocked is not None else hf_generate(model, ids, args.new))
            print(f"  blocker index: {blocker.index.num_entries} 5-grams, built in {now(device) - t:.1f} s")
        try:
            out, row = run_mode(mode, model, ids, args.new, device, blocker)
        except Exception as e:  # noqa: BLE001 - one failing mode must not hide the others' numbers
            print(f"  {mode}: FAILED {type(e).__name__}: {str(e)[:300]}")
            rows.append({"mode": mode, "error": f"{type(e).__name__}: {e}"[:2000]})
            continue
        outs[mode] = out
        compare(row, outs)
        rows.append(row)
        print(f"  {mode}: {row['seconds']:.3f} s (setup {row['setup_s']:.1f} s), agree {row['agree']} "
              f"(first token {row['agree_first']}), "
              f"changed by the blocker {row.get('changed')}", flush=True)
    for r in rows:  # again, now that every reference has run (its `agree` stays None if it never did)
        if r["mode"] in outs:
            compare(r, outs)
    ok = [r for r in rows if "error" not in r]
    base = speed_baseline(ok)
    if base is not None:
        print("\n".join(table(ok, base, device)))
    dump(args.json, {"device": device_name(device), "args": vars(args), "baseline": base and base["mode"],
                     "peak_kind": peak_kind(device), "rows": rows})
    if args.profile:
        from hyperfit.decoding.fast_greedy import GreedyDecoder

        dec = GreedyDecoder(model, ids.shape[0], ids.shape[1], 9, ban_ids=[model.config.eos_token_id], mode="eager")
        dec(ids)  # warm-up
        print("kernels of one eager call (prefill + 8 decode steps):")
        print(kernel_table(lambda: dec(ids), device))
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
