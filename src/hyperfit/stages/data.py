"""Data stage: source text → documents → fixed-length token samples, seeded and disjoint.

    hyperfit run configs/paper.yaml        # runs this stage first
    python -c "import hyperfit; hyperfit.prepare_data(cfg.data, tokenizer, run)"

Each source text is cleaned first (hyperfit.text: encoding repair, Project Gutenberg boilerplate, WikiText
markup and `<unk>` markers, hard-wrapped lines; docs/data.md), then tokenized as text: a `<s>` or
`<|endoftext|>` written in a document becomes the tokens of those characters, never a control id.
Every qualifying document (at least `seq_len` tokens; repeated documents once) is shuffled with
`data.seed`; the first `num_contexts` become generation contexts (their first `context_len` tokens; the
rest of the document is the human continuation), the next documents give `num_val` validation sequences,
the next `num_train` training samples (up to `samples_per_document` non-overlapping ones each). One document
feeds at most one of these, so held-out text never leaks into training, and the held-out sets do not
depend on num_train. With `data.contexts` the contexts are instead an
evaluation set as text from their own sources (`hyperfit.stages.evalset`): drawn first, by text alone, and
every document overlapping it is left out of training. data/report.md says what was read, cleaned, kept and dropped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from hyperfit import reuse
from hyperfit.config import DataConfig
from hyperfit.errors import DataError  # noqa: F401 - raised here, importable from here
from hyperfit.metrics.lexical import words
from hyperfit.runs import RunDir, json_sha256, write_json, write_jsonl, write_text
from hyperfit.stages.data_report import render_data_report
from hyperfit.stages.evalset import draw_contexts, overlapping, set_sha256, tokenize_contexts
from hyperfit.text import CleanStats, clean, general_words, known_languages

REFERENCE_MAX_TOKENS = 1024  # a held-out book could be 200k tokens; nobody compares continuations that long
# Strings that are special tokens in common tokenizers; the data report counts them in the text (tokenized as
# text, they are harmless, but a source full of them is worth knowing about).
SPECIAL_STRINGS = ("<unk>", "<s>", "</s>", "<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "[CLS]",
                   "[SEP]", "<mask>")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


def read_documents(cfg: DataConfig, stats: CleanStats | None = None) -> list[str]:
    """Documents from a file or a datasets id, cleaned (hyperfit.text.clean; `stats` counts what changed),
    whitespace-trimmed, empty ones dropped. A .txt/.md file is cleaned whole, then split at blank lines."""
    stats = stats if stats is not None else CleanStats()
    paragraphs = _splits_at_blank_lines(cfg)
    docs = []
    for raw in _iter_source(cfg):
        text = clean(raw.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff"), cfg, stats)
        for doc in _BLANK_LINE.split(text) if paragraphs else (text,):
            if doc.strip():
                docs.append(doc.strip())
        if cfg.max_documents is not None and len(docs) >= cfg.max_documents:
            docs = docs[: cfg.max_documents]
            break
    if not docs:
        raise DataError(f"data.source={cfg.source!r} holds no text; give a file with documents "
                        "(a .txt with blank lines between documents, or a .jsonl/.csv/.parquet with a text column)")
    return docs


def _splits_at_blank_lines(cfg: DataConfig) -> bool:
    try:
        return Path(cfg.source).suffix.lower() in (".txt", ".md", "") and Path(cfg.source).is_file()
    except OSError:
        return False


def _iter_source(cfg: DataConfig) -> Iterator[str]:
    path = Path(cfg.source)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as e:  # ENAMETOOLONG: is_dir and is_file raise it instead of answering False
        raise DataError(f"data.source={cfg.source[:60]!r}... cannot be a file ({e.strerror}, {len(cfg.source)} "
                        "characters) nor a datasets id; give the path of a text file or a datasets id") from None
    if is_dir:
        raise DataError(f"data.source={cfg.source!r} is a directory; give one file or a datasets id")
    if is_file:
        try:
            yield from _iter_file(path, cfg)
        except UnicodeDecodeError as e:
            raise DataError(f"data.source={cfg.source!r} is not UTF-8 text ({e.reason} at byte {e.start}); convert it "
                            "to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from e
        return
    if looks_like_path(cfg.source):
        raise DataError(f"data.source={cfg.source!r} does not exist; check the path (relative paths start from "
                        f"{Path.cwd()})")
    yield from _iter_hf_dataset(cfg)


def _iter_file(path: Path, cfg: DataConfig) -> Iterator[str]:
    # utf-8-sig everywhere: editors and Excel ("CSV UTF-8") start files with a byte-order mark, which would
    # break the first JSON line and rename the first CSV column to "\ufefftext".
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md", ""):
        # One text, split into documents at blank lines (spaces, tabs or no-break spaces allowed on them) after
        # cleaning: a book's boilerplate and wraps are recognised in the whole file.
        yield path.read_text(encoding="utf-8-sig")
    elif suffix == ".json" and path.read_text(encoding="utf-8-sig").lstrip().startswith("["):
        for i, row in enumerate(_json_line(path.read_text(encoding="utf-8-sig"), str(path))):  # a list of objects
            yield _field(row, cfg, f"{path} item {i}")
    elif suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8-sig") as f:
            for i, line in enumerate(f):
                if line.strip():
                    yield _field(_json_line(line, f"{path}:{i + 1}"), cfg, f"{path}:{i + 1}")
    elif suffix == ".csv":
        csv.field_size_limit(2**31 - 1)  # a book per row: the default 128 KiB limit stopped the read
        with open(path, newline="", encoding="utf-8-sig") as f:
            for i, row in enumerate(csv.DictReader(f)):
                yield _field(row, cfg, f"{path} row {i + 1}")
    elif suffix == ".parquet":
        import pandas as pd  # optional dependency: pip install 'hyperfit[data]'

        frame = pd.read_parquet(path)
        if cfg.text_field not in frame.columns:
            raise DataError(_missing_field_msg(cfg, list(frame.columns), str(path)))
        yield from (str(t) for t in frame[cfg.text_field].dropna())
    else:
        raise DataError(f"data.source={cfg.source!r}: unknown file type {suffix!r}; use .txt, .jsonl, .json, .csv "
                        "or .parquet")


def looks_like_path(source: str) -> bool:
    # Hub ids are "name" or "org/name"; anything with a file suffix, ./, or more slashes is a path.
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or bool(Path(source).suffix)


def _iter_hf_dataset(cfg: DataConfig) -> Iterator[str]:
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"data.source={cfg.source!r} is not a local file, so it is read as a Hugging Face "
                        "datasets id, which needs `pip install datasets` (or `pip install 'hyperfit[data]'`)") from e
    ds = datasets.load_dataset(cfg.source, cfg.hf_config, split=cfg.split, streaming=cfg.max_documents is not None)
    if cfg.text_field not in (ds.column_names or []):
        raise DataError(_missing_field_msg(cfg, list(ds.column_names or []), cfg.source))
    for row in ds:
        yield row[cfg.text_field]


def _json_line(line: str, where: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where} is not JSON ({e.msg}); a .jsonl file holds one JSON object per line, a .json "
                        "file one list of objects") from e
    except ValueError as e:  # not a JSONDecodeError: an integer of over 4300 digits, past Python's limit
        raise DataError(f"{where} holds a number JSON cannot read ({str(e).split(';')[0]}); write it as a string "
                        "or drop it") from e
    except RecursionError:  # json recurses once per level: about a thousand nested [ or { overflow the stack
        raise DataError(f"{where} nests JSON too deeply to read (about a thousand levels of [ or {{); give one "
                        "flat JSON object per document") from None


def _field(row: dict, cfg: DataConfig, where: str) -> str:
    if not isinstance(row, dict):
        raise DataError(f"{where} is a {type(row).__name__}, not an object with a {cfg.text_field!r} field; give one "
                        "JSON object per document")
    if cfg.text_field not in row:
        raise DataError(_missing_field_msg(cfg, list(row), where))
    text = str(row[cfg.text_field] or "")
    try:  # a lone surrogate escape ("\\ud800") is valid JSON but no text: the tokenizer and the hashes refuse it
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{where}: field {cfg.text_field!r} holds {text[e.start:e.end]!r}, a lone UTF-16 surrogate "
                        f"at character {e.start}, which is not text; fix the escape (pairs such as \\ud83d\\ude00 "
                        "are fine) or drop the document") from None
    return text


def _missing_field_msg(cfg: DataConfig, columns: list, where: str) -> str:
    return (f"data.text_field={cfg.text_field!r} is not a column of {where}; its columns are {columns}. "
            f"Set data.text_field to one of them")


# ---------------------------------------------------------------------------------------------------------


def tokenize_documents(docs: list[str], tokenizer, seq_len: int, samples_per_document: int = 1,
                       chat: bool = False) -> list[list[int]]:
    """Token ids of each document, BOS included when the tokenizer adds one, cut after what any use needs.

    Text is tokenized as text (split_special_tokens): WikiText's `<unk>` became the tokenizer's special id 0
    in 220 of 256 samples, and the hyperfitted model learnt to loop on that invisible id. `chat`: the texts
    are chat-template output, whose turn markers and BOS must stay control tokens: nothing is added, and
    special-token strings are read as such.

    Each text is cut before it is tokenized, to twice the characters `keep` tokens can span (no token is
    longer than the vocabulary's longest piece): a one-line 32 MB book was tokenized whole, ~4 GB of memory
    for the 1,280 tokens kept. The margin keeps the tokens near the cut out of what is kept."""
    keep = max(seq_len + REFERENCE_MAX_TOKENS, seq_len * samples_per_document)
    max_chars = 2 * keep * longest_piece(tokenizer)
    out = []
    for start in range(0, len(docs), 256):
        batch = tokenizer([d[:max_chars] for d in docs[start : start + 256]], add_special_tokens=not chat,
                          split_special_tokens=not chat)["input_ids"]
        out.extend(ids[:keep] for ids in batch)
    return out


def tokenizer_identity(tokenizer) -> str:
    """A content key of what a tokenizer does: its class, vocabulary, and how it encodes a probe text
    (special tokens added or not)."""
    return json_sha256({"class": type(tokenizer).__name__, "vocab": json_sha256(sorted(tokenizer.get_vocab().items())),
                        "probe": tokenizer(["Once upon a time, 42 cats."], add_special_tokens=True)["input_ids"]})


def reusable_tokens(docs: list[str], tokenizer, seq_len: int, samples_per_document: int = 1, chat: bool = False
                    ) -> list[list[int]]:
    """tokenize_documents, reused across a sweep's cells (hyperfit.reuse) when the texts, the tokenizer and the
    length kept are the same: the data.num_train or train.* cells of one source tokenize it once."""
    if not reuse.active():
        return tokenize_documents(docs, tokenizer, seq_len, samples_per_document, chat)
    key = json_sha256({"docs": json_sha256(docs), "tokenizer": tokenizer_identity(tokenizer), "seq_len": seq_len,
                       "samples_per_document": samples_per_document, "chat": chat})
    ids = reuse.load("tokens", key)
    if ids is None:
        ids = tokenize_documents(docs, tokenizer, seq_len, samples_per_document, chat)
        reuse.save("tokens", key, ids)
    return ids


_FIRST_SENTENCE = re.compile(r"^(.+?[.!?][\"'”’)]*)\s+(\S.*)$", re.S)


def chat_formatted(docs: list[str], tokenizer) -> list[str]:
    """data.chat_template: each document as a chat, its first sentence the user's turn and the rest the
    assistant's answer (a document without a sentence break: all of it the answer to an empty turn), in the
    tokenizer's own template, so an instruct model trains on text in the format it was tuned on.

    The template writes the special tokens (BOS, turn markers) itself: the result is tokenized without
    adding more."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"data.chat_template=true, but the tokenizer of this model "
                        f"({getattr(tokenizer, 'name_or_path', '?')}) has no chat template: use an instruct/chat "
                        "model's tokenizer, or set data.chat_template=false to train on the plain text")
    out = []
    for doc in docs:
        m = _FIRST_SENTENCE.match(doc)
        user, answer = (m.group(1), m.group(2)) if m else ("", doc)
        out.append(tokenizer.apply_chat_template([{"role": "user", "content": user},
                                                  {"role": "assistant", "content": answer}], tokenize=False))
    return out


def longest_piece(tokenizer) -> int:
    """Characters in the vocabulary's longest piece (at least 1)."""
    return max((len(piece) for piece in tokenizer.get_vocab()), default=1) or 1


def bos_prefix(tokenizer, ids: list[int]) -> list[int]:
    """[BOS] when the tokenizer starts documents with it (each chunk of a long document starts so too)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return [bos] if bos is not None and ids[:1] == [bos] else []


def chunks_in(length: int, seq_len: int, prefix: int) -> int:
    """Non-overlapping samples of seq_len tokens (each `prefix` tokens of BOS, then seq_len − prefix of text)
    in a document of `length` tokens, its own BOS included.

    >>> chunks_in(1000, 256, 1), chunks_in(1000, 256, 0), chunks_in(255, 256, 1)
    (3, 3, 0)
    """
    return (length - prefix) // (seq_len - prefix) if length >= seq_len else 0


def chunk(ids: list[int], k: int, seq_len: int, prefix: list[int]) -> list[int]:
    """The k-th sample of a document: chunk 0 is its first seq_len tokens, as with one sample per document.

    >>> chunk([1, 10, 11, 12, 13, 14, 15], 1, 4, [1])
    [1, 13, 14, 15]
    """
    step = seq_len - len(prefix)
    body = ids[len(prefix):]
    return prefix + body[k * step : (k + 1) * step]


def allocate(docs: list[int], capacity: list[int], n: int) -> list[tuple[int, int]]:
    """n (document, chunk) pairs from `docs`, one chunk from each in turn, so each chosen document gives one
    sample before any gives two.

    >>> allocate([3, 5], [0, 0, 0, 4, 0, 1], 3)
    [(3, 0), (3, 1), (5, 0)]
    """
    out: list[tuple[int, int]] = []
    for k in range(max((capacity[d] for d in docs), default=0)):
        out += [(d, k) for d in docs if k < capacity[d]]
    return sorted(out[:n]) if len(out) > n else sorted(out)


def split_documents(lengths: list[int], cfg: DataConfig, keys: list[str] | None = None,
                    capacity: list[int] | None = None, excluded: set[int] = frozenset()
                    ) -> dict[str, list[int]]:
    """Seeded, disjoint choice of document indices for train / val / contexts among qualifying ones.

    The held-out documents are drawn first: contexts, then validation, then training from the rest of one
    seeded order. So data.num_train can change (the paper's data-quantity sweep) while the contexts and the
    validation text stay the same, and a smaller run's training set is part of a larger one's; drawn last,
    the held-out documents of a 128-sample run were all training documents of a 256-sample run.
    Documents with equal `keys` (text hashes) count once: a duplicate could otherwise land on both sides.
    `capacity` is the number of samples each document can give (default one per qualifying document); the
    validation and training sides take documents until they hold num_val and num_train samples.
    `excluded` documents (those overlapping a text evaluation set) are drawn for nothing.

    >>> split_documents([300, 10, 300, 300], DataConfig(source="x", seq_len=256, num_train=1, num_val=1,
    ...                 num_contexts=1, context_len=32))  # doc 1 is too short
    {'train': [2], 'val': [0], 'contexts': [3]}
    >>> split_documents([300, 300, 300, 300], DataConfig(source="x", seq_len=256, num_train=1, num_val=1,
    ...                 num_contexts=1, context_len=32), keys=["a", "b", "a", "c"])  # doc 2 repeats doc 0
    {'train': [1], 'val': [0], 'contexts': [3]}
    """
    first: dict[str, int] = {}
    for i, key in enumerate(keys or ()):
        first.setdefault(key, i)
    firsts = sorted(first.values()) if keys else range(len(lengths))
    qualifying = [i for i in firsts if lengths[i] >= cfg.seq_len and i not in excluded]
    capacity = capacity or [int(n >= cfg.seq_len) for n in lengths]
    order = np.random.default_rng(cfg.seed).permutation(qualifying).tolist()
    contexts, rest = order[: cfg.num_contexts], order[cfg.num_contexts :]
    val, rest = _take(rest, capacity, cfg.num_val)
    train, _ = _take(rest, capacity, cfg.num_train)
    if len(contexts) < cfg.num_contexts or sum(capacity[i] for i in val) < cfg.num_val or \
            sum(capacity[i] for i in train) < cfg.num_train:
        raise DataError(_too_few_msg(cfg, lengths, qualifying, sum(capacity[i] for i in order[cfg.num_contexts:]),
                                     len(excluded)))
    return {"train": sorted(train), "val": sorted(val), "contexts": sorted(contexts)}


def _take(order: list[int], capacity: list[int], n: int) -> tuple[list[int], list[int]]:
    """(the first documents of `order` that hold n samples, the documents after them)."""
    total = 0
    for used, i in enumerate(order):
        if total >= n:
            return order[:used], order[used:]
        total += capacity[i]
    return order, []


def _too_few_msg(cfg: DataConfig, lengths: list[int], qualifying: list[int], samples: int, excluded: int) -> str:
    need = cfg.num_train + cfg.num_val + cfg.num_contexts
    chunking = (f"Set data.samples_per_document (now {cfg.samples_per_document}) above 1 to cut long documents "
                "into several non-overlapping samples, lower" if cfg.samples_per_document == 1 else
                f"With data.samples_per_document={cfg.samples_per_document} the documents after the "
                f"{cfg.num_contexts} context documents give {samples} samples. Raise data.samples_per_document, "
                "lower")
    left_out = f" (and do not overlap the data.contexts texts: {excluded} do)" if excluded else ""
    return (f"{len(qualifying)} of {len(lengths)} documents in data.source={cfg.source!r} have at least "
            f"data.seq_len={cfg.seq_len} tokens{left_out}, but data.num_train + data.num_val + data.num_contexts = "
            f"{cfg.num_train} + {cfg.num_val} + {cfg.num_contexts} = {need} are needed (samples; contexts one "
            f"per document). {chunking} those counts or data.seq_len, or use a source with more long documents")


def continuation_text(tokenizer, context_ids: list[int], continuation_ids: list[int]) -> str:
    """Detokenise a continuation as it reads after its context.

    Decoding the continuation alone loses or invents the leading space with SentencePiece tokenizers, so
    decode context+continuation and cut off the decoded context.
    """
    whole = tokenizer.decode(list(context_ids) + list(continuation_ids), skip_special_tokens=True)
    ctx = tokenizer.decode(list(context_ids), skip_special_tokens=True)
    return whole[len(ctx):] if whole.startswith(ctx) else tokenizer.decode(continuation_ids, skip_special_tokens=True)


def text_hash(text: str, full: bool = False) -> str:
    """sha256 of a text: its first 16 hex digits (a sample's name for its document), or all of them."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return digest if full else digest[:16]


def prepare_data(cfg: DataConfig, tokenizer, run: RunDir) -> dict:
    """Read, clean, tokenise, split and write data/{train,val,contexts}.jsonl, data/vocabulary.txt and
    data/report.md.

    Everything is computed before the first file is written, so a bad source leaves no data/ behind.
    Returns the manifest (counts) that is also saved as data/manifest.json.
    """
    run = RunDir.of(run)
    _check_language(cfg.language)
    docs = read_documents(cfg, stats := CleanStats())
    ids = _tokens(cfg, docs, tokenizer)
    hashes = [text_hash(d) for d in docs]
    prefix = [bos_prefix(tokenizer, x) for x in ids]
    capacity = [min(cfg.samples_per_document, chunks_in(len(x), cfg.seq_len, len(p))) for x, p in zip(ids, prefix)]
    rows, extra, excluded = [], [], set()
    if cfg.contexts:  # the evaluation set comes from its own sources; training leaves out whatever overlaps it
        rows, extra = draw_contexts(cfg, read_documents, text_hash)
        excluded = overlapping(docs, [i for i, c in enumerate(capacity) if c], [r["text"] for r in rows])
    split = split_documents([len(x) for x in ids], replace(cfg, num_contexts=0) if cfg.contexts else cfg, keys=hashes,
                            capacity=capacity, excluded=excluded)

    def sample(kind: str, k: int, i: int, c: int) -> dict:
        return {"id": f"{kind}-{k:05d}", "doc_id": i, "chunk": c, "input_ids": chunk(ids[i], c, cfg.seq_len, prefix[i]),
                "text_hash": hashes[i]}

    def context(k: int, i: int) -> dict:
        ctx, ref = ids[i][: cfg.context_len], ids[i][cfg.context_len : cfg.seq_len + REFERENCE_MAX_TOKENS]
        return {"id": f"ctx-{k:05d}", "doc_id": i, "context_ids": ctx,
                "context": tokenizer.decode(ctx, skip_special_tokens=True),
                "reference_ids": ref, "reference": continuation_text(tokenizer, ctx, ref), "text_hash": hashes[i]}

    train = [sample("train", k, i, c) for k, (i, c) in enumerate(allocate(split["train"], capacity, cfg.num_train))]
    val = [sample("val", k, i, c) for k, (i, c) in enumerate(allocate(split["val"], capacity, cfg.num_val))]
    contexts = [context(k, i) for k, i in enumerate(split["contexts"])]
    held_out, text_set = {hashes[i] for i in split["contexts"]}, {}
    if cfg.contexts:
        contexts = tokenize_contexts(rows, tokenizer)
        held_out = {r["text_hash"] for r in rows} | {hashes[i] for i in excluded}
        text_set = _text_set_manifest(cfg, rows, excluded)
    vocabulary, word_list = _vocabulary(cfg.language, docs, hashes, held_out, extra)
    manifest = {"source": cfg.source, "documents": len(docs), "qualifying": sum(c > 0 for c in capacity),
                "train": len(train), "val": len(val), "contexts": len(contexts), "seq_len": cfg.seq_len,
                "context_len": cfg.context_len, "vocabulary_words": len(vocabulary), "seed": cfg.seed,
                "samples_per_document": cfg.samples_per_document,
                "documents_used": {side: len(split[side]) for side in ("train", "val", "contexts")},
                "dropped": {"duplicates": len(docs) - len(set(hashes)),
                            "shorter_than_seq_len": sum(c == 0 for c in capacity)},
                "cleaning": stats.as_dict(), "special_strings": special_strings(docs, tokenizer),
                "language": cfg.language, "word_list": word_list,
                "options": {k: getattr(cfg, k) for k in ("repair_text", "strip_boilerplate", "markup",
                                                         "unknown_marker", "reflow")},
                "chat_template": cfg.chat_template, **text_set}

    write_jsonl(run.data_file("train"), train)
    write_jsonl(run.data_file("val"), val)
    write_jsonl(run.data_file("contexts"), contexts)
    write_text(run.data / "vocabulary.txt", "\n".join(vocabulary) + "\n")
    write_json(run.data / "manifest.json", manifest)
    write_text(run.data / "report.md", render_data_report(manifest))
    return manifest


def _tokens(cfg: DataConfig, docs: list[str], tokenizer) -> list[list[int]]:
    texts = chat_formatted(docs, tokenizer) if cfg.chat_template else docs
    return reusable_tokens(texts, tokenizer, cfg.seq_len, cfg.samples_per_document, chat=cfg.chat_template)


def _check_language(language: str | None) -> None:
    if language and language not in known_languages():
        raise DataError(f"data.language={language!r} has no word list in wordfreq; use one of "
                        f"{', '.join(known_languages())}, or null for the source's own words only")


def _text_set_manifest(cfg: DataConfig, rows: list[dict], excluded: set[int]) -> dict:
    domains = dict.fromkeys(r["domain"] for r in rows)
    return {"contexts_sha256": set_sha256(rows), "training_documents_overlapping_contexts": len(excluded),
            "contexts_per_domain": {d: sum(r["domain"] == d for r in rows) for d in domains},
            "context_words": cfg.context_words}


def _vocabulary(language: str | None, docs: list[str], hashes: list[str], held_out: set[str], extra: list[str]
                ) -> tuple[list[str], str]:
    """The non-word rate's vocabulary of real words, and the name of its general list: that list for the language,
    every word type in the source text but the held-out documents (contexts and their human continuations: with
    them in, the human row would be all words by construction), and the words of a text evaluation set's source
    documents that were not drawn (`extra`)."""
    general, word_list = general_words(language)
    vocabulary = reuse.remember("vocabulary", json_sha256([hashes, sorted(held_out), word_list, extra]), lambda: sorted(
        general | {w for d, h in zip(docs, hashes) if h not in held_out for w in words(d)}
        | {w for d in extra for w in words(d)}))
    return vocabulary, word_list


def special_strings(docs: list[str], tokenizer) -> dict[str, int]:
    """How often each special-token string (the tokenizer's and common ones) is written in the documents."""
    names = dict.fromkeys([*SPECIAL_STRINGS, *getattr(tokenizer, "all_special_tokens", [])])
    counts = {name: sum(d.count(name) for d in docs) for name in names if name}
    return {name: n for name, n in counts.items() if n}


def load_vocabulary(run: RunDir) -> frozenset[str] | None:
    path = run.data / "vocabulary.txt"
    return frozenset(path.read_text().split()) if path.is_file() else None
