import pytest

from hyperfit.metrics import GenerationSet, compute, get_metric
from hyperfit.metrics.lexical import distinct_n, nonword_rate, rep_n, ttr, words


def test_ttr_golden():
    assert ttr([1, 2, 1, 3]) == 0.75
    assert ttr([1, 2, 1, 3], window=2) == 1.0       # last two: [1, 3]
    assert ttr([7] * 96 + [1, 2], window=96) == 3 / 96  # the window ends at the last token
    assert ttr([]) == 0.0


def test_distinct_and_rep_golden():
    # n-grams: (1,2) (2,1) (1,2) | (1,2) (2,3) -> 3 distinct of 5
    assert distinct_n([[1, 2, 1, 2], [1, 2, 3]], 2) == pytest.approx(0.6)
    assert rep_n([1, 2, 1, 2, 1], 2) == pytest.approx(0.5)
    assert rep_n([1, 2, 3, 4], 2) == 0.0
    assert rep_n([5] * 10, 4) == pytest.approx(1 - 1 / 7)


def test_words_and_nonwords():
    assert words("Tom's dog RAN, ran!  42 times") == ["tom's", "dog", "ran", "ran", "times"]
    assert nonword_rate(["the", "dog", "dogg", "zzz"], {"the", "dog"}) == 0.5


def test_words_of_any_script():
    # An ASCII-only pattern cut accented words apart and found no word in Cyrillic: a Russian run's
    # non-word rate read 0 whatever the model wrote.
    assert words("Café naïve, Zoë's don’t 42") == ["café", "naïve", "zoë's", "don’t"]
    assert words("Привет мир, как дела?") == ["привет", "мир", "как", "дела"]
    assert nonword_rate(words("Прывет мир"), set(words("Привет мир"))) == 0.5


def test_lexical_doctests():
    import doctest

    import hyperfit.metrics.lexical as lexical

    assert doctest.testmod(lexical).failed == 0


def test_registry_compute_and_skips():
    gens = GenerationSet(token_ids=[[1, 2, 3, 1], [4, 4, 4, 4]], texts=["a b a", "c c"], window=4)
    out = compute(["ttr", "distinct_1", "nonword_rate"], gens)
    assert out["ttr"]["value"] == pytest.approx((0.75 + 0.25) / 2)
    assert out["ttr"]["per_item"] == [0.75, 0.25]
    assert out["distinct_1"]["value"] == pytest.approx(4 / 8)
    assert out["nonword_rate"] == {"skipped": "needs vocabulary"}


def test_unknown_metric_did_you_mean():
    with pytest.raises(KeyError, match="Did you mean ttr"):
        get_metric("tttr")
