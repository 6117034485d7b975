"""Repetition within generated text: Su et al.'s diversity, compression ratio, TTR along the continuation.

Three "rep-n" circulate, and they are not the same number:

- Welleck et al. (2019) seq-rep-n: per continuation, 1 − |unique n-grams| / |n-grams|, then the mean over
  continuations. That is exactly `lexical.rep_n` (registered as `rep_2`..`rep_4`), so it is neither written
  nor registered again here: `seq_rep_n` below is that function under the paper's name.
- Su et al. (2022, SimCTG) rep-n: 100 × (1 − Σ unique / Σ total), the n-gram counts of all continuations
  *pooled* before dividing (uniques still counted within each continuation), on whitespace words. Long and
  short continuations weigh by their n-gram counts, not equally. diversity = Π_{n=2..4} (1 − rep-n / 100).
- The SimCTG reference script (`simctg/evaluation.py`, reused by Contrastive Decoding) skips each text's
  last n-gram and rounds rep-n to two decimals before the product; `simctg_compat=True` reproduces that
  for comparisons with published numbers, the default counts every n-gram.
"""

from __future__ import annotations

import gzip
from collections.abc import Hashable, Sequence

import numpy as np

from hyperfit.metrics.lexical import ngrams, rep_n
from hyperfit.metrics.registry import GenerationSet, register

seq_rep_n = rep_n  # Welleck et al.'s seq-rep-n of one continuation; see the module docstring


def pooled_rep_n(sequences: Sequence[Sequence[Hashable]], n: int, simctg_compat: bool = False) -> float:
    """Su et al.'s rep-n as a fraction: 1 − (Σ unique n-grams per sequence) / (Σ n-grams).

    >>> pooled_rep_n([[1, 2, 1, 2, 1], [3, 4, 5]], 2)   # 12 21 12 21 -> 2 unique of 4 ; 34 45 -> 2 of 2
    0.33333333333333337
    >>> pooled_rep_n([[1, 2, 1, 2, 1], [3, 4, 5]], 2, simctg_compat=True)   # last bigram dropped: 2/3, 1/1
    0.25
    """
    unique = total = 0
    for seq in sequences:
        grams = ngrams(seq, n)
        if simctg_compat:
            grams = grams[:-1]  # the reference loop stops one n-gram early
        unique += len(set(grams))
        total += len(grams)
    return 1.0 - unique / total if total else 0.0


def diversity(sequences: Sequence[Sequence[Hashable]], orders=(2, 3, 4), simctg_compat: bool = False) -> float:
    """Su et al. (2022) diversity: Π over n of (1 − rep-n), rep-n pooled over all sequences. 1 = no repeats.

    >>> diversity([[1, 2, 3, 4, 5]])
    1.0
    >>> round(diversity([[1, 2, 1, 2, 1, 2]]), 4)   # rep-2 3/5, rep-3 2/4, rep-4 1/3 -> 0.4 * 0.5 * 0.667
    0.1333
    """
    product = 1.0
    for n in orders:
        rep = pooled_rep_n(sequences, n, simctg_compat)
        if simctg_compat:
            rep = round(rep * 100, 2) / 100
        product *= 1.0 - rep
    return product


def compression_ratio(text: str) -> float:
    """UTF-8 size / gzip size (level 9, mtime 0 for determinism); higher = more repetitive.

    gzip rather than zlib so that the corpus-level number matches Shaib et al. (2024), who use gzip. Its
    frame is 12 bytes longer than zlib's, which lowers short texts' ratios a little (1000 bytes compressed
    to 500: 2.00 with gzip, 2.05 with zlib). An empty text has ratio 0.

    >>> round(compression_ratio("the cat sat. " * 20), 2), round(compression_ratio("the cat sat."), 2)
    (7.22, 0.38)
    """
    raw = text.encode("utf-8")
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0)) if raw else 0.0


def sliding_ttr(items: Sequence[Hashable], window: int = 96) -> np.ndarray:
    """TTR of every full window: out[s] = distinct(items[s : s + window]) / window, for s = 0..len−window.

    O(len) with a difference array: token j is the first of its type in the windows that start after its
    previous occurrence and no later than j, so it adds 1 to that range of starts.

    >>> sliding_ttr([1, 2, 1, 3, 3], window=3).tolist()   # 1 2 1 | 2 1 3 | 1 3 3
    [0.6666666666666666, 1.0, 0.6666666666666666]
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 token, got {window}")
    length = len(items)
    if length < window:
        return np.zeros(0)
    codes = np.unique(np.asarray(items), return_inverse=True)[1].reshape(-1)
    order = np.argsort(codes, kind="stable")  # positions grouped by type, in order within a type
    prev = np.full(length, -1)
    same = codes[order[1:]] == codes[order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    j = np.arange(length)
    first_start = np.maximum(prev + 1, j - window + 1)
    last_start = np.minimum(j, length - window)
    live = first_start <= last_start
    starts = length - window + 2
    diff = np.bincount(first_start[live], minlength=starts) - np.bincount(last_start[live] + 1, minlength=starts)
    return np.cumsum(diff)[: length - window + 1] / window


def ttr_by_position(sequences: Sequence[Sequence[Hashable]], window: int = 96) -> np.ndarray:
    """The paper's Figure 9 curve: mean TTR of the `window`-token window ending at each position.

    curve[i] is for the window ending at token index window − 1 + i, averaged over the continuations long
    enough to have it (shorter ones drop out rather than count as zero). Empty if none reaches `window`.

    >>> ttr_by_position([[1, 2, 1, 3], [5, 5, 6]], window=2).tolist()   # 1.0,1.0,1.0 and 0.5,1.0
    [0.75, 1.0, 1.0]
    """
    curves = [sliding_ttr(seq, window) for seq in sequences]
    width = max((len(c) for c in curves), default=0)
    total, count = np.zeros(width), np.zeros(width)
    for c in curves:
        total[: len(c)] += c
        count[: len(c)] += 1
    return total / np.maximum(count, 1)


@register("diversity", "Su et al. diversity Π_{n=2..4}(1 − rep-n) of token ids, n-grams pooled over continuations.")
def _diversity(g: GenerationSet):
    return diversity([list(t) for t in g.token_ids])


@register(
    "diversity_simctg",
    "Su et al. diversity on whitespace words, as SimCTG's script computes it (for published numbers).",
)
def _diversity_simctg(g: GenerationSet):
    return diversity([t.strip().split() for t in g.texts], simctg_compat=True)


@register("compression_ratio", "gzip compression ratio of each continuation's text (higher = more repetitive), mean.")
def _compression(g: GenerationSet):
    per = [compression_ratio(t) for t in g.texts]
    return (sum(per) / len(per) if per else 0.0), per


@register(
    "compression_ratio_corpus",
    "gzip compression ratio of all continuations joined by newlines (Shaib et al. 2024).",
)
def _compression_corpus(g: GenerationSet):
    return compression_ratio("\n".join(g.texts))
