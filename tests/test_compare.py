import csv
import json
import shutil

import pytest

from hyperfit.cli import main
from hyperfit.runs import read_jsonl, write_jsonl
from hyperfit.stages.compare import compare, weights_hash
from tinymodels import make_corpus, save_tiny_model, tiny_overrides

DECODERS = ["greedy", "top_p", "contrastive", "entropy_matched_temperature"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama, corpus_file):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", *tiny_overrides(tiny_llama, corpus_file, out, "cmp"), "generate.with_base=false"]) == 0
    return out / "cmp"


def csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def mtimes(run):
    return {p.name: p.stat().st_mtime_ns for p in (run / "generations").glob("*.jsonl")}


def test_compare_end_to_end_then_reuses_its_generations(trained_run, capsys):
    run = trained_run
    assert main(["compare", str(run), "--decoders", ",".join(DECODERS), "--lengths", "8,12",
                 "generate.num_samples=2"]) == 0
    assert "(14 generated, 0 reused)" in capsys.readouterr().out  # (4 on base + 3 on final) × 2 lengths
    rows = csv_rows(run / "compare.csv")
    # base × 4 decoders + final × 3 (entropy matching of final against itself is skipped) + human, per length
    assert len(rows) == (4 + 3 + 1) * 2
    assert {(r["model"], r["decoder"].split(" ")[0], r["length"]) for r in rows} == (
        {(m, d, L) for m in ("base", "final") for d in DECODERS for L in ("8", "12")}
        - {("final", "entropy_matched_temperature", L) for L in ("8", "12")}
        | {("human (reference)", "–", L) for L in ("8", "12")})
    md = (run / "compare.md").read_text()
    assert "| final | contrastive | 12 | 8 |" in md and "| human (reference) | – | 8 |" in md
    assert "skipped for final" in md

    sampled = read_jsonl(run / "generations/final-top_p-L12.jsonl")
    assert len(sampled) == 16 and sorted({r["sample"] for r in sampled}) == [0, 1]
    assert all(len(r["continuation_ids"]) == 12 for r in sampled)
    assert len(read_jsonl(run / "generations/final-greedy-L12.jsonl")) == 8  # greedy: one sample
    matched = read_jsonl(run / "generations/base-entropy_matched_temperature-L8.jsonl")[0]["decoder_config"]
    assert abs(matched["matched_entropy"] - matched["target_entropy"]) <= matched["tolerance"]
    assert matched["temperature"] > 0 and matched["target"] == "final"
    for tag in ("base-greedy-L8", "final-contrastive-L12", "reference-L12"):
        assert json.loads((run / f"metrics/{tag}.json").read_text())["metrics"]["ttr"]["value"] > 0

    before = mtimes(run)
    result = compare([run], DECODERS, [8, 12], overrides=["generate.num_samples=2"])
    assert result["generated"] == [] and len(result["cached"]) == 14
    assert mtimes(run) == before  # nothing regenerated
    assert len(csv_rows(run / "compare.csv")) == 16

    # A changed parameter changes the key: only that decoder's files are made again.
    result = compare([run], ["top_p"], [8], overrides=["generate.num_samples=2", "generate.params.top_p=0.5"])
    assert result["generated"] == ["base-top_p-L8", "final-top_p-L8"]
    assert read_jsonl(run / "generations/final-top_p-L8.jsonl")[0]["decoder_config"]["top_p"] == 0.5

    # The greedy loop (static cache or generate(); in bf16 they can part) is part of greedy's key only.
    assert read_jsonl(run / "generations/final-greedy-L8.jsonl")[0]["fast_greedy"] is False  # CPU default
    result = compare([run], ["greedy", "top_p"], [8], overrides=["generate.num_samples=2", "generate.fast=true"])
    assert sorted(result["generated"]) == ["base-greedy-L8", "base-top_p-L8", "final-greedy-L8", "final-top_p-L8"]
    result = compare([run], ["greedy", "top_p"], [8], overrides=["generate.num_samples=2", "generate.fast=false"])
    assert result["generated"] == ["base-greedy-L8", "final-greedy-L8"]  # top_p (back to 0.9) is cached now
    assert read_jsonl(run / "generations/final-greedy-L8.jsonl")[0]["fast_greedy"] is False


def test_weights_hash_is_remembered_and_follows_the_content(tmp_path, tiny_llama):
    model = shutil.copytree(tiny_llama, tmp_path / "m")
    first = weights_hash(model)
    assert (model / ".hyperfit-sha256.json").is_file() and weights_hash(model) == first
    with open(model / "model.safetensors", "ab") as f:
        f.write(b"\0")  # new size → rehashed
    assert weights_hash(model) != first


def test_compare_refuses_runs_with_different_contexts(trained_run, tmp_path, capsys):
    other = shutil.copytree(trained_run, tmp_path / "other")
    contexts = read_jsonl(other / "data/contexts.jsonl")
    contexts[0]["context_ids"] = contexts[0]["context_ids"][:-1] + [7]
    write_jsonl(other / "data/contexts.jsonl", contexts)
    shutil.rmtree(other / "generations")
    assert main(["compare", str(trained_run), str(other), "--decoders", "greedy", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "differs from" in err and "--contexts-from-first" in err
    assert not (tmp_path / "o").exists() and not (other / "generations").exists()


def test_unknown_decoder_parameter_fails_before_writing(trained_run, tmp_path, capsys):
    code = main(["compare", str(trained_run), "--decoders", "greedy,beam", "--out", str(tmp_path / "o"),
                 "generate.params.num_beams=2"])
    assert code == 2
    assert "not a parameter of decoder 'greedy'; its parameters: none" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_block_ngrams_never_reproduces_a_training_ngram(trained_run, tmp_path):
    n = 4
    result = compare([trained_run], ["greedy"], [12], block_ngrams=n, out=tmp_path)
    assert "final-greedy-L12-block4" in result["generated"]
    train = {tuple(r["input_ids"][i : i + n]) for r in read_jsonl(trained_run / "data/train.jsonl")
             for i in range(len(r["input_ids"]) - n + 1)}
    contexts = {c["id"]: c["context_ids"] for c in read_jsonl(trained_run / "data/contexts.jsonl")}
    for row in read_jsonl(trained_run / "generations/final-greedy-L12-block4.jsonl"):
        assert row["block_ngrams"] == n
        seq, start = contexts[row["context_id"]] + row["continuation_ids"], len(contexts[row["context_id"]])
        # every n-gram that ends on a generated token
        assert not [seq[i - n + 1 : i + 1] for i in range(start, len(seq)) if tuple(seq[i - n + 1 : i + 1]) in train]


def test_generate_stage_blocks_until_word_end(trained_run):
    """The paper's variant: a copy may finish its word; no training n-gram ends on a word-start token."""
    from transformers import AutoTokenizer

    from hyperfit.decoding.blocker import starts_word_from_tokenizer

    n = 4
    assert main(["generate", str(trained_run), f"generate.block_ngrams={n}", "generate.block_until_word_end=true",
                 "generate.max_new_tokens=12", "generate.tag=wordend"]) == 0
    starts = starts_word_from_tokenizer(AutoTokenizer.from_pretrained(trained_run / "checkpoints/final"))
    train = {tuple(r["input_ids"][i : i + n]) for r in read_jsonl(trained_run / "data/train.jsonl")
             for i in range(len(r["input_ids"]) - n + 1)}
    contexts = {c["id"]: c["context_ids"] for c in read_jsonl(trained_run / "data/contexts.jsonl")}
    rows = read_jsonl(trained_run / "generations/wordend.jsonl")
    assert rows and all(r["block_until_word_end"] is True for r in rows)
    for row in rows:
        seq, start = contexts[row["context_id"]] + row["continuation_ids"], len(contexts[row["context_id"]])
        copied = [i for i in range(start, len(seq)) if tuple(seq[i - n + 1 : i + 1]) in train]
        assert not [i for i in copied if starts[seq[i]]]


def test_a_human_row_of_shorter_texts_says_so_in_the_table(trained_run, tmp_path):
    # Stories that end before the compared length made a human row of shorter texts, unmarked in compare.md.
    result = compare([trained_run], ["greedy"], [120], out=str(tmp_path / "long"))
    human = [r for r in csv_rows(result["csv"]) if r["model"].startswith("human")]
    assert len(human) == 1 and "shorter than 120 tokens, median" in human[0]["model"]
    assert "shorter than 120 tokens" in result["markdown"].read_text()


def test_compare_after_run_reuses_the_runs_own_generations(tmp_path, tiny_llama, corpus_file, monkeypatch):
    # `hyperfit run` wrote greedy.jsonl and base-greedy.jsonl, and compare generated the same tokens again into
    # final-greedy-L24.jsonl and base-greedy-L24.jsonl (no shared key); the report then listed both rows.
    import hyperfit.stages.generate as G

    assert main(["run", *tiny_overrides(tiny_llama, corpus_file, tmp_path, "once"), "train.epochs=1"]) == 0
    run = tmp_path / "once"
    before = mtimes(run)
    monkeypatch.setattr(G, "load_checkpoint", lambda *a, **k: pytest.fail("compare loaded a model"))
    result = compare([run], ["greedy"])
    assert result["generated"] == [] and sorted(result["cached"]) == ["base-greedy", "greedy"]
    assert mtimes(run) == before and sorted(before) == ["base-greedy.jsonl", "greedy.jsonl"]
    assert main(["report", str(run)]) == 0
    assert "L24" not in (run / "report.md").read_text()  # each generation is listed once


def test_contexts_from_first_is_refused_across_tokenizers_and_kept_within_one(trained_run, tmp_path, corpus_file,
                                                                              capsys):
    # Another vocabulary (a tokenizer trained on other text): the first run's ids would be other text there.
    other_model = save_tiny_model(tmp_path / "other-tok", texts=[d.upper() for d in make_corpus()])
    assert main(["run", *tiny_overrides(other_model, corpus_file, tmp_path, "b"), "train.epochs=1",
                 "generate.with_base=false"]) == 0
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["compare", str(trained_run), str(tmp_path / "b"), "--decoders", "greedy", "--lengths", "8",
                 "--contexts-from-first", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "have different tokenizers (vocabularies differ)" in err and str(tmp_path / "b") in err
    assert "one tokenizer family" in err and "without --contexts-from-first" in err
    assert not out.exists() and not any((tmp_path / "b" / "generations").glob("*-L8.jsonl"))

    # The same tokenizer (the same base model trained again, other contexts): still continued from the first.
    same = shutil.copytree(trained_run, tmp_path / "same")
    contexts = read_jsonl(same / "data/contexts.jsonl")
    contexts[0]["context_ids"] = contexts[0]["context_ids"][:-1] + [7]
    write_jsonl(same / "data/contexts.jsonl", contexts)
    assert main(["compare", str(trained_run), str(same), "--decoders", "greedy", "--lengths", "8",
                 "--contexts-from-first", "--out", str(out)]) == 0
    assert {r["model"] for r in csv_rows(out / "compare.csv")} >= {"base", "cmp:final", "same:final"}
