"""An evaluation set as text: `data.contexts` sources → the same contexts, as text, for every model.

    data:
      contexts:                           # the paper's: 100 contexts each of Wikipedia, fiction and news
        - {source: wikipedia.txt, count: 100, domain: wikipedia}
        - {source: books.jsonl, count: 100, domain: fiction}
      context_words: 24                   # the context: each document's first 24 words; the rest is the human text

Each source's documents (at least `context_words` + MIN_REFERENCE_WORDS words; repeats once) are shuffled with
data.seed and the first `count` drawn. The choice depends on the sources' text alone, never on a tokenizer or
the training source, so models of different tokenizer families, and runs trained on different domains (the
paper's Table 4), continue the same contexts; the training side then leaves out every document that overlaps
an evaluation text (equal, holding one or inside one), and data/manifest.json counts them.
`tokenize_contexts` makes each model's ids (the context, BOS included, and the human continuation).
data/contexts.jsonl keeps the text (`text`, `context`, `reference`), the `domain` and a `sha256` per row;
`set_sha256` names the whole set (data/manifest.json).
"""

from __future__ import annotations

import dataclasses
import re
from bisect import bisect_right
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hyperfit.config import DataConfig
from hyperfit.errors import DataError
from hyperfit.runs import json_sha256

MIN_REFERENCE_WORDS = 64  # a human continuation shorter than this measures little
REFERENCE_MAX_CHARS = 16_000  # a held-out book is cut: about 3,000 tokens, past any continuation compared
REFERENCE_MAX_TOKENS = 1024


def domain_of(entry: dict) -> str:
    return str(entry.get("domain") or Path(str(entry["source"])).stem)


def source_config(cfg: DataConfig, entry: dict) -> DataConfig:
    """The data config that reads one data.contexts entry as data.source would be read."""
    keys = ("text_field", "split", "hf_config", "max_documents")
    return dataclasses.replace(cfg, source=str(entry["source"]), contexts=(),
                               **{k: entry[k] for k in keys if k in entry})


def split_context(text: str, n_words: int) -> tuple[str, str] | None:
    """(context, reference): the first `n_words` words of `text` as written, and the rest (its leading space
    kept, so context + reference == text); None when fewer than n_words + MIN_REFERENCE_WORDS words.

    >>> split_context("a b  c d", 2) is None, split_context(" ".join("abcdefgh") * 20, 2)[0]
    (True, 'a b')
    """
    ends = [m.end() for m in re.finditer(r"\S+", text[: REFERENCE_MAX_CHARS * 2])]
    if len(ends) < n_words + MIN_REFERENCE_WORDS:
        return None
    cut = ends[n_words - 1]
    return text[:cut], text[cut:REFERENCE_MAX_CHARS]


def overlapping(docs: Sequence[str], candidates: Sequence[int], texts: Sequence[str]) -> set[int]:
    """The candidate documents that overlap an evaluation text as wholes: equal, holding one, or inside one.

    One search per evaluation text over all candidates joined (a NUL never occurs in text), then one per
    candidate over the evaluation texts joined: C-speed scans instead of candidates × texts comparisons."""
    candidates = list(candidates)
    joined, starts, at = "\0".join(docs[i] for i in candidates), [], 0
    for i in candidates:
        starts.append(at)
        at += len(docs[i]) + 1
    found = set()
    for text in texts:
        pos = joined.find(text)
        while pos >= 0:
            found.add(candidates[bisect_right(starts, pos) - 1])
            pos = joined.find(text, pos + 1)
    held = "\0".join(texts)
    found |= {i for i in candidates if docs[i] in held}
    return found


def draw_contexts(cfg: DataConfig, read, text_hash) -> tuple[list[dict], list[str]]:
    """(rows, the texts of the documents not drawn) for data.contexts: `count` documents of each source, in a
    seeded order, among those long enough. The draw depends on the sources' text and data.seed alone, so it is
    one evaluation set whatever the training source, the tokenizer or the number of samples; training then
    leaves out whatever overlaps it (`overlapping`).

    `read(DataConfig)` reads a source's documents and `text_hash` names a document (data.py's), so this
    module shares data.source's readers and hashes. The documents not drawn feed the non-word vocabulary."""
    rows, rest = [], []
    for k, entry in enumerate(cfg.contexts):
        domain = domain_of(entry)
        docs = list(dict.fromkeys(read(source_config(cfg, entry))))  # a repeated document counts once
        order = np.random.default_rng((cfg.seed, k)).permutation(len(docs)).tolist()
        drawn = []
        for i in order:
            parts = split_context(docs[i], cfg.context_words) if len(drawn) < entry["count"] else None
            if parts is None:
                rest.append(docs[i])
            else:
                drawn.append((i, parts))
        if len(drawn) < entry["count"]:
            raise DataError(
                f"data.contexts[{k}] ({domain}): {len(drawn)} of {len(docs)} documents of {entry['source']!r} have "
                f"at least data.context_words + {MIN_REFERENCE_WORDS} = {cfg.context_words + MIN_REFERENCE_WORDS} "
                f"words, but count={entry['count']}; lower count or data.context_words, or give a source with more "
                "long documents")
        for i, (context, reference) in drawn:
            text = context + reference
            rows.append({"id": f"ctx-{len(rows):05d}", "domain": domain, "source": str(entry["source"]), "doc_id": i,
                         "text": text, "context": context, "reference": reference,
                         "sha256": text_hash(text, full=True), "text_hash": text_hash(docs[i])})
    return rows, rest


def set_sha256(rows: Sequence[dict]) -> str:
    """One hash for the whole evaluation set: its domains and texts, in order."""
    return json_sha256([[r.get("domain"), r.get("sha256")] for r in rows])


def is_text_set(rows: Sequence[dict]) -> bool:
    """Whether contexts rows carry their text (data.contexts), so any tokenizer can re-tokenize them."""
    return bool(rows) and all("sha256" in r and "text" in r for r in rows)


def tokenize_contexts(rows: Sequence[dict], tokenizer) -> list[dict]:
    """Each row with this tokenizer's context_ids (BOS included where the tokenizer adds one) and reference_ids.

    The whole text is tokenized once and cut after the context's tokens, so the continuation's first token is
    the one that follows the context in running text (tokenized alone, SentencePiece would give it a new
    leading space); where the context's tokens are not a prefix of the whole's, the reference is tokenized
    alone."""
    out = []
    for r in rows:
        ctx = tokenizer(r["context"], add_special_tokens=True, split_special_tokens=True)["input_ids"]
        whole = tokenizer(r["text"], add_special_tokens=True, split_special_tokens=True)["input_ids"]
        if whole[: len(ctx)] == ctx:
            ref = whole[len(ctx):]
        else:
            ref = tokenizer(r["reference"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        out.append({**r, "context_ids": ctx, "reference_ids": ref[:REFERENCE_MAX_TOKENS]})
    return out
