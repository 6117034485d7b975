"""`hyperfit experiment` (hyperfit.experiments): cells are ordinary run directories, cached by content, resumable
after a kill, independent of each other's failures, and run the same through submitit's local executor."""

import csv
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import yaml

import hyperfit.stages.pipeline
import hyperfit.training
from hyperfit.cli import main
from hyperfit.config import TrainConfig
from hyperfit.errors import ConfigError
from hyperfit.experiments import Cell, Spec, aggregate, is_spec, load_spec, plan_cells, read_status, run_experiment
from hyperfit.experiments import seeds as seed_summary
from hyperfit.experiments.cells import record
from hyperfit.runs import write_json
from tinymodels import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
# Seconds per cell: one epoch, no probes, no epoch checkpoints (what a sweep cell wants anyway).
CHEAP = {"train.epochs": 1, "train.probe_every": 0, "train.save_every": 0}


def write_spec(tmp_path, model, corpus, axes, name="sweep", **sections) -> Path:
    """A spec over the tiny model: every setting of tests/tinymodels.tiny_overrides as a base override."""
    settings = tiny_overrides(model, corpus, tmp_path)
    base = {k: v for k, v in (o.split("=", 1) for o in settings) if k not in ("name", "out_dir", *axes)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": {"overrides": {**base, **CHEAP}}, "axes": axes, **sections}))
    return path


def counting_runs(monkeypatch, fail: dict | None = None) -> list[tuple[str, bool]]:
    """Every pipeline run a sweep makes, as (cell folder, resume); `fail` maps a cell name prefix to the exception
    its run raises before doing anything."""
    real, calls = hyperfit.stages.pipeline.run, []

    def run(cfg, resume=False):
        calls.append((cfg.name, resume))
        for prefix, error in (fail or {}).items():
            if cfg.name.startswith(prefix):
                raise error
        return real(cfg, resume=resume)

    monkeypatch.setattr(hyperfit.stages.pipeline, "run", run)
    return calls


def results(root: Path) -> list[dict]:
    with open(root / "results.csv") as f:
        return list(csv.DictReader(f))


def test_cells_are_run_directories_a_rerun_reuses_them_and_a_new_value_adds_one(
        tmp_path, tiny_llama, corpus_file, monkeypatch, capsys):
    spec_path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.num_train": [8, 16]}, plots=["ttr_vs_samples"])
    out = tmp_path / "out"
    calls = counting_runs(monkeypatch)
    summary = run_experiment(load_spec(spec_path), "local", out)
    assert len(calls) == 2 and not summary.failed
    root = out / "sweep"
    for cell in summary.cells:  # what `hyperfit run` writes, plus the cell's status
        assert cell.path.parent == root / "cells" and cell.path.name.startswith(cell.name + "@")
        for f in ("config.yaml", "data/train.jsonl", "checkpoints/final/model.safetensors", "metrics/greedy.json",
                  "metrics/base-greedy.json", "report.md"):
            assert (cell.path / f).exists(), f
        assert read_status(cell.path)["status"] == "done"
    rows = results(root)
    assert [(r["cell"], r["data.num_train"], r["status"]) for r in rows] == [
        ("num_train=8", "8", "done"), ("num_train=16", "16", "done")]
    assert all(r["ttr"] and r["base_ttr"] and r["final_train_loss"] and r["val_loss"] for r in rows)
    assert "| num_train=16 | 16 | done |" in (root / "report.md").read_text()
    assert (root / "plots" / "ttr_vs_samples.png").stat().st_size > 1000
    assert "cell 2/2 num_train=16: done in" in capsys.readouterr().out

    again = run_experiment(load_spec(spec_path), "local", out)  # nothing changed: nothing trains
    assert len(calls) == 2 and again.cached == ["num_train=8", "num_train=16"]
    assert capsys.readouterr().out.count(": cached") == 2

    more = run_experiment(load_spec(spec_path, overrides=["data.num_train=[8,16,12]"]), "local", out)
    assert [c[0].split("@")[0] for c in calls[2:]] == ["num_train=12"] and more.done == ["num_train=12"]
    assert len(results(root)) == 3


def test_a_failed_cell_does_not_stop_the_others_and_a_killed_sweep_finishes_only_what_is_missing(
        tmp_path, tiny_llama, corpus_file, monkeypatch, capsys):
    spec_path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.num_train": [8, 12, 16]})
    argv = ["experiment", str(spec_path), "--out", str(tmp_path / "out")]
    root = tmp_path / "out" / "sweep"
    real_run = hyperfit.stages.pipeline.run
    counting_runs(monkeypatch, fail={"num_train=12@": RuntimeError("disk on fire")})
    real_train, trained = hyperfit.training.train, []

    def killed_in_the_third_cell(*args, **kw):  # Ctrl-C (or a scheduler's SIGTERM) after data/ is written
        trained.append(1)
        if len(trained) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kw)

    monkeypatch.setattr(hyperfit.training, "train", killed_in_the_third_cell)
    assert main(argv) == 130
    out = capsys.readouterr().out
    assert "cell 2/3 num_train=12: FAILED: RuntimeError: disk on fire" in out
    cells = {c.name: c for c in plan_cells(load_spec(spec_path), root)}
    assert read_status(cells["num_train=8"].path)["status"] == "done"
    assert "disk on fire" in (cells["num_train=12"].path / "error.txt").read_text()
    assert read_status(cells["num_train=16"].path)["status"] == "interrupted"
    assert "num_train=12: RuntimeError: disk on fire" in (root / "report.md").read_text()  # written after the kill

    monkeypatch.setattr(hyperfit.training, "train", real_train)
    monkeypatch.setattr(hyperfit.stages.pipeline, "run", real_run)
    calls = counting_runs(monkeypatch)  # no more faults
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "cell 1/3 num_train=8: cached" in out and "3 cells: 1 cached, 2 run, 0 failed" in out
    reran = [(name.split("@")[0], resume) for name, resume in calls]
    # the failed cell starts over (it had written nothing), the interrupted one resumes its run directory
    assert reran == [("num_train=12", False), ("num_train=16", True)]
    assert not (cells["num_train=12"].path / "error.txt").exists()
    assert [r["status"] for r in results(root)] == ["done"] * 3


def test_a_failed_cell_makes_the_command_exit_1_and_is_reported(tmp_path, tiny_llama, corpus_file, monkeypatch,
                                                                  capsys):
    spec_path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.num_train": [8]})
    counting_runs(monkeypatch, fail={"num_train=8@": ValueError("bad luck")})
    assert main(["experiment", str(spec_path), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "1 cells: 0 cached, 0 run, 1 failed (num_train=8)" in out
    row = results(tmp_path / "out" / "sweep")[0]
    assert row["status"] == "failed" and row["ttr"] == ""


def test_submitit_runs_the_cells_through_its_local_executor(tmp_path, tiny_llama, corpus_file):
    pytest.importorskip("submitit")
    spec_path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.num_train": [8]}, name="slurmish",
                           submitit={"cluster": "local", "poll_s": 0.5, "timeout_min": 10})
    summary = run_experiment(load_spec(spec_path), "submitit", tmp_path / "out")
    (cell,) = summary.cells
    assert summary.done == ["num_train=8"], (cell.path / "error.txt").read_text() if summary.failed else ""
    assert (cell.path / "checkpoints/final/model.safetensors").is_file() and read_status(cell.path)["host"]
    assert list((tmp_path / "out" / "slurmish" / "submitit").glob("*/*_result.pkl"))  # submitit's own files
    assert run_experiment(load_spec(spec_path), "submitit", tmp_path / "out").cached == ["num_train=8"]


# ---------------------------------------------------------------------------------------------------------
# Specs and cells without training


def test_cell_names_and_content_keys(tmp_path, tiny_llama, corpus_file):
    spec_path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.num_train": [8, 16], "data.seed": [0, 1],
                                                               "train.seed": [0]})
    cells = plan_cells(load_spec(spec_path), tmp_path / "x")
    assert [c.name for c in cells][:2] == ["num_train=8,data.seed=0,train.seed=0",
                                           "num_train=8,data.seed=1,train.seed=0"]
    assert len({c.key for c in cells}) == 4 and all(c.config["name"] == c.path.name for c in cells)
    changed = plan_cells(load_spec(spec_path, overrides=["train.lr=1e-3"]), tmp_path / "x")
    assert not {c.key for c in cells} & {c.key for c in changed}  # a changed setting: new cells, old ones kept
    elsewhere = plan_cells(load_spec(spec_path), tmp_path / "y")
    assert [c.key for c in elsewhere] == [c.key for c in cells]  # where a cell lives is not what it computes


@pytest.mark.parametrize("doc, message", [
    ({"axes": {"data.num_train": [8]}, "axis": 1}, "unknown key axis; known: name, base, axes"),
    ({"base": {"overrides": {"data.source": "x"}}}, "no axes: section, so this is not an experiment spec"),
    ({"axes": {"data.num_train": [8]}, "fast": {"axes": {"data.seed": [0]}}}, "fast.axes.data.seed: not an axis"),
    ({"axes": {"data.num_train": [8]}, "plots": ["ttr_vs_sample"]}, "Did you mean ttr_vs_samples?"),
    ({"axes": {"data.seed": [0]}, "plots": ["ttr_vs_samples"]}, "draws against data.num_train, which is not an axis"),
    ({"axes": {"data.num_train": []}}, "axis data.num_train has no values"),
    ({"base": {"config": "nope.yaml"}, "axes": {"data.seed": [0]}}, "base.config: 'nope.yaml' does not exist"),
    ({"base": {"overrides": {"data.seed": 1}}, "axes": {"data.seed": [0]}}, "data.seed is both an override and"),
])
def test_a_bad_spec_is_refused_naming_the_problem(tmp_path, doc, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        load_spec(path)


def test_an_invalid_cell_config_is_refused_before_anything_runs(tmp_path, tiny_llama, corpus_file, capsys):
    spec_path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.num_train": [8, -1], "train.lrr": [1]})
    assert main(["experiment", str(spec_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2 of 2 cells have an invalid config" in err and "did you mean train.lr?" in err
    assert not (tmp_path / "out").exists()


def test_the_fast_cut_and_command_line_overrides(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump({"base": {"overrides": {"data.source": "x.txt"}},
                                    "axes": {"data.num_train": [8, 16, 32], "data.seed": [0, 1]},
                                    "fast": {"overrides": {"data.seq_len": 64}, "axes": {"data.num_train": [8]}}}))
    fast = load_spec(path, fast=True, overrides=["data.seed=1", "train.lr=0.01"])
    assert fast.name == "q-fast" and fast.axes == {"data.num_train": (8,), "data.seed": (1,)}
    assert fast.overrides == ("data.source=x.txt", "data.seq_len=64", "train.lr=0.01")
    assert load_spec(path).name == "q" and len(plan_cells(load_spec(path), tmp_path)) == 6


def test_the_shipped_specs_are_specs_with_a_command_in_their_header():
    specs = sorted((ROOT / "configs" / "experiments").glob("*.yaml"))
    specs = [p for p in specs if is_spec(p)]
    assert {"quantity.yaml", "diversity.yaml", "entropy.yaml", "shuffle.yaml", "grokking.yaml",
            "early-stop.yaml", "lora.yaml", "table1.yaml",
            "data-type.yaml"} <= {p.name for p in specs}
    for path in specs:
        header = path.read_text().split("\n\n")[0]
        assert header.startswith("#") and f"hyperfit experiment configs/experiments/{path.name}" in header
        load_spec(path), load_spec(path, fast=True)


@pytest.mark.skipif("updates" not in {f.name for f in dataclasses.fields(TrainConfig)},
                    reason="configs/experiments/quantity.yaml sets train.updates, which lands on another branch")
def test_the_quantity_recipe_resolves_every_cell(tmp_path):
    cells = plan_cells(load_spec(ROOT / "configs/experiments/quantity.yaml"), tmp_path)
    assert len(cells) == 12 and {c.config["train"]["updates"] for c in cells} == {960}
    fast = plan_cells(load_spec(ROOT / "configs/experiments/quantity.yaml", fast=True), tmp_path)
    assert [c.name for c in fast] == ["num_train=8,seed=0", "num_train=32,seed=0"]
    assert json.dumps(fast[0].config)  # plain data: what submitit pickles into a job


def fake_cell(root: Path, values: dict, status: str, ttr: float | None = None) -> Cell:
    """A cell folder as a finished (or failed) sweep leaves it, without training: cell.json and metrics/greedy.json."""
    name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in values.items())
    path = root / "cells" / f"{name}@0"
    record(path, "0", status)
    if ttr is not None:
        write_json(path / "metrics" / "greedy.json", {"decoder": "greedy", "checkpoint": "final",
                                                      "metrics": {"ttr": {"value": ttr}}, "predictive": {"loss": 2.0}})
    return Cell(name, values, {"generate": {"decoder": "greedy", "checkpoint": "final"}}, "0", path)


def test_a_seed_axis_adds_mean_and_confidence_interval_per_combination_of_the_other_axes(tmp_path):
    axes = {"data.num_train": (8, 16), "train.seed": (0, 1, 2)}
    spec = Spec("seeds", tmp_path / "seeds.yaml", None, (), axes)
    ttrs = {(8, 0): 0.5, (8, 1): 0.6, (8, 2): 0.7, (16, 0): 0.8, (16, 1): 0.9}
    cells = [fake_cell(tmp_path, {"data.num_train": n, "train.seed": s}, "done" if (n, s) in ttrs else "failed",
                       ttrs.get((n, s))) for n in axes["data.num_train"] for s in axes["train.seed"]]
    report = aggregate(spec, cells, tmp_path, "hyperfit experiment seeds.yaml").read_text()
    with open(tmp_path / "results_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["data.num_train"], r["n"], r["seeds"]) for r in rows] == [("8", "3", "0 1 2"), ("16", "2", "0 1")]
    assert float(rows[0]["ttr_mean"]) == pytest.approx(0.6)
    assert float(rows[0]["ttr_ci95"]) == pytest.approx(4.303 * 0.1 / 3 ** 0.5, rel=1e-3)  # t(0.975, df=2)
    assert float(rows[1]["ttr_ci95"]) == pytest.approx(12.706 * 0.1 / 2 ** 0.5 / 2 ** 0.5, rel=1e-3)
    assert float(rows[0]["val_loss_mean"]) == 2.0 and float(rows[0]["val_loss_ci95"]) == 0.0
    assert "ttr_words_mean" not in rows[0]  # no number anywhere: no column
    assert "## Over seeds" in report and "| 8 | 3 | 2 ± 0 | 0.6 ± 0.25 |" in report
    assert "| 16 | 2 | 2 ± 0 | 0.85 ± 0.64 |" in report

    one_seed = Spec("seeds", tmp_path / "seeds.yaml", None, (), {"data.num_train": (8, 16)})
    report = aggregate(one_seed, cells[::3], tmp_path, "hyperfit experiment seeds.yaml").read_text()
    assert "Over seeds" not in report and not (tmp_path / "results_summary.csv").exists()


def test_the_t_quantile_table_agrees_with_scipy(monkeypatch):
    pytest.importorskip("scipy")
    exact = {df: seed_summary.t_quantile(df) for df in (1, 2, 4, 9, 30, 45, 200)}
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # as without the study extra
    for df, value in exact.items():
        assert value - 1e-3 <= seed_summary.t_quantile(df) <= value * 1.04, df  # 3 decimals; errs on the wide side
    assert seed_summary.mean_ci([1.0]) == (1.0, None) and seed_summary.mean_ci([]) == (None, None)


def test_a_fixed_update_sweep_probes_only_when_asked_and_keeps_final_weights_only(tmp_path, tiny_llama, corpus_file):
    from hyperfit.training.budget import Budget

    path = write_spec(tmp_path, tiny_llama, corpus_file, {"data.num_train": [8, 16]})
    asked = load_spec(path, overrides=["train.updates=40", "train.probe_every=5"])
    for cell in plan_cells(asked, tmp_path):  # the base says probe_every: 5 (epochs): a cell still probes none
        train = TrainConfig(**{**cell.config["train"], "betas": tuple(cell.config["train"]["betas"])})
        assert train.probe_every_updates == 0 and Budget.of(train, 8).cadence() == "no probes, final weights only"
    probing = load_spec(path, overrides=["train.updates=40", "train.probe_every_updates=10"])
    assert {c.config["train"]["probe_every_updates"] for c in plan_cells(probing, tmp_path)} == {10}
    epochs = load_spec(path, overrides=["train.probe_every=1"])  # an epoch budget is left as it is
    assert {c.config["train"]["probe_every_updates"] for c in plan_cells(epochs, tmp_path)} == {None}
