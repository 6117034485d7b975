"""`hyperfit bench`: the real lm-evaluation-harness, through its Python API, on a run's original and hyperfitted
models, with the shipped local tasks built from held-out text (offline)."""

import json

import pytest

from hyperfit.bench import LOCAL_TASKS, bench
from hyperfit.bench.local import build_local_data, cloze_items, held_out_documents
from hyperfit.config import DataConfig
from hyperfit.errors import RunError
from hyperfit.runs import RunDir, read_jsonl
from hyperfit.stages.data import read_documents, text_hash
from hyperfit.training import train
from test_train import prepared

pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (pip install 'hyperfit[bench]')")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama, corpus_file):
    tmp = tmp_path_factory.mktemp("bench")
    cfg, run = prepared(tmp, tiny_llama, corpus_file, "train.epochs=2", "train.probe_every=0", "train.save_every=0")
    train(cfg.train, cfg.model, run)
    return run


def test_bench_runs_the_harness_on_both_models_and_reports_before_and_after(trained_run, corpus_file):
    path = bench(trained_run, limit=6, batch_size=4)  # text: the run's own data.source
    result = json.loads(path.read_text())
    assert path.name == "bench-hyperfit_cloze-hyperfit_ppl.json" and result["tasks"] == list(LOCAL_TASKS)
    for which in ("base", "final"):
        cloze, ppl = result["models"][which]["hyperfit_cloze"], result["models"][which]["hyperfit_ppl"]
        assert 0 <= cloze["acc"] <= 1 and ppl["word_perplexity"] > 1 and ppl["bits_per_byte"] > 0
    # Training changed the model, so the harness sees different numbers for it.
    assert result["models"]["base"]["hyperfit_ppl"] != result["models"]["final"]["hyperfit_ppl"]
    from hyperfit.stages.report import report

    text = report([trained_run]).read_text()
    assert "## Benchmarks" in text and "| hyperfit_ppl | word_perplexity |" in text
    # A rerun with the same settings evaluates nothing again.
    before = path.stat().st_mtime_ns
    bench(trained_run, limit=6, text=str(corpus_file), batch_size=4)
    assert path.stat().st_mtime_ns == before


def test_local_tasks_leave_out_every_document_the_run_used(trained_run, corpus_file):
    used = {r["text_hash"] for s in ("train", "val", "contexts") for r in read_jsonl(trained_run.data_file(s))}
    kept = set(held_out_documents(corpus_file, trained_run))
    docs = read_documents(DataConfig(source=str(corpus_file)))
    assert kept and len(kept) == len({text_hash(d) for d in docs} - used)  # the corpus' docs are all 20+ words
    assert not any(" ".join(d.split()) in kept for d in docs if text_hash(d) in used)
    data = build_local_data(list(LOCAL_TASKS), trained_run, corpus_file)
    items = read_jsonl(data["hyperfit_cloze"])
    assert all(len(set(i["choices"])) == 4 and 0 <= i["label"] < 4 for i in items)


def test_the_cloze_answer_is_the_last_word_and_the_distractors_are_other_last_words():
    items = cloze_items(["one two three dog.", "four five cat!", "six seven sun", "eight nine hat."], 4)
    assert [i["choices"][i["label"]] for i in items] == ["dog", "cat", "sun", "hat"]
    assert all(set(i["choices"]) == {"dog", "cat", "sun", "hat"} for i in items)


def test_bench_without_text_or_training_says_what_to_do(tmp_path, tiny_llama, corpus_file, monkeypatch):
    monkeypatch.delenv("HYPERFIT_ASSETS", raising=False)
    source = tmp_path / "gone.txt"
    source.write_text(corpus_file.read_text())
    cfg, run = prepared(tmp_path, tiny_llama, source)
    with pytest.raises(RunError, match="train first"):
        bench(run)
    (run.checkpoints / "final").mkdir(parents=True)
    source.unlink()  # the run's own data.source is the default text: without it, and without --text, say so
    with pytest.raises(RunError, match="--text FILE"):
        bench(RunDir(run.path))
