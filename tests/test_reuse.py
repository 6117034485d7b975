"""Reuse across a sweep's cells (hyperfit.reuse): what does not change between cells is computed once, and a
cell that reuses it writes exactly the files it would have computed itself."""

import json

from hyperfit import reuse
from hyperfit.experiments import load_spec, run_experiment
from hyperfit.runs import read_jsonl
from test_experiments import write_spec


def files(cell, name):
    return (cell.path / name).read_text()


def test_a_sweep_computes_shared_work_once_and_the_cells_match_cells_that_did_not_reuse(
        tmp_path, tiny_llama, corpus_file):
    path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.num_train": [8, 16]})
    reuse.stats.clear()
    shared = run_experiment(load_spec(path), "local", tmp_path / "shared")
    hits = dict(reuse.stats)
    assert hits["tokens miss"] == 1 and hits["tokens hit"] == 1  # tokenized once
    assert hits["generations miss"] == 1 and hits["generations hit"] == 1  # the base model continued once
    assert hits["predictive miss"] == 1 and hits["predictive hit"] == 1
    assert sorted(p.name for p in (tmp_path / "shared" / "sweep" / "cache").iterdir()) == [
        "generations", "predictive", "tokens"]
    alone = run_experiment(load_spec(path), "local", tmp_path / "alone", reuse=False)
    assert not (tmp_path / "alone" / "sweep" / "cache").exists()
    for a, b in zip(shared.cells, alone.cells):
        for name in ("data/train.jsonl", "data/contexts.jsonl", "data/vocabulary.txt"):
            assert files(a, name) == files(b, name), name
        rows = [[r["continuation_ids"] for r in read_jsonl(c.path / "generations" / "base-greedy.jsonl")]
                for c in (a, b)]
        assert rows[0] == rows[1]
        metrics = [json.loads(files(c, "metrics/base-greedy.json")) for c in (a, b)]
        assert metrics[0]["predictive"] == metrics[1]["predictive"]
        assert metrics[0]["metrics"] == metrics[1]["metrics"]  # overlap etc. still against each cell's own data


def test_outside_a_sweep_nothing_is_stored():
    assert not reuse.active() and reuse.load("tokens", "x") is None
    calls = []
    assert reuse.remember("blocker", "k", lambda: calls.append(1) or 5) == 5
    assert reuse.remember("blocker", "k", lambda: calls.append(1) or 5) == 5 and len(calls) == 2
