"""The data stage on real text as users have it (../shared/assets/text): a Project Gutenberg book as .txt
(BOM, CRLF, header and licence, hard-wrapped at ~70 characters), WikiText's tokenised form with `<unk>`,
Wikinews articles as .jsonl. Tokenizer only (stories260K's 512 pieces), no model: fast.

Sources kept out of these tests for the measured held-out comparison (docs/data.md): The Wind in the
Willows (pg289) and bbc_news_500.jsonl.
"""

import json
import re

import pytest

from hyperfit.config import DataConfig
from hyperfit.metrics.lexical import nonword_rate, words
from hyperfit.runs import RunDir, read_jsonl
from hyperfit.stages.data import DataError, load_vocabulary, prepare_data, read_documents
from tinymodels import ASSETS

TEXT = ASSETS / "text"
BOOK = TEXT / "gutenberg" / "pg11-Alice-s-Adventures-in-Wonderland.txt"
LONG_BOOK = TEXT / "gutenberg" / "pg55-The-Wonderful-Wizard-of-Oz.txt"
WIKITEXT = TEXT / "wikitext-2" / "valid.txt"
WIKINEWS = TEXT / "news" / "wikinews_gum.jsonl"
BOILERPLATE = re.compile(r"gutenberg|licen[sc]e|ebook|www\.|\*\*\*", re.I)

pytestmark = pytest.mark.skipif(not (BOOK.is_file() and (ASSETS / "stories260K" / "tok512.model").is_file()),
                                reason=f"real text assets not found at {TEXT} (CI has ../shared/assets beside it)")


@pytest.fixture(scope="module")
def tok():
    from hyperfit.llama2c import build_tokenizer

    return build_tokenizer(ASSETS / "stories260K" / "tok512.model")


def cfg(source, **kw):
    base = dict(source=str(source), seq_len=64, context_len=16, num_train=64, num_val=16, num_contexts=16)
    return DataConfig(**{**base, **kw})


def texts(run: RunDir, tok) -> dict[str, list[str]]:
    """Each side's samples as text; contexts with their human continuation."""
    out = {side: [tok.decode(r["input_ids"], skip_special_tokens=True) for r in read_jsonl(run.data_file(side))]
           for side in ("train", "val")}
    out["contexts"] = [r["context"] + r["reference"] for r in read_jsonl(run.data_file("contexts"))]
    return out


def special_ids_in(run: RunDir, tok) -> list[int]:
    """Special-token ids anywhere in the samples but the BOS each one starts with."""
    special = set(tok.all_special_ids)
    ids = [r["input_ids"][1:] for side in ("train", "val") for r in read_jsonl(run.data_file(side))]
    ids += [r["context_ids"][1:] + r["reference_ids"] for r in read_jsonl(run.data_file("contexts"))]
    return [i for row in ids for i in row if i in special]


def test_a_gutenberg_book_gives_samples_without_boilerplate_and_with_paragraphs_reflowed(tmp_path, tok):
    run = RunDir(tmp_path / "book")
    manifest = prepare_data(cfg(BOOK), tok, run)
    sides = texts(run, tok)
    every = [t for side in sides.values() for t in side]
    assert not [t for t in every if BOILERPLATE.search(t)]
    # Wraps joined: a paragraph is one line. Verse (Alice's poems, indented) keeps its lines.
    assert all(re.fullmatch(r"[^\n]*(\n +[^\n]*)*", t) for t in every if "‘You are old" not in t)
    cleaning = manifest["cleaning"]
    assert cleaning["boilerplate_texts"] == 1 and cleaning["boilerplate_chars"] > 10_000
    assert cleaning["wraps_joined"] > 1000 and list(cleaning["wrap_widths"]) == ["72"]
    report = (run.data / "report.md").read_text()
    assert "Project Gutenberg boilerplate removed: 1 texts" in report and "hard wraps joined" in report
    # The same book with the cleaning turned off: the licence and the wraps reach the samples.
    raw = RunDir(tmp_path / "raw")
    prepare_data(cfg(BOOK, strip_boilerplate="none", reflow="none"), tok, raw)
    raw_texts = [t for side in texts(raw, tok).values() for t in side]
    assert sum(bool(re.search(r"\n[^\s]", t)) for t in raw_texts) > 0.3 * len(raw_texts)


def test_the_human_text_of_a_book_is_almost_all_words_with_the_general_word_list(tmp_path, tok):
    run = RunDir(tmp_path / "book")
    manifest = prepare_data(cfg(BOOK), tok, run)
    human = [w for r in read_jsonl(run.data_file("contexts")) for w in words(r["context"] + r["reference"])]
    assert len(human) > 500
    assert nonword_rate(human, load_vocabulary(run)) < 0.01
    assert "wordfreq" in manifest["word_list"] and "wordfreq" in (run.data / "report.md").read_text()
    # Only the book's own words (its held-out paragraphs kept out): real words it does not use count as non-words.
    own = RunDir(tmp_path / "own")
    prepare_data(cfg(BOOK, language=None), tok, own)
    assert nonword_rate(human, load_vocabulary(own)) > 2 * nonword_rate(human, load_vocabulary(run))


def test_wikitext_markers_are_text_never_special_ids_and_its_markup_is_undone(tmp_path, tok):
    kept = RunDir(tmp_path / "kept")
    manifest = prepare_data(cfg(WIKITEXT, unknown_marker="keep", num_train=128), tok, kept)
    assert special_ids_in(kept, tok) == []
    assert manifest["special_strings"]["<unk>"] > 1000
    assert any("<unk>" in t for t in texts(kept, tok)["train"])  # still there, as the characters < u n k >
    dropped = RunDir(tmp_path / "dropped")
    manifest = prepare_data(cfg(WIKITEXT, num_train=128), tok, dropped)
    every = [t for side in texts(dropped, tok).values() for t in side]
    assert not [t for t in every if "<unk>" in t or " @-@ " in t or " @,@ " in t or " , " in t]
    assert manifest["cleaning"]["markup"] == {"wikitext": 1} and manifest["cleaning"]["unknown_markers"] > 1000


def test_special_token_strings_written_in_any_document_stay_text(tmp_path, tok):
    story = ("Tom typed <s> and </s> and <unk> and <|endoftext|> into the box, then went out to play in the "
             "park with his big red ball and his little dog. ")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": f"{i}. {story * 2}"}) + "\n" for i in range(40)))
    run = RunDir(tmp_path / "run")
    manifest = prepare_data(cfg(tmp_path / "d.jsonl", num_train=20, num_val=4, num_contexts=4), tok, run)
    assert special_ids_in(run, tok) == []
    assert {"<s>", "</s>", "<|endoftext|>"} <= set(manifest["special_strings"])  # <unk>: data.unknown_marker=drop
    assert "Tom typed <s> and </s> and and <|endoftext|> into" in texts(run, tok)["train"][0]


def test_a_book_in_a_few_long_rows_is_cut_into_non_overlapping_samples_disjoint_by_document(tmp_path, tok):
    # The book as 8 rows of consecutive paragraphs, CRLF wraps and all; the first row holds Gutenberg's header,
    # the last its footer and licence.
    paragraphs = LONG_BOOK.read_bytes().decode("utf-8-sig").split("\r\n\r\n")
    rows = ["\r\n\r\n".join(paragraphs[len(paragraphs) * k // 8 : len(paragraphs) * (k + 1) // 8]) for k in range(8)]
    (tmp_path / "book.jsonl").write_text("".join(json.dumps({"text": row}) + "\n" for row in rows))
    source = tmp_path / "book.jsonl"
    with pytest.raises(DataError, match="data.samples_per_document"):
        prepare_data(cfg(source, num_contexts=2), tok, RunDir(tmp_path / "one"))
    run = RunDir(tmp_path / "chunked")
    manifest = prepare_data(cfg(source, num_contexts=2, samples_per_document=64), tok, run)
    train, val, ctx = (read_jsonl(run.data_file(s)) for s in ("train", "val", "contexts"))
    assert (len(train), len(val), len(ctx)) == (64, 16, 2)
    docs = {side: {r["doc_id"] for r in rows} for side, rows in (("train", train), ("val", val), ("contexts", ctx))}
    assert not (docs["train"] & docs["val"] or docs["train"] & docs["contexts"] or docs["val"] & docs["contexts"])
    assert len(docs["train"]) < len(train)  # several samples per training document
    assert manifest["documents_used"]["train"] == len(docs["train"])
    cleaned = read_documents(cfg(source))
    for doc in docs["train"]:  # a document's samples are its consecutive stretches, each after a BOS
        rows = sorted((r for r in train if r["doc_id"] == doc), key=lambda r: r["chunk"])
        assert [r["chunk"] for r in rows] == list(range(len(rows)))
        assert all(len(r["input_ids"]) == 64 and r["input_ids"][0] == tok.bos_token_id for r in rows)
        whole = tok(cleaned[doc], split_special_tokens=True)["input_ids"]
        body = [i for r in rows for i in r["input_ids"][1:]]
        assert body == whole[1 : 1 + len(body)]
    assert "samples_per_document" in (run.data / "report.md").read_text()


def test_news_articles_are_left_as_they_are(tmp_path, tok):
    run = RunDir(tmp_path / "news")
    manifest = prepare_data(cfg(WIKINEWS, num_train=16, num_val=4, num_contexts=4), tok, run)
    c = manifest["cleaning"]
    assert (c["boilerplate_texts"], c["markup"], c["wraps_joined"]) == (0, {}, 0)
    assert special_ids_in(run, tok) == []


def test_the_text_options_refuse_unknown_values_and_replace_marks_unknown_words(tmp_path):
    from hyperfit.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.source=x", "data.reflow=yes", "data.unknown_marker=delete",
                           "data.samples_per_document=0"])
    assert all(s in str(e.value) for s in ("data.reflow='yes' must be one of auto, always, none",
                                           "data.unknown_marker='delete'", "data.samples_per_document"))
    docs = read_documents(cfg(WIKITEXT, unknown_marker="replace", max_documents=40))
    assert any("\ufffd" in d for d in docs) and not any("<unk>" in d for d in docs)
