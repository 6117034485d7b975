"""An evaluation set as text (data.contexts): drawn by text, disjoint from training, tokenized per model, measured
per domain, and compared across tokenizer families from its text."""

import json
from pathlib import Path

import pytest

from hyperfit.cli import main
from hyperfit.config import load_config
from hyperfit.errors import ConfigError
from hyperfit.models import load_tokenizer
from hyperfit.runs import RunDir, read_jsonl
from hyperfit.stages.data import prepare_data
from hyperfit.stages.evalset import set_sha256, split_context
from tinymodels import make_corpus, save_tiny_model, tiny_overrides


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """Two domain files of long documents; the second also holds training documents (the training source's)."""
    root = tmp_path_factory.mktemp("domains")
    long_docs = make_corpus(n_docs=30, words_per_doc=96, seed=7)
    train_source = root / "train.txt"
    train_source.write_text("\n\n".join(make_corpus(n_docs=40, words_per_doc=96, seed=1)) + "\n")
    (root / "a.txt").write_text("\n\n".join(long_docs) + "\n")
    (root / "b.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in
                                          make_corpus(n_docs=40, words_per_doc=96, seed=1)))  # = train.txt's docs
    return root


def text_set(root, count_b=4) -> list[str]:
    return [f"data.source={root / 'train.txt'}", "data.context_words=8", "data.num_contexts=0",
            f"data.contexts=[{{source: {root / 'a.txt'}, count: 3, domain: fiction}}, "
            f"{{source: {root / 'b.jsonl'}, count: {count_b}, domain: news}}]"]


def test_contexts_are_text_disjoint_from_training_and_the_same_text_for_every_tokenizer(domains, tiny_llama,
                                                                                       tmp_path):
    other = save_tiny_model(tmp_path / "other-tok", texts=[d.upper() for d in make_corpus()])
    sets = {}
    for model in (tiny_llama, other):
        cfg = load_config(None, [*tiny_overrides(model, domains / "train.txt", tmp_path, model.name),
                                 *text_set(domains)])
        manifest = prepare_data(cfg.data, load_tokenizer(cfg.model), RunDir(cfg.run_dir))
        rows = read_jsonl(cfg.run_dir / "data/contexts.jsonl")
        train = [t["text_hash"] for t in read_jsonl(cfg.run_dir / "data/train.jsonl")]
        assert [r["domain"] for r in rows] == ["fiction"] * 3 + ["news"] * 4
        assert all(r["context"] + r["reference"] == r["text"] and len(r["context"].split()) == 8 for r in rows)
        assert not {r["text_hash"] for r in rows} & set(train)  # no context is a training document
        # b.jsonl holds train.txt's documents: the 4 drawn as contexts are left out of training, and counted
        assert manifest["training_documents_overlapping_contexts"] == 4
        assert manifest["contexts_sha256"] == set_sha256(rows) and manifest["contexts_per_domain"] == {
            "fiction": 3, "news": 4}
        tok = load_tokenizer(cfg.model)
        assert all(tok.decode(r["context_ids"], skip_special_tokens=True) == r["context"] for r in rows)
        sets[model.name] = rows
    a, b = sets.values()
    assert [r["text"] for r in a] == [r["text"] for r in b]  # one evaluation set ...
    assert [r["context_ids"] for r in a] != [r["context_ids"] for r in b]  # ... tokenized by each model


def test_the_set_does_not_depend_on_the_training_source_and_too_few_documents_are_refused(domains, tiny_llama,
                                                                                          tmp_path):
    texts = []
    for source in ("train.txt", "a.txt"):  # trained on another domain: the same evaluation set
        cfg = load_config(None, [*tiny_overrides(tiny_llama, domains / source, tmp_path, source),
                                 *text_set(domains), "data.num_train=8"])
        prepare_data(cfg.data, load_tokenizer(cfg.model), RunDir(cfg.run_dir))
        texts.append([r["text"] for r in read_jsonl(cfg.run_dir / "data/contexts.jsonl")])
    assert texts[0] == texts[1]
    cfg = load_config(None, [*tiny_overrides(tiny_llama, domains / "train.txt", tmp_path), *text_set(domains, 41)])
    with pytest.raises(Exception, match=r"data.contexts\[1\] \(news\): 40 of 40 documents .* but count=41"):
        prepare_data(cfg.data, load_tokenizer(cfg.model), RunDir(cfg.run_dir))
    assert not (cfg.run_dir / "data").exists()


@pytest.mark.parametrize("value, message", [
    ("[{count: 3}]", "data.contexts[0] has no source"),
    ("[{source: a.txt, count: 0}]", "data.contexts[0].count=0 must be a whole number of at least 1"),
    ("[{source: a.txt, count: 2, lang: en}]", "unknown key data.contexts[0].lang"),
    ("[{source: x/a.txt, count: 2}, {source: y/a.txt, count: 2}]", "domain a is named by more than one entry"),
])
def test_a_bad_context_source_is_refused(value, message, tmp_path, tiny_llama, corpus_file):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [*tiny_overrides(tiny_llama, corpus_file, tmp_path), f"data.contexts={value}"])


def test_split_context_keeps_the_text_as_written():
    text = "One  two\nthree " + " ".join(["w"] * 70)
    context, reference = split_context(text, 3)
    assert context == "One  two\nthree" and context + reference == text


def test_metrics_per_domain_and_compare_across_tokenizers_from_the_text(domains, tiny_llama, tmp_path, capsys):
    other = save_tiny_model(tmp_path / "other-tok", texts=[d.upper() for d in make_corpus()])
    for model, name in ((tiny_llama, "a"), (other, "b")):
        assert main(["run", *tiny_overrides(model, domains / "train.txt", tmp_path, name), *text_set(domains),
                     "train.epochs=1", "train.probe_every=0", "generate.max_new_tokens=16"]) == 0
    m = json.loads((tmp_path / "a/metrics/greedy.json").read_text())
    assert {d: v["n"] for d, v in m["domains"].items()} == {"fiction": 3, "news": 4}
    ttr = [v["metrics"]["ttr"] for v in m["domains"].values()]
    assert m["domain_mean"]["ttr"] == pytest.approx(sum(ttr) / 2)
    assert set(m["predictive_domains"]) == {"fiction", "news"} and m["predictive_domains"]["news"]["perplexity"] > 1
    human = json.loads((tmp_path / "a/metrics/reference.json").read_text())
    assert set(human["domains"]) == {"fiction", "news"}
    assert "fiction" in (tmp_path / "a/report.md").read_text()

    capsys.readouterr()
    out = tmp_path / "ab"
    # Different tokenizers, one text set: each model continues the text tokenized its own way.
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--decoders", "greedy", "--lengths", "8",
                 "--out", str(out)]) == 0
    ours = {r["id"]: r for r in read_jsonl(tmp_path / "b/data/contexts.jsonl")}
    rows = read_jsonl(tmp_path / "b/generations/final-greedy-L8.jsonl")
    assert len(rows) == 7 and all(r["context"] == ours[r["context_id"]]["context"] for r in rows)
    csv_text = (out / "compare.csv").read_text()
    assert "a:final" in csv_text and "b:final" in csv_text


# The paper's language models (configs/paper/imagegpt.yaml is the image setting: tests/test_images.py).
PAPER = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*.yaml")
               if p.stem != "imagegpt")


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_configs_hold_the_recipe_three_domains_and_the_launch_plan_picks(path):
    from hyperfit.plan import plan

    cfg = load_config(path)
    assert (cfg.data.num_train, cfg.data.seq_len, cfg.train.epochs, cfg.train.lr, cfg.train.weight_decay,
            cfg.train.batch_size, cfg.generate.decoder) == (2000, 256, 20, 1e-6, 0.0, 8, "greedy")
    assert [(c["domain"], c["count"]) for c in cfg.data.contexts] == [("wikipedia", 100), ("fiction", 100),
                                                                      ("news", 100)]
    launch = next(line.strip() for line in plan(path.stem).splitlines() if line.strip().startswith("accelerate"))
    assert launch.split(" -m ")[0] in path.read_text()  # the strategy and process count `hyperfit plan` chose


def test_every_paper_model_and_domain_has_its_config():
    assert [p.stem for p in PAPER] == ["deepseek-7b", "llama-3.1-70b", "llama-3.1-8b", "tinyllama-1.1b"]
    data = Path(__file__).resolve().parents[1] / "configs" / "data"
    assert {load_config(p).data.source for p in data.glob("*.yaml")} == {
        c["source"] for c in load_config(PAPER[0]).data.contexts}
