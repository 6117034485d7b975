"""Repetition metrics: golden values, brute-force references, and the SimCTG script's conventions."""

import doctest
import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperfit.metrics.repetition as repetition_module
from hyperfit.metrics import GenerationSet, compute
from hyperfit.metrics.lexical import rep_n
from hyperfit.metrics.repetition import (
    compression_ratio,
    diversity,
    pooled_rep_n,
    seq_rep_n,
    sliding_ttr,
    ttr_by_position,
)

token_lists = st.lists(st.lists(st.integers(0, 6), max_size=40), max_size=6)


def simctg_reference(texts):
    """The SimCTG evaluation script's arithmetic, restated: words by whitespace, each text's n-gram loop
    stopping one short, uniques per text summed, rep-n in percent rounded to 2 decimals."""
    product = 1.0
    for n in (2, 3, 4):
        unique = total = 0
        for text in texts:
            words = text.strip().split()
            grams = [" ".join(words[i : i + n]) for i in range(0, len(words) - n)]
            unique, total = unique + len(set(grams)), total + len(grams)
        product *= 1 - round((1 - unique / total) * 100, 2) / 100
    return product


def test_seq_rep_n_is_welleck_and_lexical_rep_n():
    assert seq_rep_n is rep_n
    assert seq_rep_n([1, 2, 3, 1, 2, 3, 1, 2, 3], 4) == pytest.approx(1 - 3 / 6)  # 1231 2312 3123 ×2


def test_pooled_rep_n_weighs_by_ngram_count_not_by_continuation():
    seqs = [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 2, 3]]  # rep-2: 9/10 and 0/2
    assert pooled_rep_n(seqs, 2) == pytest.approx(1 - 3 / 12)
    assert np.mean([rep_n(s, 2) for s in seqs]) == pytest.approx(0.45)  # Welleck's mean differs


@settings(max_examples=100, deadline=None)
@given(token_lists, st.integers(1, 5))
def test_pooled_rep_n_equals_brute_force(seqs, n):
    grams = [[tuple(s[i : i + n]) for i in range(len(s) - n + 1)] for s in seqs]
    total = sum(len(g) for g in grams)
    expected = 1 - sum(len(set(g)) for g in grams) / total if total else 0.0
    assert pooled_rep_n(seqs, n) == pytest.approx(expected)


def test_diversity_compat_matches_the_simctg_script():
    texts = [
        "Once upon a time there was a girl . She liked the park . She liked the park . She liked the park .",
        "The dog ran and ran and ran and ran to the big red ball in the garden",
        "  a b c d e f g  ",
    ]
    assert diversity([t.split() for t in texts], simctg_compat=True) == pytest.approx(simctg_reference(texts))
    # The exact definition counts every n-gram, so it differs from the script's number.
    assert diversity([t.split() for t in texts]) != pytest.approx(simctg_reference(texts), abs=1e-4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.sampled_from("a b c d".split()), min_size=5, max_size=30).map(" ".join),
                min_size=1, max_size=5))
def test_diversity_compat_matches_the_simctg_script_on_random_texts(texts):
    assert diversity([t.split() for t in texts], simctg_compat=True) == pytest.approx(simctg_reference(texts))


def test_compression_ratio():
    looping = "She liked the park. " * 30
    varied = "Once upon a time, a fox found a key under an old bridge and wondered which door it opened."
    assert compression_ratio(looping) > 5 > 1 > compression_ratio(varied)
    assert compression_ratio("") == 0.0
    raw = looping.encode()
    assert compression_ratio(looping) == len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40), st.integers(1, 12))
def test_sliding_ttr_equals_brute_force(items, window):
    expected = [len(set(items[s : s + window])) / window for s in range(len(items) - window + 1)]
    assert sliding_ttr(items, window).tolist() == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(token_lists, st.integers(1, 10))
def test_ttr_by_position_averages_the_continuations_that_reach_each_position(seqs, window):
    width = max((len(s) - window + 1 for s in seqs), default=0)
    expected = []
    for i in range(width):
        values = [len(set(s[i : i + window])) / window for s in seqs if len(s) >= i + window]
        expected.append(sum(values) / len(values))
    assert ttr_by_position(seqs, window).tolist() == pytest.approx(expected)


def test_ttr_by_position_sees_a_loop_set_in():
    fresh = list(range(100))
    looping = fresh[:50] + [7, 8, 9, 10] * 25  # diverse first, then a 4-token loop
    curve = ttr_by_position([looping], window=20)
    assert curve[0] == 1.0 and curve[-1] == pytest.approx(4 / 20)
    assert np.all(np.diff(curve) <= 0)  # only ever falls as the loop fills the window


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window must be at least 1"):
        sliding_ttr([1, 2], window=0)


def test_registered_metrics():
    gens = GenerationSet(token_ids=[[1, 2, 3, 4, 5], [1, 2, 1, 2, 1, 2]], texts=["a b c d e", "x y x y x y"])
    out = compute(["diversity", "diversity_simctg", "compression_ratio", "compression_ratio_corpus"], gens)
    assert out["diversity"]["value"] == pytest.approx(diversity([[1, 2, 3, 4, 5], [1, 2, 1, 2, 1, 2]]))
    assert out["diversity_simctg"]["value"] == pytest.approx(simctg_reference(list(gens.texts)))
    assert out["compression_ratio"]["per_item"] == pytest.approx([compression_ratio(t) for t in gens.texts])
    assert out["compression_ratio_corpus"]["value"] == pytest.approx(compression_ratio("a b c d e\nx y x y x y"))


def test_doctests():
    assert doctest.testmod(repetition_module).failed == 0
