"""The citation blocker: exact against a brute-force reference, collision-safe, and airtight inside generate.

"Never violated", as tested here: for every generated position p of context + continuation, the n tokens
ending at p are not an n-gram of any training sample. N-grams wholly inside the context are the prompt's
and are not checked; n-grams that start in the context and end in the continuation are. A step whose row
had every token banned (counted by `unblockable_rows`) waives the guarantee: such examples are discarded.
With delay_until_word_end, the guarantee is restricted to positions whose token starts a word.
"""

import doctest
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

import hyperfit.decoding.blocker as blocker_module
from hyperfit.decoding.blocker import NgramBlocker, banned_mask, build_index, starts_word_from_pieces

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"


def training_ngrams(samples, n):
    return {tuple(s[i : i + n]) for s in samples for i in range(len(s) - n + 1)}


def brute_banned(samples, n, rows, vocab):
    grams = training_ngrams(samples, n)
    out = torch.zeros(len(rows), vocab, dtype=torch.bool)
    for b, row in enumerate(rows):
        if len(row) >= n - 1:
            tail = tuple(row[len(row) - (n - 1) :])
            for g in grams:
                if g[:-1] == tail:
                    out[b, g[-1]] = True
    return out


@st.composite
def corpus_and_rows(draw, max_vocab=40):
    vocab = draw(st.integers(8, max_vocab))
    # Small alphabets in the samples make (n−1)-grams recur, so followers lists are longer than one.
    alphabet = draw(st.integers(2, vocab))
    token = st.integers(0, alphabet - 1)
    samples = draw(st.lists(st.lists(token, max_size=30), min_size=1, max_size=5))
    n = draw(st.integers(2, 6))
    length = draw(st.integers(0, 8))
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        src = draw(st.sampled_from(samples))
        if len(src) >= length and draw(st.booleans()):  # often a slice of training text: lookups that hit
            start = draw(st.integers(0, len(src) - length))
            rows.append(src[start : start + length])
        else:
            rows.append(draw(st.lists(token, min_size=length, max_size=length)))
    return vocab, samples, n, rows


@settings(max_examples=150, deadline=None)
@given(corpus_and_rows())
def test_banned_mask_equals_brute_force(case):
    vocab, samples, n, rows = case
    index = build_index(samples, n)
    got = banned_mask(index, torch.tensor(rows, dtype=torch.long).reshape(len(rows), -1), vocab)
    assert torch.equal(got, brute_banned(samples, n, rows, vocab))


@settings(max_examples=150, deadline=None)
@given(corpus_and_rows(), st.sampled_from([(2, 1), (3, 2), (5, 3), (7, 1)]))
def test_hash_collisions_never_ban_a_wrong_token(case, moduli):
    # With 2-35 hash buckets nearly every distinct (n−1)-gram collides; only the stored grams tell them apart.
    vocab, samples, n, rows = case
    index = build_index(samples, n, moduli=moduli)
    got = banned_mask(index, torch.tensor(rows, dtype=torch.long).reshape(len(rows), -1), vocab)
    assert torch.equal(got, brute_banned(samples, n, rows, vocab))


@settings(max_examples=150, deadline=None)
@given(corpus_and_rows())
def test_word_start_filter_bans_only_word_starting_followers(case):
    # With starts_word, banned_mask keeps the brute-force bans of tokens that start a word, and no others.
    vocab, samples, n, rows = case
    index = build_index(samples, n)
    starts = torch.arange(vocab) % 3 != 1
    got = banned_mask(index, torch.tensor(rows, dtype=torch.long).reshape(len(rows), -1), vocab, starts)
    assert torch.equal(got, brute_banned(samples, n, rows, vocab) & starts)


def test_tiny_modulus_really_collides():
    samples = [list(range(20))]
    index = build_index(samples, 3, moduli=(3, 2))
    assert index.max_collisions > 1  # so the test above exercises the verification path
    rows = torch.tensor([[4, 5], [5, 6]])
    assert banned_mask(index, rows, 20).nonzero().tolist() == [[0, 6], [1, 7]]


def test_index_deduplicates_followers_and_handles_short_samples():
    index = build_index([[1, 2, 3], [1, 2, 3], [1, 2, 4], [7], []], n=3)
    followers = {
        tuple(index.grams[u].tolist()): index.followers[index.offsets[u] : index.offsets[u + 1]].tolist()
        for u in range(index.num_entries)
    }
    assert followers == {(1, 2): [3, 4]}
    empty = build_index([[5], []], n=6)
    assert empty.num_entries == 0
    assert not banned_mask(empty, torch.tensor([[1, 2, 3, 4, 5]]), 8).any()


def test_short_input_bans_nothing_and_vocab_mismatch_is_explained():
    index = build_index([[1, 2, 3, 9]], n=3)
    assert not banned_mask(index, torch.tensor([[2]]), 10).any()  # fewer than n−1 tokens so far
    with pytest.raises(ValueError, match="token id 9 but the scores have only 5 columns"):
        banned_mask(index, torch.tensor([[1, 2]]), 5)
    with pytest.raises(ValueError, match="at least 2"):
        build_index([[1, 2]], n=1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\*\*31\), got -100..3"):
        build_index([[1, 2, 3, -100]], n=2)


def test_unblockable_row_is_left_unmasked_and_counted():
    # Vocabulary of 3 and the 1-gram (0,) is followed by 0, 1 and 2: after a 0 every token is banned.
    blocker = NgramBlocker(build_index([[0, 1, 0, 2, 0, 0]], n=2))
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    out = blocker(torch.tensor([[2, 0], [0, 1]]), scores)
    assert out[0].tolist() == [1.0, 2.0, 3.0]  # left alone, no NaN
    assert out[1].tolist() == [float("-inf"), 2.0, 3.0]  # after a 1 only 0 is banned
    assert blocker.unblockable_rows == 1


def test_rows_already_masked_by_another_processor_count_as_unblockable():
    blocker = NgramBlocker(build_index([[0, 1]], n=2))
    scores = torch.tensor([[float("-inf"), 0.0]])  # token 0 already excluded; the blocker bans token 1
    assert blocker(torch.tensor([[0]]), scores).tolist() == [[float("-inf"), 0.0]]
    assert blocker.unblockable_rows == 1


def test_delay_until_word_end_lets_the_word_finish_but_not_the_next_word():
    # Training text "… 13 14 15 16": 15 continues the word that 14 starts; 16 starts the next word.
    starts_word = torch.ones(20, dtype=torch.bool)
    starts_word[15] = False
    index = build_index([[10, 11, 12, 13, 14, 15, 16]], n=3)
    strict = NgramBlocker(index)
    delayed = NgramBlocker(index, delay_until_word_end=True, starts_word=starts_word)
    scores = torch.zeros(2, 20)
    ids = torch.tensor([[13, 14], [14, 15]])
    assert strict(ids, scores).isinf().nonzero().tolist() == [[0, 15], [1, 16]]
    assert delayed(ids, scores).isinf().nonzero().tolist() == [[1, 16]]
    with pytest.raises(ValueError, match="needs starts_word"):
        NgramBlocker(index, delay_until_word_end=True)
    with pytest.raises(ValueError, match="covers token ids 0..9 but the training samples hold id 16"):
        NgramBlocker(index, delay_until_word_end=True, starts_word=starts_word[:10])


class CopyTemptation(LogitsProcessor):
    """Adds +50 to every token that would continue a training n-gram: the model *wants* to copy."""

    def __init__(self, samples, n):
        self.samples, self.n = samples, n

    def __call__(self, input_ids, scores):
        tempt = brute_banned(self.samples, self.n, input_ids.tolist(), scores.shape[-1])
        return scores + 50.0 * tempt


def tiny_llama(vocab, seed):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1 + seed % 2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def generate_blocked(model, samples, n, contexts, blocker, new_tokens):
    processors = LogitsProcessorList([CopyTemptation(samples, n), blocker])
    ids = torch.tensor(contexts, dtype=torch.long)
    with torch.no_grad():
        return model.generate(
            ids, attention_mask=torch.ones_like(ids), logits_processor=processors,
            do_sample=False, max_new_tokens=new_tokens,
        ).tolist()  # fmt: skip


def violations(samples, n, sequences, context_len, starts_word=None):
    grams = training_ngrams(samples, n)
    bad = []
    for seq in sequences:
        for end in range(max(context_len, n - 1), len(seq)):
            if tuple(seq[end - n + 1 : end + 1]) in grams and (starts_word is None or starts_word[seq[end]]):
                bad.append((seq, end))
    return bad


@st.composite
def generation_case(draw):
    vocab, samples, n, _ = draw(corpus_and_rows())
    assume(any(len(s) >= n for s in samples))
    context_len = draw(st.integers(max(1, n - 1), 8))
    contexts = []
    for _ in range(draw(st.integers(1, 3))):
        src = draw(st.sampled_from(samples))
        if len(src) >= context_len and draw(st.booleans()):
            start = draw(st.integers(0, len(src) - context_len))
            contexts.append(src[start : start + context_len])
        else:
            contexts.append(draw(st.lists(st.integers(0, vocab - 1), min_size=context_len, max_size=context_len)))
    return vocab, samples, n, contexts, draw(st.integers(0, 2**16))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(generation_case())
def test_greedy_generate_never_completes_a_training_ngram(case):
    vocab, samples, n, contexts, seed = case
    blocker = NgramBlocker(build_index(samples, n))
    out = generate_blocked(tiny_llama(vocab, seed), samples, n, contexts, blocker, new_tokens=12)
    assume(blocker.unblockable_rows == 0)
    assert violations(samples, n, out, len(contexts[0])) == []


def generate_unblocked(vocab, samples, n, contexts, seed):
    class Nothing(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores

    return generate_blocked(tiny_llama(vocab, seed), samples, n, contexts, Nothing(), new_tokens=12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(generation_case(), st.data())
def test_delayed_blocker_only_lets_word_internal_tokens_complete_training_ngrams(case, data):
    vocab, samples, n, contexts, seed = case
    starts_word = data.draw(st.lists(st.booleans(), min_size=vocab, max_size=vocab))
    blocker = NgramBlocker(
        build_index(samples, n), delay_until_word_end=True, starts_word=torch.tensor(starts_word)
    )
    out = generate_blocked(tiny_llama(vocab, seed), samples, n, contexts, blocker, new_tokens=12)
    assume(blocker.unblockable_rows == 0)
    assert violations(samples, n, out, len(contexts[0]), starts_word) == []


def test_copy_temptation_makes_unblocked_generation_copy():
    # The property tests lean on CopyTemptation; check once that without the blocker it really copies.
    samples = [[3, 4, 5, 6, 7, 3, 4, 5, 6, 7]]
    out = generate_unblocked(10, samples, 3, [[3, 4]], seed=0)
    assert violations(samples, 3, out, 2)
    blocked = generate_blocked(tiny_llama(10, 0), samples, 3, [[3, 4]], NgramBlocker(build_index(samples, 3)), 12)
    assert violations(samples, 3, blocked, 2) == []


def test_word_starts_from_a_real_sentencepiece_vocabulary():
    spm = pytest.importorskip("sentencepiece")
    model = ASSETS / "stories260K" / "tok512.model"
    if not model.exists():
        pytest.skip(f"{model} not found (../shared/assets beside the checkout)")
    sp = spm.SentencePieceProcessor(model_file=str(model))
    table = starts_word_from_pieces([sp.id_to_piece(i) for i in range(sp.get_piece_size())], [0, 1, 2])
    text = "Once upon a time, there was a little girl named Lily"
    ids = sp.encode(text)
    assert int(table[ids].sum()) == len(text.split()) + 1  # each word's first piece, and the comma
    assert table[sp.piece_to_id("<0x0A>")]  # newline


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 50, (40, 64), generator=gen).tolist()
    rows = torch.tensor([s[10:15] for s in samples[:8]] + torch.randint(0, 50, (8, 5), generator=gen).tolist())
    blocker = NgramBlocker(build_index(samples, 6))
    scores = torch.randn(16, 64, generator=gen)
    rows_gpu, scores_gpu = rows.cuda(), scores.cuda()  # host→device copies of pageable memory sync
    blocker(rows_gpu, scores_gpu)  # the first call moves the index to the GPU (a copy: a sync)
    torch.cuda.set_sync_debug_mode("error")  # from here any device→host wait raises
    try:
        on_gpu = blocker(rows_gpu, scores_gpu)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), blocker(rows, scores))
    assert on_gpu.isinf().sum() >= 8


def test_doctests():
    assert doctest.testmod(blocker_module).failed == 0
