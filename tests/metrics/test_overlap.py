"""Overlap with the training data: golden examples and a brute-force reference on random inputs."""

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperfit.metrics.overlap as overlap_module
from hyperfit.metrics import GenerationSet, compute
from hyperfit.metrics.overlap import fraction_above, longest_overlap, matching_statistics, train_ngram_share


def brute_matching_statistics(gens, train):
    def run(g, i, s, j):
        length = 0
        while i + length < len(g) and j + length < len(s) and g[i + length] == s[j + length]:
            length += 1
        return length

    return [[max((run(g, i, s, j) for s in train for j in range(len(s))), default=0) for i in range(len(g))]
            for g in gens]


def brute_share(gens, train, n):
    grams = {tuple(s[i : i + n]) for s in train for i in range(len(s) - n + 1)}
    found = [sum(tuple(g[i : i + n]) in grams for i in range(len(g) - n + 1)) for g in gens]
    totals = [max(len(g) - n + 1, 0) for g in gens]
    return found, totals


sequences = st.lists(st.lists(st.integers(0, 4), max_size=14), max_size=5)


@settings(max_examples=200, deadline=None)
@given(sequences, sequences)
def test_matching_statistics_equal_brute_force(gens, train):
    assert [m.tolist() for m in matching_statistics(gens, train)] == brute_matching_statistics(gens, train)


@settings(max_examples=100, deadline=None)
@given(sequences, sequences, st.integers(1, 5))
def test_ngram_share_equals_brute_force(gens, train, n):
    found, totals = brute_share(gens, train, n)
    pooled, per = train_ngram_share(matching_statistics(gens, train), n)
    assert pooled == pytest.approx(sum(found) / sum(totals) if sum(totals) else 0.0)
    assert per == pytest.approx([f / t if t else 0.0 for f, t in zip(found, totals)])


def test_golden_longest_overlap():
    train = [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23]]
    gens = [
        [1, 11, 12, 13, 2],  # copies 11 12 13 from sample 0
        [13, 14, 15, 20, 21],  # 13 14 15 then 20 21: a span across two samples is two spans, not five
        [9, 9, 9],  # nothing
        [],
        [20, 21, 22, 23, 20, 21, 22, 23],  # a whole sample, twice
    ]
    assert longest_overlap(gens, train) == [3, 3, 0, 0, 4]


def test_long_copy_inside_a_real_sized_corpus():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 32000, (200, 256))
    gens = rng.integers(0, 32000, (20, 256))
    gens[3, 100:140] = train[17, 50:90]  # a planted 40-token copy
    gens[5, :12] = train[0, -12:]  # copy of a sample's end
    lengths = longest_overlap(gens, train)
    assert lengths[3] == 40 and lengths[5] == 12
    assert max(lengths[i] for i in range(20) if i not in (3, 5)) <= 2  # random ids rarely share bigrams


def test_fraction_above_threshold_is_strict_and_configurable():
    assert fraction_above([10, 11, 0, 25]) == 0.5
    assert fraction_above([10, 11, 0, 25], threshold=0) == 0.75
    assert fraction_above([]) == 0.0


def test_no_training_data_or_no_generations():
    assert [m.tolist() for m in matching_statistics([[1, 2]], [])] == [[0, 0]]
    assert matching_statistics([], [[1, 2]]) == []
    assert train_ngram_share([], 4) == (0.0, [])


def test_registered_metrics_and_their_shared_computation():
    train = [[10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]]
    gens = GenerationSet(
        token_ids=[[10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21], [1, 2, 3, 4, 5]], texts=["a", "b"], train_ids=train
    )
    out = compute(["longest_overlap", "overlap_gt10", "train_ngram_share_4", "train_ngram_share_8"], gens)
    assert out["longest_overlap"] == {"value": 6.0, "per_item": [12.0, 0.0]}
    assert out["overlap_gt10"] == {"value": 0.5}
    assert out["train_ngram_share_4"] == {"value": 9 / 11, "per_item": [1.0, 0.0]}
    assert out["train_ngram_share_8"]["per_item"] == [1.0, 0.0]
    # A second set must not be served the first one's cached statistics.
    other = GenerationSet(token_ids=[[13, 14, 15]], texts=["c"], train_ids=train)
    assert compute(["longest_overlap"], other)["longest_overlap"]["value"] == 3.0
    assert compute(["longest_overlap"], GenerationSet(token_ids=[[1]], texts=["d"]))["longest_overlap"] == {
        "skipped": "needs train_ids"
    }


def test_doctests():
    assert doctest.testmod(overlap_module).failed == 0


words = st.lists(st.lists(st.sampled_from(["a", "b", "c", "a,", "B."]), max_size=10).map(" ".join), max_size=4)


@settings(max_examples=100, deadline=None)
@given(words, words)
def test_longest_overlap_in_words_equals_brute_force_on_the_words(texts, train):
    from hyperfit.metrics.overlap import WORD, longest_overlap_words

    as_words = lambda ts: [WORD.findall(t) for t in ts]  # noqa: E731
    expected = [max(m, default=0) for m in brute_matching_statistics(as_words(texts), as_words(train))]
    assert longest_overlap_words(texts, train) == expected


def test_longest_overlap_words_is_registered_with_its_maximum_per_continuation():
    gens = GenerationSet(token_ids=[[1], [2]], texts=["one two three four", "x"], train_texts=["zero one two three."])
    assert compute(["longest_overlap_words"], gens)["longest_overlap_words"] == {"value": 1.5, "per_item": [3.0, 0.0]}
