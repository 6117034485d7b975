"""Data stage: source text → documents → fixed-length token samples, seeded and disjoint.

    hyperfit run configs/paper.yaml        # runs this stage first
    python -c "import hyperfit; hyperfit.prepare_data(cfg.data, tokenizer, run)"

Every qualifying document (at least `seq_len` tokens; repeated documents once) is shuffled with
`data.seed`; the first `num_contexts` become generation contexts (their first `context_len` tokens; the
rest of the document is the human continuation), the next `num_val` validation sequences, the next
`num_train` training samples. One document feeds at most one of these, so held-out text never leaks into
training, and the held-out sets do not depend on num_train.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hyperfit.config import DataConfig
from hyperfit.errors import DataError  # noqa: F401 - raised here, importable from here
from hyperfit.metrics.lexical import words
from hyperfit.runs import RunDir, write_json, write_jsonl, write_text

REFERENCE_MAX_TOKENS = 1024  # a held-out book could be 200k tokens; nobody compares continuations that long


def read_documents(cfg: DataConfig) -> list[str]:
    """Documents from a file or a datasets id, whitespace-trimmed, empty ones dropped."""
    docs = []
    for text in _iter_source(cfg):
        text = text.replace("\r\n", "\n").lstrip("\ufeff").strip()
        if text:
            docs.append(text)
        if cfg.max_documents is not None and len(docs) >= cfg.max_documents:
            break
    if not docs:
        raise DataError(f"data.source={cfg.source!r} holds no text; give a file with documents "
                        "(a .txt with blank lines between documents, or a .jsonl/.csv/.parquet with a text column)")
    return docs


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
        # Documents are separated by one or more blank lines (spaces, tabs or no-break spaces allowed on them).
        text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        yield from re.split(r"\n[^\S\n]*\n", text)
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


def tokenize_documents(docs: list[str], tokenizer, seq_len: int, special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each document, BOS included when the tokenizer adds one, cut after what any use needs.

    Each text is cut before it is tokenized, to twice the characters `keep` tokens can span (no token is
    longer than the vocabulary's longest piece): a one-line 32 MB book was tokenized whole, ~4 GB of memory
    for the 1,280 tokens kept. The margin keeps the tokens near the cut out of what is kept."""
    keep = seq_len + REFERENCE_MAX_TOKENS
    max_chars = 2 * keep * longest_piece(tokenizer)
    out = []
    for start in range(0, len(docs), 256):
        batch = tokenizer([d[:max_chars] for d in docs[start : start + 256]],
                          add_special_tokens=special_tokens)["input_ids"]
        out.extend(ids[:keep] for ids in batch)
    return out


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


def split_documents(lengths: list[int], cfg: DataConfig, keys: list[str] | None = None) -> dict[str, list[int]]:
    """Seeded, disjoint choice of document indices for train / val / contexts among qualifying ones.

    The held-out documents are drawn first: contexts, then validation, then training from the rest of one
    seeded order. So data.num_train can change (the paper's data-quantity sweep) while the contexts and the
    validation text stay the same, and a smaller run's training set is part of a larger one's; drawn last,
    the held-out documents of a 128-sample run were all training documents of a 256-sample run.
    Documents with equal `keys` (text hashes) count once: a duplicate could otherwise land on both sides.

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
    qualifying = [i for i in firsts if lengths[i] >= cfg.seq_len]
    need = cfg.num_train + cfg.num_val + cfg.num_contexts
    if len(qualifying) < need:
        raise DataError(
            f"{len(qualifying)} of {len(lengths)} documents in data.source={cfg.source!r} have at least "
            f"data.seq_len={cfg.seq_len} tokens, but data.num_train + data.num_val + data.num_contexts = "
            f"{cfg.num_train} + {cfg.num_val} + {cfg.num_contexts} = {need} are needed. Lower those counts or "
            f"data.seq_len, or use a source with more long documents")
    order = np.random.default_rng(cfg.seed).permutation(qualifying).tolist()
    a, b = cfg.num_contexts, cfg.num_contexts + cfg.num_val
    return {"train": sorted(order[b:need]), "val": sorted(order[a:b]), "contexts": sorted(order[:a])}


def continuation_text(tokenizer, context_ids: list[int], continuation_ids: list[int]) -> str:
    """Detokenise a continuation as it reads after its context.

    Decoding the continuation alone loses or invents the leading space with SentencePiece tokenizers, so
    decode context+continuation and cut off the decoded context.
    """
    whole = tokenizer.decode(list(context_ids) + list(continuation_ids), skip_special_tokens=True)
    ctx = tokenizer.decode(list(context_ids), skip_special_tokens=True)
    return whole[len(ctx):] if whole.startswith(ctx) else tokenizer.decode(continuation_ids, skip_special_tokens=True)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_data(cfg: DataConfig, tokenizer, run: RunDir) -> dict:
    """Read, tokenise, split and write data/{train,val,contexts}.jsonl and data/vocabulary.txt.

    Everything is computed before the first file is written, so a bad source leaves no data/ behind.
    Returns the manifest (counts) that is also saved as data/manifest.json.
    """
    run = RunDir.of(run)
    docs = read_documents(cfg)
    if cfg.chat_template:
        ids = tokenize_documents(chat_formatted(docs, tokenizer), tokenizer, cfg.seq_len, special_tokens=False)
    else:
        ids = tokenize_documents(docs, tokenizer, cfg.seq_len)
    hashes = [text_hash(d) for d in docs]
    split = split_documents([len(x) for x in ids], cfg, keys=hashes)

    def sample(kind: str, k: int, i: int) -> dict:
        return {"id": f"{kind}-{k:05d}", "doc_id": i, "input_ids": ids[i][: cfg.seq_len], "text_hash": hashes[i]}

    def context(k: int, i: int) -> dict:
        ctx, ref = ids[i][: cfg.context_len], ids[i][cfg.context_len :]
        return {"id": f"ctx-{k:05d}", "doc_id": i, "context_ids": ctx,
                "context": tokenizer.decode(ctx, skip_special_tokens=True),
                "reference_ids": ref, "reference": continuation_text(tokenizer, ctx, ref), "text_hash": hashes[i]}

    train = [sample("train", k, i) for k, i in enumerate(split["train"])]
    val = [sample("val", k, i) for k, i in enumerate(split["val"])]
    contexts = [context(k, i) for k, i in enumerate(split["contexts"])]
    # The non-word rate needs a vocabulary of real words: every word type in the source text, but the held-out
    # documents (contexts and their human continuations): with them in, the human row would be all words by
    # construction.

    held_out = {hashes[i] for i in split["contexts"]}
    vocabulary = sorted({w for d, h in zip(docs, hashes) if h not in held_out for w in words(d)})
    manifest = {"source": cfg.source, "documents": len(docs), "qualifying": sum(len(x) >= cfg.seq_len for x in ids),
                "train": len(train), "val": len(val), "contexts": len(contexts), "seq_len": cfg.seq_len,
                "context_len": cfg.context_len, "vocabulary_words": len(vocabulary), "seed": cfg.seed,
                "chat_template": cfg.chat_template}

    write_jsonl(run.data_file("train"), train)
    write_jsonl(run.data_file("val"), val)
    write_jsonl(run.data_file("contexts"), contexts)
    write_text(run.data / "vocabulary.txt", "\n".join(vocabulary) + "\n")
    write_json(run.data / "manifest.json", manifest)
    return manifest


def load_vocabulary(run: RunDir) -> frozenset[str] | None:
    path = run.data / "vocabulary.txt"
    return frozenset(path.read_text().split()) if path.is_file() else None
