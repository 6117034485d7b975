"""train.updates: a fixed number of optimizer updates (the paper's data-quantity study), with probes and
checkpoints counted in updates. 16 samples at batch 4 make 4 updates per epoch throughout."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from hyperfit.config import ConfigError, TrainConfig, load_config
from hyperfit.errors import TrainError
from hyperfit.runs import RunError, read_jsonl
from hyperfit.training import train
from test_train import prepared, step_losses
from tinymodels import crash_at_update, tiny_overrides

BATCH = ("train.batch_size=4", "train.log_every=1")


def rows(run, kind):
    return [r for r in read_jsonl(run.train_log) if r["type"] == kind]


def weights(run):
    return load_file(run.final / "model.safetensors")


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory, tiny_llama, corpus_file):
    """The epoch-budget reference: 3 epochs = 12 updates, a probe after each epoch."""
    cfg, run = prepared(tmp_path_factory.mktemp("ref"), tiny_llama, corpus_file, *BATCH, "train.epochs=3",
                        "train.probe_every=1", "train.save_every=0", name="epochs")
    train(cfg.train, cfg.model, run)
    return run


def test_an_update_budget_that_divides_into_epochs_is_the_same_run_as_those_epochs(
        tmp_path, tiny_llama, corpus_file, three_epochs):
    # train.epochs=3 (tiny_overrides) is ignored: updates wins. A probe every 4 updates = every epoch.
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *BATCH, "train.epochs=7", "train.updates=12",
                        "train.probe_every_updates=4")
    summary = train(cfg.train, cfg.model, run)
    assert summary["steps"] == 12 and summary["epochs_run"] == 3
    assert summary["budget"] == "12 updates (train.updates) = 3 epochs"
    assert read_jsonl(run.train_log) == read_jsonl(three_epochs.train_log)  # losses, probes, examples: all of it
    a, b = weights(run), weights(three_epochs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert run.epoch_checkpoints() == []  # no save cadence asked: final weights only


def test_a_budget_that_ends_inside_an_epoch_stops_at_exactly_that_update(tmp_path, tiny_llama, corpus_file,
                                                                          three_epochs):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *BATCH, "train.updates=10", "train.probe_every_updates=3",
                        "train.save_every_updates=3", "train.keep_checkpoints=10")
    summary = train(cfg.train, cfg.model, run)
    assert summary["steps"] == 10 and summary["epochs_run"] == 3
    assert summary["budget"] == "10 updates (train.updates) = 2 epochs + 2 updates"
    # The partial last epoch takes the first batches of the same seeded order a full third epoch has.
    assert step_losses(run) == step_losses(three_epochs)[:10]
    assert [r["step"] for r in rows(run, "step")] == list(range(1, 11))
    assert [(p["epoch"], p["step"]) for p in rows(run, "probe")] == [(0, 0), (1, 3), (2, 6), (3, 9), (3, 10)]
    assert [(e["epoch"], e["step"]) for e in rows(run, "epoch")] == [(1, 4), (2, 8)]
    assert rows(run, "probe")[-1]["train_loss_epoch"] is not None  # the partial epoch's mean, 2 updates
    assert [p.name for p in run.epoch_checkpoints()] == [f"step-{n:07d}" for n in (3, 6, 9, 10)]
    card = (run.final / "README.md").read_text()
    assert "| updates run | 10 |" in card and "3 (the last one partial)" in card


def test_resume_from_a_checkpoint_inside_an_epoch_continues_to_exactly_the_budget(
        tmp_path, tiny_llama, corpus_file, monkeypatch, three_epochs):

    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *BATCH, "train.updates=10", "train.probe_every_updates=0",
                        "train.save_every_updates=3")
    resume_updates = crash_at_update(monkeypatch, 8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg.train, cfg.model, run)
    resume_updates()
    assert [p.name for p in run.epoch_checkpoints()] == ["step-0000006"]  # 2 updates into epoch 2
    summary = train(cfg.train, cfg.model, run, resume=True)
    assert summary["steps"] == 10 and step_losses(run) == pytest.approx(step_losses(three_epochs)[:10], rel=1e-6)
    epochs = rows(run, "epoch")
    assert [e["step"] for e in epochs] == [4, 8, 10]
    # Epoch 2's mean joins the loss carried in the checkpoint with the updates after it.
    reference = [p["train_loss_epoch"] for p in rows(three_epochs, "probe")[1:3]]
    assert [e["train_loss_epoch"] for e in epochs[:2]] == pytest.approx(reference, rel=1e-6)
    with pytest.raises(TrainError, match="resume with train.updates"):  # step-NNNNNNN under an epoch budget
        train(dataclasses.replace(cfg.train, updates=None), cfg.model, run, resume=True)


def test_an_update_budget_probes_ten_times_and_keeps_only_the_final_weights_by_default(
        tmp_path, tiny_llama, corpus_file):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *BATCH, "train.updates=20", "train.log_every=5")
    train(cfg.train, cfg.model, run)
    assert [p["step"] for p in rows(run, "probe")] == list(range(0, 21, 2))
    assert run.epoch_checkpoints() == [] and (run.final / "model.safetensors").is_file()
    with pytest.raises(RunError, match="save_every_updates"):
        train(dataclasses.replace(cfg.train, updates=30), cfg.model, run, resume=True)


@pytest.mark.parametrize("override, message", [
    ("train.updates=0", "train.updates=0 must be at least 1"),
    ("train.probe_every_updates=-1", "train.probe_every_updates=-1 must not be negative"),
    ("train.save_every_updates=-2", "train.save_every_updates=-2 must not be negative"),
])
def test_update_settings_out_of_range_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["data.source=x", "train.updates=100", override])


@pytest.mark.parametrize("key", ["probe_every_updates", "save_every_updates"])
def test_an_update_cadence_without_an_update_budget_is_refused_naming_the_fix(key):
    with pytest.raises(ConfigError, match=f"train.{key}=5 counts updates .* set train.updates=N, or use "
                                          f"train.{key.removesuffix('_updates')}"):
        load_config(None, ["data.source=x", f"train.{key}=5"])


def test_generate_accepts_the_checkpoints_of_an_update_budget(tmp_path, tiny_llama, corpus_file):
    cfg = load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path) + ["generate.checkpoint=step-0000010"])
    assert cfg.generate.checkpoint == "step-0000010"


def test_probe_every_0_turns_probes_off_under_an_update_budget_unless_probe_every_updates_says_otherwise():
    from hyperfit.training.budget import Budget

    off = Budget.of(TrainConfig(updates=960, probe_every=0), n_samples=8)
    assert off.probe_every == 0 and off.save_every == 0 and off.cadence() == "no probes, final weights only"
    assert Budget.of(TrainConfig(updates=960), 8).probe_every == 96  # the default: 10 evenly spaced
    assert Budget.of(TrainConfig(updates=960, probe_every=0, probe_every_updates=100), 8).probe_every == 100
