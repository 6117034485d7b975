"""Lexical diversity of generated text: TTR, distinct-n, rep-n, non-word rate.

Pure functions over token ids or word lists, each with a worked example, then their registrations.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Sequence

from hyperfit.metrics.registry import GenerationSet, register

# Letters of any script ([^\W\d_]: word characters that are not digits or "_"): an ASCII-only pattern cut
# "café" to "caf" and found no word at all in Russian text, whose non-word rate then read a perfect 0.
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words of letters (any script); apostrophes inside a word are kept.

    >>> words("Tom's dog ran, ran! 42 times")
    ["tom's", 'dog', 'ran', 'ran', 'times']
    >>> words("Café naïve, Привет мир! don’t")
    ['café', 'naïve', 'привет', 'мир', 'don’t']
    """
    return _WORD.findall(text.lower())


def ttr(items: Sequence[Hashable], window: int | None = None) -> float:
    """Type-token ratio: distinct items / items, over the last `window` items (all if None).

    The paper's TTR is over the last 96 tokens of each continuation, so that the context and the first
    tokens do not dominate. An empty sequence has TTR 0.

    >>> ttr([5, 6, 5, 7])
    0.75
    >>> ttr([5, 6, 5, 7], window=2)
    1.0
    """
    if window is not None:
        items = items[-window:] if window > 0 else []
    return len(set(items)) / len(items) if len(items) else 0.0


def ngrams(items: Sequence[Hashable], n: int) -> list[tuple]:
    """All contiguous n-grams. `ngrams([1, 2, 3], 2) -> [(1, 2), (2, 3)]`."""
    return [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]


def distinct_n(sequences: Sequence[Sequence[Hashable]], n: int) -> float:
    """Corpus-level distinct-n (Li et al., 2016): distinct n-grams over all sequences / total n-grams.

    >>> distinct_n([[1, 2, 1, 2], [1, 2, 3]], 2)   # n-grams: 12 21 12 | 12 23 -> 3 distinct of 5
    0.6
    """
    counts = Counter(g for seq in sequences for g in ngrams(seq, n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def rep_n(items: Sequence[Hashable], n: int) -> float:
    """Welleck et al. (2019) rep-n of one sequence: 1 − distinct n-grams / n-grams (0 = no repeat).

    >>> rep_n([1, 2, 1, 2, 1], 2)   # 12 21 12 21 -> 2 distinct of 4
    0.5
    """
    grams = ngrams(items, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def nonword_rate(word_list: Sequence[str], vocabulary: frozenset[str] | set[str]) -> float:
    """Share of words absent from a reference vocabulary.

    At tiny scale hyperfitting trades loops for broken words ("the bunnyow"): TTR rises, but partly
    through non-words, which this makes visible.

    >>> nonword_rate(["the", "dog", "dogg"], {"the", "dog"})
    0.3333333333333333
    """
    return sum(w not in vocabulary for w in word_list) / len(word_list) if word_list else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _per_item(values: list[float]) -> tuple[float, list[float]]:
    return _mean(values), values


@register("ttr", "Type-token ratio of token ids over the last `window` tokens (paper: 96), mean over continuations.")
def _ttr_window(g: GenerationSet):
    return _per_item([ttr(list(t), g.window) for t in g.token_ids])


@register("ttr_whole", "Type-token ratio of token ids over the whole continuation.")
def _ttr_whole(g: GenerationSet):
    return _per_item([ttr(list(t)) for t in g.token_ids])


@register("ttr_words", "Type-token ratio of words over the last `window` words of each continuation.")
def _ttr_words(g: GenerationSet):
    return _per_item([ttr(words(t), g.window) for t in g.texts])


@register("ttr_words_whole", "Type-token ratio of words over the whole continuation.")
def _ttr_words_whole(g: GenerationSet):
    return _per_item([ttr(words(t)) for t in g.texts])


def _register_distinct(n: int) -> None:
    register(f"distinct_{n}", f"Corpus-level distinct-{n} of token ids (distinct {n}-grams / all {n}-grams).")(
        lambda g: distinct_n([list(t) for t in g.token_ids], n)
    )


def _register_rep(n: int) -> None:
    register(f"rep_{n}", f"Welleck rep-{n} of token ids: 1 − distinct/total {n}-grams per continuation, mean.")(
        lambda g: _per_item([rep_n(list(t), n) for t in g.token_ids])
    )


for _n in (1, 2, 3, 4):
    _register_distinct(_n)
for _n in (2, 3, 4):
    _register_rep(_n)


@register(
    "nonword_rate",
    "Share of generated words absent from the evaluation corpus's vocabulary (broken words at tiny scale).",
    needs=("vocabulary",),
)
def _nonword(g: GenerationSet):
    vocab = g.vocabulary or frozenset()
    per = [nonword_rate(words(t), vocab) for t in g.texts]
    all_words = [w for t in g.texts for w in words(t)]
    # The headline number weights every word equally; per_item keeps the per-continuation view.
    return nonword_rate(all_words, vocab), per
