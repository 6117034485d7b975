"""Self-BLEU and Dataset BLEU: this package against a plain sacrebleu loop, in the same process.

    PYTHONPATH=src python benchmarks/bleu.py                      # 1000 continuations, 2000 training texts
    PYTHONPATH=src python benchmarks/bleu.py --texts 200 --sample 200   # the full sacrebleu loop, no estimate

The sacrebleu loop is `sentence_bleu(hyp, refs)` per hypothesis: it re-counts every reference for every
hypothesis, O(texts²) for Self-BLEU, so by default it runs on `--sample` hypotheses and its full time is
extrapolated linearly (each hypothesis costs the same: all references are re-counted each time). The
sampled scores are checked against ours to 1e-6. Texts are 200-word windows of TinyStories (≈256 tokens),
or synthetic words where ../shared/assets is missing.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import sacrebleu

from hyperfit.metrics.bleu import dataset_bleu, self_bleu

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"
TINYSTORIES = ASSETS / "text" / "tinystories" / "tinystories_val.txt"


def corpus_words() -> list[str]:
    if TINYSTORIES.exists():
        return TINYSTORIES.read_text(encoding="utf-8").split()
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)] + [",", ".", "!", '"']
    return [rng.choice(vocab) for _ in range(400_000)]


def windows(words: list[str], count: int, length: int, rng: random.Random) -> list[str]:
    starts = [rng.randrange(len(words) - length) for _ in range(count)]
    return [" ".join(words[s : s + length]) for s in starts]


def compare(name, ours_fn, sacre_fn, total, sample):
    start = time.perf_counter()
    mean, per = ours_fn()
    ours = time.perf_counter() - start
    start = time.perf_counter()
    expected = [sacre_fn(i) for i in range(sample)]
    loop = (time.perf_counter() - start) * total / sample
    worst = max(abs(a - b) for a, b in zip(per, expected))
    estimate = "" if sample == total else f" (estimated from {sample} hypotheses)"
    print(f"{name}: ours {ours:.2f} s, sacrebleu loop {loop:.1f} s{estimate} -> {loop / ours:.0f}x faster; "
          f"mean {mean:.3f}, max |difference| on the checked hypotheses {worst:.1e}")  # fmt: skip


def count_problems(args) -> list[str]:
    """Every bad count, each with its value and fix (compare() divides by the sampled hypotheses)."""
    # Self-BLEU's references are the other texts: with one text sacrebleu gets none and raises IndexError.
    minimum = {"texts": 2, "train": 1, "words": 1, "sample": 1}
    return [f"--{name}={getattr(args, name)} must be >= {least}; use --{name} {least} or more"
            for name, least in minimum.items() if getattr(args, name) < least]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=1000, help="continuations")
    parser.add_argument("--train", type=int, default=2000, help="training texts (paper: 2000)")
    parser.add_argument("--words", type=int, default=200, help="words per text (~256 tokens)")
    parser.add_argument("--sample", type=int, default=10, help="hypotheses the sacrebleu loop runs on")
    args = parser.parse_args(argv)
    if problems := count_problems(args):
        parser.error("; ".join(problems))
    return args


def main(argv=None):
    args = parse_args(argv)
    rng = random.Random(0)
    words = corpus_words()
    texts = windows(words, args.texts, args.words, rng)
    train = windows(words, args.train, args.words, rng)
    sample = min(args.sample, args.texts)
    print(f"{args.texts} continuations and {args.train} training texts of {args.words} words, "
          f"sacrebleu {sacrebleu.__version__}")
    compare(
        "Self-BLEU", lambda: self_bleu(texts),
        lambda i: sacrebleu.sentence_bleu(texts[i], texts[:i] + texts[i + 1 :]).score, args.texts, sample,
    )  # fmt: skip
    compare(
        "Dataset BLEU", lambda: dataset_bleu(texts, train),
        lambda i: sacrebleu.sentence_bleu(texts[i], train).score, args.texts, sample,
    )  # fmt: skip


if __name__ == "__main__":
    main()
