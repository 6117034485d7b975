"""The paper's recipes (hyperfit.experiments.recipes): each spec's cells → the recipe's table, CSV and plots in
report.md. Fast cuts on the tiny in-process model; the shipped specs' own fast cuts on stories260K are slow."""

import csv
import json

import pytest
import torch

from hyperfit.errors import ConfigError
from hyperfit.experiments import load_spec, run_experiment
from hyperfit.experiments.recipes import RECIPES
from hyperfit.experiments.recipes.shuffle import pair_kind
from hyperfit.training.loop import epoch_order, swap_batches
from test_experiments import ROOT, write_spec
from tinymodels import ASSETS, needs_assets

UPDATES = ["train.updates=6"]


def sweep(tmp_path, tiny_llama, corpus_file, recipe, axes, overrides=UPDATES):
    path = write_spec(tmp_path, tiny_llama, corpus_file, axes, recipe=recipe)
    summary = run_experiment(load_spec(path, overrides=overrides), "local", tmp_path / "out")
    assert not summary.failed, summary.line()
    root = tmp_path / "out" / "sweep"
    return root, (root / "report.md").read_text()


def table(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_diversity_gives_averages_and_maxima_in_tokens_and_words_and_the_overlap_histogram(
        tmp_path, tiny_llama, corpus_file):
    root, report = sweep(tmp_path, tiny_llama, corpus_file, "diversity", {"data.seed": [0, 1]})
    assert "## Table 2" in report and (root / "plots" / "overlap_histogram.png").stat().st_size > 1000
    rows = table(root / "diversity.csv")
    assert {r["model"] for r in rows} == {"hyperfitted", "original", "human"} and len(rows) == 6
    for r in rows:
        for m in ("self_bleu", "dataset_bleu", "longest_overlap", "longest_overlap_words"):
            assert float(r[f"{m}_max"]) >= float(r[f"{m}_avg"]) >= 0
        assert float(r["longest_overlap_words_max"]) <= float(r["longest_overlap_max"]) + 1  # words are longer
    cells = table(root / "results.csv")  # the sweep's own table carries the maxima too
    assert all(float(c["self_bleu_max"]) >= float(c["self_bleu"]) for c in cells)


def test_entropy_table_before_and_after(tmp_path, tiny_llama, corpus_file):
    root, report = sweep(tmp_path, tiny_llama, corpus_file, "entropy", {"data.seed": [0]},
                         ["train.updates=24", "train.lr=1e-2"])
    rows = {r["model"]: r for r in table(root / "entropy.csv")}
    assert set(rows) == {"before", "after"} and "## Table 3" in report
    # Hyperfitting sharpens the distributions: less entropy, more top-1 mass.
    assert float(rows["after"]["entropy"]) < float(rows["before"]["entropy"])
    assert float(rows["after"]["top1_mass"]) > float(rows["before"]["top1_mass"])


@pytest.mark.slow  # four cells and five models to compare: ~30 s on a free core
def test_shuffle_heatmap_groups_pairs_by_what_differs_and_reuses_the_matrix(tmp_path, tiny_llama, corpus_file):
    root, report = sweep(tmp_path, tiny_llama, corpus_file, "shuffle",
                         {"train.seed": [0, 1], "train.order_swaps": [0, 1]})
    result = json.loads((root / "agreement.json").read_text())
    assert result["models"][0] == "original" and len(result["matrix"]) == 5
    assert all(result["matrix"][i][i] == 1.0 for i in range(5))
    assert "| train.order_swaps | 2 |" in report and "| train.seed | 2 |" in report and "| 0.700 |" in report
    assert (root / "plots" / "agreement_heatmap.png").stat().st_size > 1000
    mtime = (root / "agreement.json").stat().st_mtime_ns
    run_experiment(load_spec(root.parent.parent / "sweep.yaml", overrides=UPDATES), "local", tmp_path / "out")
    assert (root / "agreement.json").stat().st_mtime_ns == mtime  # same finished cells: not recomputed


def test_order_swaps_swap_whole_batches_of_the_first_epoch_only():
    order = epoch_order(16, seed=3, epoch=1)
    swapped = swap_batches(order, batch_size=4, swaps=1, seed=3)
    assert sorted(swapped.tolist()) == list(range(16)) and not torch.equal(order, swapped)
    batches = lambda o: sorted(tuple(sorted(o[i:i + 4].tolist())) for i in range(0, 16, 4))  # noqa: E731
    assert batches(order) == batches(swapped)  # the same batches, in another sequence
    assert torch.equal(swap_batches(order, 4, 0, 3), order) and torch.equal(swap_batches(order[:4], 4, 5, 3), order[:4])
    two = order[:8]  # two batches: any number of swaps is one swap, never two that cancel
    assert torch.equal(swap_batches(two, 4, 2, 3), torch.cat([two[4:], two[:4]]))
    assert pair_kind({"a": 1, "b": 2}, {"a": 1, "b": 3}) == "b"


@pytest.mark.slow  # probes every 10 updates: ~30 s on a free core
def test_grokking_reads_the_probe_curves_and_finds_the_zero_loss_step(tmp_path, tiny_llama, corpus_file):
    root, report = sweep(tmp_path, tiny_llama, corpus_file, "grokking", {"train.weight_decay": [0.0, 0.5]},
                         ["train.updates=30", "train.probe_every_updates=10", "train.lr=3e-2"])
    rows = table(root / "grokking.csv")
    assert [r["cell"] for r in rows] == ["weight_decay=0.0", "weight_decay=0.5"]
    assert all(r["final_step"] == "30" and r["best_val_step"] for r in rows)
    assert "## Grokking" in report and (root / "plots" / "grokking_curves.png").stat().st_size > 1000


def test_early_stop_continues_the_checkpoint_at_the_validation_minimum(tmp_path, tiny_llama, corpus_file):
    root, report = sweep(tmp_path, tiny_llama, corpus_file, "early-stop", {"data.seed": [0]},
                         ["train.updates=20", "train.probe_every_updates=5", "train.save_every_updates=5",
                          "train.keep_checkpoints=10"])
    rows = table(root / "early_stop.csv")
    assert [r["model"] for r in rows] == ["original", "early-stopped (val-loss minimum)", "hyperfitted"]
    step = int(rows[1]["step"])
    assert step in (0, 5, 10, 15, 20) and rows[1]["ttr"]
    cell = next((root / "cells").iterdir())
    if step:  # the best checkpoint's continuations, made once
        assert (cell / "generations" / "early-stop.jsonl").is_file()
        assert (cell / "metrics" / "early-stop.json").is_file()
    assert "## Early stopping" in report


def test_an_unknown_recipe_is_refused(tmp_path, tiny_llama, corpus_file):
    path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.seed": [0]}, recipe="diversty")
    with pytest.raises(ConfigError, match="Did you mean diversity"):
        load_spec(path)


@pytest.mark.slow
@needs_assets()
@pytest.mark.parametrize("spec, heading", [("diversity", "## Table 2"), ("entropy", "## Table 3"),
                                           ("shuffle", "## Fig. 5 left"), ("grokking", "## Grokking"),
                                           ("early-stop", "## Early stopping")])
def test_each_shipped_recipe_runs_its_cut_on_stories260K(tmp_path, spec, heading):
    """The CI cut of each shipped spec on the real model: its fast cut, shrunk further (few updates, few texts)."""
    from hyperfit.demo import find_assets
    from hyperfit.llama2c import import_llama2c

    llama2c, text = find_assets(str(ASSETS), tmp_path)
    import_llama2c(llama2c, tmp_path / "stories260K-hf")
    shrink = [f"model.name={tmp_path / 'stories260K-hf'}", f"data.source={text}", "train.updates=4",
              "data.seq_len=48", "data.context_len=16", "data.num_train=16", "data.num_val=4", "data.num_contexts=4",
              "data.max_documents=300",
              "generate.max_new_tokens=16", "evaluate.window=16", "train.probe_contexts=2", "train.probe_new_tokens=8"]
    if spec in ("grokking", "early-stop"):
        shrink += ["train.probe_every_updates=2"] + (["train.save_every_updates=2"] if spec == "early-stop" else [])
    loaded = load_spec(ROOT / "configs" / "experiments" / f"{spec}.yaml", fast=True, overrides=shrink)
    summary = run_experiment(loaded, "local", tmp_path / "out")
    assert not summary.failed, summary.line()
    report = (tmp_path / "out" / f"{spec}-fast" / "report.md").read_text()
    assert heading in report and "(no finished cell" not in report.split(heading)[1]
    assert spec in RECIPES or spec.replace("-", "_") in {m for m, _ in RECIPES.values()}
