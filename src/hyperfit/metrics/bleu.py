"""Self-BLEU (diversity across continuations) and Dataset BLEU (closeness to the training samples).

Definition, exactly: a continuation's score is sacrebleu's sentence BLEU with its defaults,

    sacrebleu.sentence_bleu(hyp, refs).score        # tokenize='13a', smooth_method='exp',
                                                    # use_effective_order=True, case-sensitive, 0-100

(or `BLEU(max_ngram_order=k, effective_order=True).sentence_score` for k != 4), and the metric is the mean
over continuations. Self-BLEU takes all *other* continuations as `refs` (Zhu et al., 2018, Texygen); Dataset
BLEU takes the training samples. The tests check equality with sacrebleu to 1e-6. Texygen itself used NLTK
with smoothing method 1 on a 0-1 scale, so numbers are comparable within this project, not with Texygen's.

Why not call sacrebleu: Self-BLEU over 1,000 continuations re-counts 999 references for each hypothesis,
O(texts²) — minutes. Here every text is tokenised and its n-grams counted once; the clip count "max over
the other references" is the corpus-wide top count of that n-gram unless the hypothesis itself holds it,
then the second count, so the whole metric is a few sorts over all n-grams. sacrebleu is needed only by
the tests and `benchmarks/bleu.py`; this module reimplements its 13a tokenizer (four regexes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from hyperfit.metrics.registry import GenerationSet, register

# sacrebleu's tokenizer_13a + tokenizer_re (mteval-v13a.pl), rule for rule. Its first rule pads every
# symbol in [{-~ [-` space-& (-+ :-@ /] with spaces: a character map does that at C speed. The other rules
# depend on neighbours and stay regexes; a function replacement beats Python 3.11's template expansion.
_SYMBOLS = [chr(c) for lo, hi in ((0x7B, 0x7E), (0x5B, 0x60), (0x20, 0x26), (0x28, 0x2B), (0x3A, 0x40), (0x2F, 0x2F))
            for c in range(lo, hi + 1)]  # fmt: skip
_PAD_SYMBOLS = str.maketrans({c: f" {c} " for c in _SYMBOLS})
_13A_RULES = [
    (re.compile(r"([^0-9])([\.,])"), lambda m: f"{m[1]} {m[2]} "),  # period / comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), lambda m: f" {m[1]} {m[2]}"),  # period / comma unless before a digit
    (re.compile(r"([0-9])(-)"), lambda m: f"{m[1]} {m[2]} "),  # dash after a digit
]


def tokenize_13a(text: str) -> list[str]:
    """sacrebleu's default ('13a') tokenisation, including its right-strip of the segment.

    >>> tokenize_13a("Hello, world! It's 3.5-4 km.")
    ['Hello', ',', 'world', '!', "It's", '3.5', '-', '4', 'km', '.']
    """
    line = text.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} ".translate(_PAD_SYMBOLS)
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _encode(texts: Sequence[str]) -> list[np.ndarray]:
    """Tokenise and map tokens to dense ints shared by all texts: n-grams then become integer arithmetic."""
    vocab: dict[str, int] = {}
    out = []
    for text in texts:
        tokens = tokenize_13a(text)
        out.append(np.fromiter((vocab.setdefault(t, len(vocab)) for t in tokens), np.int64, len(tokens)))
    return out


def ngram_counts(docs: Sequence[np.ndarray], max_order: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per order n = 1..max_order: (doc, gram, count, num_grams), gram ids shared across docs.

    The id of the n-gram at position i is the id of the pair (id of the (n−1)-gram at i, token i+n−1), so
    each order costs one `np.unique` over integers, never a tuple of strings.

    >>> [(d.tolist(), g.tolist(), c.tolist()) for d, g, c, _ in ngram_counts([np.array([0, 1, 0, 1])], 2)]
    [([0, 0], [0, 1], [2, 2]), ([0, 0], [0, 1], [2, 1])]
    """
    lens = np.array([len(d) for d in docs], dtype=np.int64)
    flat = np.concatenate(docs) if len(docs) else np.zeros(0, np.int64)
    doc_of = np.repeat(np.arange(len(docs)), lens)
    room = np.repeat(np.cumsum(lens), lens) - np.arange(len(flat))  # tokens from i to its doc's end
    vocab = int(flat.max(initial=0)) + 1
    gram, num = flat, vocab
    out = []
    for n in range(1, max_order + 1):
        valid = np.flatnonzero(room >= n)
        if n > 1:
            # Pair key = prefix id · vocab + next token: unique because the token is below vocab (a smaller
            # multiplier, such as the number of prefixes, would let two pairs collide).
            uniq, inverse = np.unique(gram[valid] * vocab + flat[valid + n - 1], return_inverse=True)
            gram = np.full(len(flat), -1, dtype=np.int64)
            gram[valid] = inverse.reshape(-1)
            num = len(uniq)
        per_doc, counts = np.unique(doc_of[valid] * max(num, 1) + gram[valid], return_counts=True)
        out.append((per_doc // max(num, 1), per_doc % max(num, 1), counts, num))
    return out


def _max_other_count(doc, gram, count, is_ref, num_grams):
    """For each (doc, gram) row: the gram's highest count among reference docs other than `doc`.

    Top-2 trick: the answer is the top count, unless `doc` itself holds it, then the second count
    (equal to the top when two docs tie), so it is O(rows log rows), not O(docs²).
    """
    r = is_ref[doc]
    rd, rg, rc = doc[r], gram[r], count[r]
    order = np.lexsort((-rc, rg))
    rd, rg, rc = rd[order], rg[order], rc[order]
    first = np.ones(len(rg), dtype=bool)
    first[1:] = rg[1:] != rg[:-1]
    second = np.zeros(len(rg), dtype=bool)
    second[1:] = first[:-1] & ~first[1:]
    top1, top2 = np.zeros(num_grams, np.int64), np.zeros(num_grams, np.int64)
    top1_doc = np.full(num_grams, -1, np.int64)
    top1[rg[first]], top1_doc[rg[first]] = rc[first], rd[first]
    top2[rg[second]] = rc[second]
    return np.where(doc == top1_doc[gram], top2[gram], top1[gram])


def _closest_ref_len(hyp_lens: np.ndarray, ref_lens: np.ndarray, exclude_self: bool) -> np.ndarray:
    """sacrebleu's reference length for the brevity penalty: the closest one, ties going to the shorter.

    With `exclude_self` (Self-BLEU) one copy of the hypothesis's own length is not a reference.

    >>> _closest_ref_len(np.array([3, 5, 9]), np.array([3, 5, 9]), exclude_self=True).tolist()
    [5, 3, 5]
    """
    refs = np.sort(ref_lens)
    lo = np.searchsorted(refs, hyp_lens, "left")
    hi = np.searchsorted(refs, hyp_lens, "right")
    same = hi - lo - int(exclude_self)
    below = refs[np.maximum(lo - 1, 0)]
    above = refs[np.minimum(hi, len(refs) - 1)]
    take_below = (lo > 0) & ((hi == len(refs)) | (hyp_lens - below <= above - hyp_lens))
    return np.where(same > 0, hyp_lens, np.where(take_below, below, above))


def _sentence_bleu(correct: np.ndarray, hyp_lens: np.ndarray, ref_lens: np.ndarray) -> np.ndarray:
    """sacrebleu's `compute_bleu` (exp smoothing, effective order) for many sentences at once."""
    max_order = correct.shape[1]
    total = np.maximum(hyp_lens[:, None] - np.arange(max_order), 0)
    # 'exp' smoothing: the k-th order with no match gets precision 100 / (2**k * total).
    halvings = np.cumsum((correct == 0) & (total > 0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(correct > 0, 100.0 * correct / total, 100.0 / (2.0**halvings * total))
        log_p = np.where(total > 0, np.log(precision), 0.0)
        effective_order = np.minimum(hyp_lens, max_order)  # orders with at least one hypothesis n-gram
        score = np.exp(log_p.sum(axis=1) / effective_order)
        bp = np.where(hyp_lens < ref_lens, np.exp(1 - ref_lens / hyp_lens), 1.0)
    bp = np.where(hyp_lens == 0, 0.0, bp)
    return np.where(correct.sum(axis=1) > 0, bp * score, 0.0)


def _bleu_against(docs, hyp_idx, is_ref, exclude_self, max_order) -> list[float]:
    lens = np.array([len(d) for d in docs], dtype=np.int64)
    correct = np.zeros((len(docs), max_order))
    for n, (doc, gram, count, num) in enumerate(ngram_counts(docs, max_order)):
        clipped = np.minimum(count, _max_other_count(doc, gram, count, is_ref, num))
        correct[:, n] = np.bincount(doc, weights=clipped, minlength=len(docs))
    hyp_lens = lens[hyp_idx]
    ref_lens = _closest_ref_len(hyp_lens, lens[is_ref], exclude_self)
    return _sentence_bleu(correct[hyp_idx], hyp_lens, ref_lens).tolist()


def self_bleu(texts: Sequence[str], max_order: int = 4) -> tuple[float, list[float]]:
    """Mean sentence BLEU (0-100) of each text against all the others; per-text scores beside it.

    A single text has no other text to repeat: its score is 0. Lower is more diverse.

    >>> [round(s, 6) for s in self_bleu(["the cat sat on the mat", "the cat sat on the mat", "a dog ran"])[1]]
    [100.0, 100.0, 0.0]
    """
    if len(texts) < 2:
        return 0.0, [0.0] * len(texts)
    docs = _encode(texts)
    everyone = np.ones(len(docs), dtype=bool)
    per = _bleu_against(docs, np.arange(len(docs)), everyone, exclude_self=True, max_order=max_order)
    return float(np.mean(per)), per


def dataset_bleu(texts: Sequence[str], references: Sequence[str], max_order: int = 4) -> tuple[float, list[float]]:
    """Mean sentence BLEU (0-100) of each text against all `references` (the training samples).

    >>> round(dataset_bleu(["the cat sat on the mat"], ["the cat sat on a mat", "dogs"])[0], 2)
    53.73
    """
    if not texts or not references:
        return 0.0, [0.0] * len(texts)
    docs = _encode(list(texts) + list(references))
    is_ref = np.arange(len(docs)) >= len(texts)
    per = _bleu_against(docs, np.arange(len(texts)), is_ref, exclude_self=False, max_order=max_order)
    return float(np.mean(per)), per


@register(
    "self_bleu",
    "Self-BLEU-4 (0-100, sacrebleu sentence BLEU vs all other continuations), mean. Lower = more diverse.",
)
def _self_bleu(g: GenerationSet):
    return self_bleu(g.texts)


@register(
    "dataset_bleu",
    "Dataset BLEU-4 (0-100, sacrebleu sentence BLEU vs all training samples), mean. Higher = closer to training text.",
    needs=("train_texts",),
)
def _dataset_bleu(g: GenerationSet):
    return dataset_bleu(g.texts, g.train_texts or [])
