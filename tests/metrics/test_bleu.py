"""Self-BLEU and Dataset BLEU equal sacrebleu's sentence BLEU, averaged, to 1e-6."""

import doctest
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sacrebleu = pytest.importorskip("sacrebleu")
from sacrebleu.metrics import BLEU  # noqa: E402
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a  # noqa: E402

import hyperfit.metrics.bleu as bleu_module  # noqa: E402
from hyperfit.metrics import GenerationSet, compute  # noqa: E402
from hyperfit.metrics.bleu import dataset_bleu, self_bleu, tokenize_13a  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / ".." / "shared" / "assets"
TINYSTORIES = ASSETS / "text" / "tinystories" / "tinystories_val.txt"
WORDS = "the a cat dog sat ran on mat , . ! ? 3.5 1-2 it's \" ( ) & &amp; Lily said: -".split()


def sacre_sentence(hyp, refs, max_order):
    if max_order == 4:  # the documented call
        return sacrebleu.sentence_bleu(hyp, refs).score
    return BLEU(max_ngram_order=max_order, effective_order=True).sentence_score(hyp, refs).score


def sacre_self_bleu(texts, max_order=4):
    return [sacre_sentence(t, texts[:i] + texts[i + 1 :], max_order) for i, t in enumerate(texts)]


# Two vocabularies: a small one (many shared n-grams, clipping matters) and a large one (mostly distinct
# words, fewer distinct n-grams than words: the case where n-gram ids must not collide).
words_st = st.sampled_from([WORDS, WORDS + [f"w{i}" for i in range(60)]]).flatmap(
    lambda vocab: st.lists(st.lists(st.sampled_from(vocab), max_size=14).map(" ".join), min_size=2, max_size=7)
)
texts_st = words_st


@settings(max_examples=120, deadline=None)
@given(texts_st, st.integers(1, 5))
def test_self_bleu_equals_sacrebleu(texts, max_order):
    mean, per = self_bleu(texts, max_order)
    expected = sacre_self_bleu(texts, max_order)
    assert per == pytest.approx(expected, abs=1e-6)
    assert mean == pytest.approx(sum(expected) / len(expected), abs=1e-6)


@settings(max_examples=120, deadline=None)
@given(texts_st, texts_st, st.integers(1, 5))
def test_dataset_bleu_equals_sacrebleu(texts, references, max_order):
    _, per = dataset_bleu(texts, references, max_order)
    assert per == pytest.approx([sacre_sentence(t, references, max_order) for t in texts], abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab1 2.,-&;\n\t'\"<>!?()[]{}~`^_|\\/:@#é") + ["&quot;", "<skipped>"]))
       .map("".join))
def test_tokenizer_equals_sacrebleu_13a(text):
    assert tokenize_13a(text) == Tokenizer13a()(text.rstrip()).split()


def real_texts(count, words_each, offset=0):
    if TINYSTORIES.exists():
        words = TINYSTORIES.read_text(encoding="utf-8").split()[offset : offset + count * words_each]
    else:  # CI without ../shared still gets real-looking English
        words = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                 "One day, she saw a big, red ball!").split() * (count * words_each // 20 + 1)  # fmt: skip
    return [" ".join(words[i * words_each : (i + 1) * words_each]) for i in range(count)]


def test_real_text_against_sacrebleu():
    texts = real_texts(30, 60)
    train = real_texts(40, 80, offset=1800)
    assert self_bleu(texts)[1] == pytest.approx(sacre_self_bleu(texts), abs=1e-6)
    assert dataset_bleu(texts, train)[1] == pytest.approx([sacre_sentence(t, train, 4) for t in texts], abs=1e-6)


def test_edge_cases():
    assert self_bleu([]) == (0.0, [])
    assert self_bleu(["only one text"]) == (0.0, [0.0])  # nothing else to repeat
    assert self_bleu(["", ""]) == (0.0, [0.0, 0.0])
    texts = ["", "the cat", "   ", "the cat"]
    assert self_bleu(texts)[1] == pytest.approx(sacre_self_bleu(texts), abs=1e-6)
    assert dataset_bleu([], ["ref"]) == (0.0, [])
    assert dataset_bleu(["hyp"], []) == (0.0, [0.0])
    assert dataset_bleu(["the cat", ""], ["", "the cat sat"])[1] == pytest.approx(
        [sacre_sentence("the cat", ["", "the cat sat"], 4), 0.0], abs=1e-6
    )


def test_many_random_corpora_against_sacrebleu():
    # Seeded sweep over many small corpora of mostly distinct words: cheap, and it reaches the rare
    # layouts (more words than distinct bigrams) that hypothesis's small examples seldom produce.
    rng = random.Random(0)
    for _ in range(300):
        texts = [" ".join(f"w{rng.randrange(20)}" for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(2, 8))]
        assert self_bleu(texts)[1] == pytest.approx(sacre_self_bleu(texts), abs=1e-6), texts
        refs = texts[: len(texts) // 2] or ["w1"]
        assert dataset_bleu(texts, refs)[1] == pytest.approx([sacre_sentence(t, refs, 4) for t in texts], abs=1e-6)


def test_more_words_than_distinct_bigrams():
    # Regression: with bigram ids multiplied by the number of bigrams, trigrams of these texts collided.
    texts = ["w14 w43 w45 w45 w34", "w14 w47 w53 w57", "w4 w33 w19", "w14 w23 w40 w30 w18", "w8 w51", ""]
    assert self_bleu(texts)[1] == pytest.approx(sacre_self_bleu(texts), abs=1e-6)


def test_brevity_penalty_ties_go_to_the_shorter_reference():
    # Hypothesis of 4 tokens; other texts of 3 and 5 tokens: sacrebleu picks 3 (no penalty) over 5.
    texts = ["a b c d", "a b c", "a b c d e"]
    assert self_bleu(texts)[1] == pytest.approx(sacre_self_bleu(texts), abs=1e-6)


def test_registered_metrics():
    gens = GenerationSet(token_ids=[[1], [2]], texts=["the cat sat", "the cat ran"], train_texts=["the cat sat down"])
    out = compute(["self_bleu", "dataset_bleu"], gens)
    assert out["self_bleu"]["value"] == pytest.approx(sum(sacre_self_bleu(list(gens.texts))) / 2, abs=1e-6)
    assert len(out["dataset_bleu"]["per_item"]) == 2
    no_train = compute(["dataset_bleu"], GenerationSet(token_ids=[[1]], texts=["x"]))
    assert no_train["dataset_bleu"] == {"skipped": "needs train_texts"}


def test_doctests():
    assert doctest.testmod(bleu_module).failed == 0
