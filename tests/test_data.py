import json

import pytest

from hyperfit.config import DataConfig, ModelConfig
from hyperfit.models import load_tokenizer
from hyperfit.runs import RunDir, read_jsonl
from hyperfit.stages.data import DataError, prepare_data, read_documents, split_documents
from tinymodels import make_corpus


def cfg(source, **kw):
    base = dict(source=str(source), seq_len=32, context_len=8, num_train=16, num_val=8, num_contexts=8)
    base.update(kw)
    return DataConfig(**base)


def test_split_is_seeded_disjoint_and_skips_short_docs():
    lengths = [40] * 50 + [5] * 10
    c = cfg("x", num_train=20, num_val=10, num_contexts=10)
    a, b = split_documents(lengths, c), split_documents(lengths, c)
    assert a == b
    chosen = a["train"] + a["val"] + a["contexts"]
    assert len(set(chosen)) == 40 and max(chosen) < 50
    assert split_documents(lengths, cfg("x", num_train=20, num_val=10, num_contexts=10, seed=1)) != a


def test_prepare_writes_samples_contexts_and_vocabulary(tmp_path, corpus_file, tiny_llama):
    run = RunDir(tmp_path / "run")
    tok = load_tokenizer(ModelConfig(name=str(tiny_llama)))
    manifest = prepare_data(cfg(corpus_file), tok, run)
    train, val, ctx = (read_jsonl(run.data_file(s)) for s in ("train", "val", "contexts"))
    assert (len(train), len(val), len(ctx)) == (16, 8, 8) == (manifest["train"], manifest["val"], manifest["contexts"])
    assert all(len(r["input_ids"]) == 32 and r["input_ids"][0] == tok.bos_token_id for r in train)
    docs = {r["doc_id"] for r in train} | {r["doc_id"] for r in val} | {r["doc_id"] for r in ctx}
    assert len(docs) == 32  # disjoint documents
    c = ctx[0]
    assert len(c["context_ids"]) == 8 and len(c["reference_ids"]) > 0
    assert c["context"] + c["reference"] == tok.decode(c["context_ids"] + c["reference_ids"], skip_special_tokens=True)
    assert "cat" in (run.data / "vocabulary.txt").read_text().split()


def test_jsonl_csv_and_parquet_sources(tmp_path):
    import pandas as pd

    docs = make_corpus(5)
    pd.DataFrame({"story": docs, "n": range(5)}).to_parquet(tmp_path / "d.parquet")
    assert read_documents(cfg(tmp_path / "d.parquet", text_field="story")) == docs
    with pytest.raises(DataError, match=r"data.text_field='text' is not a column .*\['story', 'n'\]"):
        read_documents(cfg(tmp_path / "d.parquet"))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"story": d}) + "\n" for d in docs))
    assert read_documents(cfg(tmp_path / "d.jsonl", text_field="story")) == docs
    (tmp_path / "d.csv").write_text("id,story\n" + "".join(f'{i},"{d}"\n' for i, d in enumerate(docs)))
    assert read_documents(cfg(tmp_path / "d.csv", text_field="story")) == docs


@pytest.mark.parametrize("content,field,match", [
    ("", "text", "holds no text"),
    ('{"body": "x"}\n', "text", r"data.text_field='text' is not a column .*\['body'\]"),
])
def test_bad_sources_fail_clearly(tmp_path, content, field, match):
    suffix = ".jsonl" if content.startswith("{") else ".txt"
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        read_documents(cfg(path, text_field=field))


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_documents(cfg(tmp_path / "nope.txt"))
    (tmp_path / "x.docx").write_text("hello")
    with pytest.raises(DataError, match="unknown file type"):
        read_documents(cfg(tmp_path / "x.docx"))


def test_too_few_long_documents_names_counts_and_flags(tmp_path, tiny_llama):
    path = tmp_path / "short.txt"
    path.write_text("\n\n".join(make_corpus(10, words_per_doc=8)))
    run = RunDir(tmp_path / "run")
    tok = load_tokenizer(ModelConfig(name=str(tiny_llama)))
    with pytest.raises(DataError, match=r"0 of 10 documents .* data.seq_len=32 .* 32 are needed.*samples_per_document"):
        prepare_data(cfg(path), tok, run)
    assert not run.path.exists()  # nothing half-written


def test_hub_dataset_id_without_datasets_installed_says_how_to_fix(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kw):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(DataError, match=r"pip install datasets"):
        read_documents(cfg("roneneldan/TinyStories"))


def test_held_out_documents_do_not_depend_on_num_train():
    # The paper's data-quantity sweep: drawn after training, a 128-sample run's contexts and validation
    # text were all training documents of a 256-sample run, and compare scored that model on them.
    lengths = [40] * 60
    small, large = (split_documents(lengths, cfg("x", num_train=n, num_val=8, num_contexts=8)) for n in (10, 40))
    assert small["contexts"] == large["contexts"] and small["val"] == large["val"]
    assert set(small["train"]) < set(large["train"])
    assert not set(large["train"]) & set(small["contexts"] + small["val"])


def test_a_repeated_document_never_lands_on_both_sides(tmp_path, tiny_llama):
    docs = make_corpus(30)
    path = tmp_path / "repeats.txt"
    path.write_text("\n\n".join(docs + docs[:10] * 3))  # ten documents four times each
    run = RunDir(tmp_path / "run")
    tok = load_tokenizer(ModelConfig(name=str(tiny_llama)))
    manifest = prepare_data(cfg(path, num_train=12, num_val=6, num_contexts=6), tok, run)
    hashes = {s: [r["text_hash"] for r in read_jsonl(run.data_file(s))] for s in ("train", "val", "contexts")}
    every = hashes["train"] + hashes["val"] + hashes["contexts"]
    assert len(every) == len(set(every)) == 24 and manifest["documents"] == 60


def test_the_vocabulary_leaves_out_the_held_out_continuations(tmp_path, tiny_llama):
    # With the contexts' documents in it, the human row's words were all "real" by construction.
    tag = lambda i: "zyx" + chr(97 + i % 26) + chr(97 + i // 26) + "qw"  # noqa: E731 - a word only document i has
    docs = [f"{d} {tag(i).capitalize()}." for i, d in enumerate(make_corpus(40))]
    path = tmp_path / "tagged.txt"
    path.write_text("\n\n".join(docs))
    run = RunDir(tmp_path / "run")
    prepare_data(cfg(path), load_tokenizer(ModelConfig(name=str(tiny_llama))), run)
    vocabulary = set((run.data / "vocabulary.txt").read_text().split())
    held_out = {r["doc_id"] for r in read_jsonl(run.data_file("contexts"))}
    assert all((tag(i) in vocabulary) == (i not in held_out) for i in range(40)) and held_out


def test_files_as_editors_and_spreadsheets_write_them(tmp_path):
    docs = make_corpus(3)
    bom = "\ufeff"
    (tmp_path / "b.jsonl").write_text(bom + "".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    assert read_documents(cfg(tmp_path / "b.jsonl")) == docs
    (tmp_path / "b.csv").write_text(bom + "text,id\n" + "".join(f'"{d}",{i}\n' for i, d in enumerate(docs)))
    assert read_documents(cfg(tmp_path / "b.csv")) == docs
    (tmp_path / "a.json").write_text(json.dumps([{"text": d} for d in docs]))
    assert read_documents(cfg(tmp_path / "a.json")) == docs
    book = "word " * 40_000  # 200 KB in one cell: over csv's default field limit
    (tmp_path / "big.csv").write_text(f'text\n"{book}"\n')
    assert read_documents(cfg(tmp_path / "big.csv")) == [book.strip()]
    (tmp_path / "nbsp.txt").write_text("first doc\n\u00a0\nsecond doc\r\rthird doc")
    assert read_documents(cfg(tmp_path / "nbsp.txt")) == ["first doc", "second doc", "third doc"]
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text .*convert it to UTF-8"):
        read_documents(cfg(tmp_path / "latin1.txt"))
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"broken.jsonl:2 is not JSON"):
        read_documents(cfg(tmp_path / "broken.jsonl"))


def test_long_documents_are_cut_before_tokenizing_and_keep_the_same_tokens(tmp_path):
    # A one-line 32 MB book was tokenized whole (3.9 GB peak for the 1,280 tokens kept).
    from hyperfit.stages.data import REFERENCE_MAX_TOKENS, longest_piece, tokenize_documents
    from tinymodels import build_tokenizer, make_corpus

    corpus = make_corpus(n_docs=20, words_per_doc=60)
    tok = build_tokenizer(corpus)
    seen = []
    real_call = type(tok).__call__

    def recording(self, texts, **kw):
        seen.extend(len(t) for t in texts)
        return real_call(self, texts, **kw)

    book = " ".join(corpus) * 400  # ~1.4M characters, far more than 16 + 1024 tokens need
    short = corpus[:3]
    type(tok).__call__ = recording
    try:
        ids = tokenize_documents([book, *short], tok, seq_len=16)
    finally:
        type(tok).__call__ = real_call
    limit = 2 * (16 + REFERENCE_MAX_TOKENS) * longest_piece(tok)
    assert max(seen) <= limit < len(book)
    whole = tok([book, *short], add_special_tokens=True)["input_ids"]
    assert ids == [x[: 16 + REFERENCE_MAX_TOKENS] for x in whole]


CHAT = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}{{ eos_token }}"
        "{% endfor %}")


def test_chat_template_wraps_each_document_as_a_chat_and_is_refused_without_one(tmp_path, corpus_file, tiny_llama):
    tok = load_tokenizer(ModelConfig(name=str(tiny_llama)))
    with pytest.raises(DataError, match="no chat template"):
        prepare_data(cfg(corpus_file, chat_template=True), tok, RunDir(tmp_path / "none"))
    assert not (tmp_path / "none" / "data").exists()  # refused before anything was written
    tok.chat_template = CHAT
    run = RunDir(tmp_path / "run")
    prepare_data(cfg(corpus_file, chat_template=True, seq_len=48), tok, run)
    row = read_jsonl(run.data_file("train"))[0]
    doc = read_documents(cfg(corpus_file))[row["doc_id"]]
    first, rest = doc.split(". ", 1)
    chat = tok.apply_chat_template([{"role": "user", "content": first + "."}, {"role": "assistant", "content": rest}],
                                   tokenize=False)
    expected = tok(chat, add_special_tokens=False)["input_ids"][:48]
    assert row["input_ids"] == expected
    assert row["input_ids"][0] == tok.bos_token_id and row["input_ids"].count(tok.bos_token_id) == 1
    assert tok.decode(row["input_ids"]).startswith("<s><|user|> " + first)
