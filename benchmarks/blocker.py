"""How much the citation blocker slows greedy decoding, against unblocked decoding in the same process.

    PYTHONPATH=src python benchmarks/blocker.py                       # CPU: small model, 512k-token corpus
    PYTHONPATH=src python benchmarks/blocker.py --device cuda --model 1b --batch 32 --new-tokens 256

Prints the index build time, the per-step cost of one blocker call, the end-to-end greedy `generate` time
with and without the blocker (same model, same contexts, interleaved repeats, median), and the overhead
ratio. Then transformers' own NoBadWordsLogitsProcessor (a SequenceBiasLogitsProcessor with −inf) on the
same n-grams at smaller corpora: its set-up loops over every n-gram in Python and each step compares the
context against every n-gram (transformers 5.24: one tensor op per prefix length; 5.17: a Python loop
over the n-grams), so its cost grows with the corpus while the index's stays flat.
Random weights and random token ids: timing depends on shapes, not on what the model says.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList, NoBadWordsLogitsProcessor

from hyperfit.decoding.blocker import NgramBlocker, build_index

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, now  # noqa: E402

MODELS = {
    # ~10M parameters: a CPU-sized stand-in.
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=2048),
    "1b": SIZES["1b"],  # TinyLlama-1.1B's shape (the paper's smallest model)
}


def timed(fn, device):
    start = now(device)
    out = fn()
    return now(device) - start, out


def build_model(name, vocab, device):
    shape = {**MODELS[name], "vocab_size": vocab}
    config = LlamaConfig(bos_token_id=None, eos_token_id=None, pad_token_id=0, **shape)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        return LlamaForCausalLM(config).to(dtype).eval()


def generate(model, contexts, processors, new_tokens):
    with torch.no_grad():
        return model.generate(contexts, attention_mask=torch.ones_like(contexts), do_sample=False,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              logits_processor=LogitsProcessorList(processors))  # fmt: skip


def per_call_seconds(processor, input_ids, scores, device, calls=50, rounds=5):
    """Best of `rounds` averages: on a shared machine the minimum is the least disturbed estimate.

    A call slower than 0.2 s is timed once: older transformers (5.17) loop over every n-gram in Python
    at each step, over a second per call at 12k n-grams on an H200.
    """
    processor(input_ids, scores)  # warm-up (and NoBadWords' lazy preparation)
    once, _ = timed(lambda: processor(input_ids, scores), device)
    if once > 0.2:
        return once
    batch = lambda: [processor(input_ids, scores) for _ in range(calls)]  # noqa: E731
    return min(timed(batch, device)[0] for _ in range(rounds)) / calls


def end_to_end(args, device, train):
    vocab = args.vocab
    seconds, index = timed(lambda: build_index(train, args.n), torch.device("cpu"))
    print(f"index: {train.numel():,} training tokens -> {index.num_entries:,} distinct {args.n - 1}-grams, "
          f"built in {seconds:.2f} s (max {index.max_collisions} entries per hash)")  # fmt: skip
    blocker = NgramBlocker(index)
    model = build_model(args.model, vocab, device)
    gen = torch.Generator().manual_seed(1)
    # Half the contexts are slices of training samples: their lookups hit and ban, as with real contexts.
    contexts = torch.randint(0, vocab, (args.batch, args.context), generator=gen)
    contexts[: args.batch // 2] = train[: args.batch // 2, : args.context]
    contexts = contexts.to(device)

    ids = torch.cat([contexts, contexts[:, :8]], dim=1)
    scores = torch.randn(args.batch, vocab, device=device)
    step = per_call_seconds(blocker, ids, scores, device, calls=100)
    print(f"blocker call: {step * 1e3:.3f} ms per step (batch {args.batch}, vocab {vocab}, half the rows hit)")

    generate(model, contexts, [], 4)  # warm-up
    plain, blocked = [], []
    for _ in range(args.repeats):
        plain.append(timed(lambda: generate(model, contexts, [], args.new_tokens), device)[0])
        blocked.append(timed(lambda: generate(model, contexts, [blocker], args.new_tokens), device)[0])
    p, b = statistics.median(plain), statistics.median(blocked)
    print(f"greedy generate, {args.model} model, batch {args.batch}, {args.new_tokens} new tokens, "
          f"median of {args.repeats}: unblocked {p:.3f} s ({p / args.new_tokens * 1e3:.2f} ms/step), "
          f"blocked {b:.3f} s -> overhead {100 * (b / p - 1):+.1f} %")  # fmt: skip
    return index, blocker


def versus_no_bad_words(args, device, train):
    vocab = args.vocab
    gen = torch.Generator().manual_seed(2)
    print(f"\nper-step cost vs transformers NoBadWordsLogitsProcessor (batch {args.batch}, {args.n}-grams):")
    for samples in args.compare_samples:
        part = train[:samples]
        grams = part.unfold(1, args.n, 1).reshape(-1, args.n).unique(dim=0).tolist()
        rows = part[torch.arange(args.batch) % samples]
        ids = torch.cat([rows[:, :16], torch.randint(0, vocab, (args.batch, 4), generator=gen)], 1)
        ids[: args.batch // 2, -(args.n - 1) :] = rows[: args.batch // 2, 20 : 20 + args.n - 1]  # hits
        ids, scores = ids.to(device), torch.randn(args.batch, vocab, device=device)
        # timed() calls each lambda at once; the defaults bind this iteration's values all the same.
        setup_ours, ours = timed(lambda part=part: NgramBlocker(build_index(part, args.n)), device)
        setup_hf, theirs = timed(lambda grams=grams: NoBadWordsLogitsProcessor(grams), device)
        # the first call builds NoBadWords' tensors
        prep_hf, _ = timed(lambda f=theirs, ids=ids, scores=scores: f(ids, scores), device)
        assert torch.equal(ours(ids, scores), theirs(ids, scores)), "the two processors disagree"
        t_ours = per_call_seconds(ours, ids, scores, device)
        t_hf = per_call_seconds(theirs, ids, scores, device, calls=10)
        print(f"  {len(grams):>9,} n-grams: set-up ours {setup_ours:6.2f} s, NoBadWords {setup_hf + prep_hf:6.2f} s;"
              f" per step ours {t_ours * 1e3:7.3f} ms, NoBadWords {t_hf * 1e3:8.3f} ms"
              f" ({t_hf / t_ours:6.1f}x)")  # fmt: skip


def count_problems(args) -> list[str]:
    """Every bad count, each with its value and fix. The comparison's corpora are the first N of the
    --samples training samples (train[:N] would silently stop at --samples), so none can exceed it."""
    problems = [f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1; use 1 or more"
                for name in ("samples", "batch", "repeats", "new_tokens") if getattr(args, name) < 1]
    if too_many := [s for s in args.compare_samples if s > args.samples]:
        problems.append(f"--compare-samples {' '.join(map(str, too_many))}: more than --samples={args.samples}, "
                        f"the training samples they are taken from; use --samples {max(too_many)} or smaller sizes")
    if too_few := [s for s in args.compare_samples if s < 1]:
        problems.append(f"--compare-samples {' '.join(map(str, too_few))}: each corpus needs at least 1 sample")
    return problems


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--samples", type=int, default=2000, help="training samples (paper: 2000)")
    parser.add_argument("--sample-len", type=int, default=256, help="tokens per sample (paper: 256)")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--n", type=int, default=6, help="blocked span length (paper: 6)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-samples", type=int, nargs="*", default=[50, 400],
                        help="corpus sizes (samples) for the NoBadWords comparison: the first N of "
                             "--samples")  # fmt: skip
    args = parser.parse_args(argv)
    if problems := count_problems(args):
        parser.error("; ".join(problems))
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = torch.randint(0, args.vocab, (args.samples, args.sample_len), generator=torch.Generator().manual_seed(0))
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else torch.get_num_threads()} "
          f"{'' if device.type == 'cuda' else 'threads'}), torch {torch.__version__}")  # fmt: skip
    end_to_end(args, device, train)
    versus_no_bad_words(args, device, train)


if __name__ == "__main__":
    main()
