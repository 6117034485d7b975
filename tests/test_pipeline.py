"""`hyperfit run` (hyperfit.stages.pipeline): stage order, and what it does under launches it cannot finish."""

import pytest

from hyperfit.config import load_config
from hyperfit.runs import read_jsonl
from hyperfit.stages.data import DataError
from hyperfit.stages.pipeline import run
from tinymodels import tiny_overrides


def test_under_deepspeed_the_run_stops_after_training_and_resume_under_another_launch_finishes_it(
        tmp_path, tiny_llama, corpus_file, monkeypatch, capsys):
    # ZeRO-3 (the 70B path) trains, but its model cannot run generation outside a DeepSpeed engine. The run
    # used to train for hours and then fail; now it says up front that it stops after training, and how
    # to finish. (The launch is simulated; the training itself is the one-process loop here, and
    # tests/test_models.py checks how a DeepSpeed launch is recognised.)
    import hyperfit.stages.pipeline

    cfg = load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path, "zero3") + ["train.epochs=1"])
    with monkeypatch.context() as m:
        m.setattr(hyperfit.stages.pipeline, "deepspeed_launch", lambda: True)
        run_dir = run(cfg)
    out = capsys.readouterr().out
    assert out.index("this run stops after training") < out.index("train: 1 epochs")
    assert "fsdp2.yaml" in out and "--resume" in out
    assert (run_dir.final / "model.safetensors").is_file() and not run_dir.generations.exists()
    trained = read_jsonl(run_dir.train_log)
    run(cfg, resume=True)  # e.g. under the FSDP2 launch: training is not repeated
    assert read_jsonl(run_dir.train_log) == trained
    assert run_dir.generation_file("greedy").is_file() and (run_dir.path / "report.md").is_file()


def test_a_tag_of_the_users_keeps_the_trained_and_the_base_rows_apart(tmp_path, tiny_llama, corpus_file):
    # The base model's job reused the tag and overwrote the hyperfitted model's generations.
    cfg = load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path, "tagged") + ["generate.tag=mine",
                                                                                          "train.epochs=1"])
    run_dir = run(cfg)
    assert {r["checkpoint"] for r in read_jsonl(run_dir.generation_file("mine"))} == {"final"}
    assert {r["checkpoint"] for r in read_jsonl(run_dir.generation_file("base-mine"))} == {"base"}


def test_the_flat_api_stays_callable_after_its_modules_are_imported(monkeypatch):
    # Python binds an imported submodule over the package attribute of the same name: after hyperfit.run()
    # imported hyperfit.training.loop, `hyperfit.train(...)` (the README's one-stage call) raised "'module' object
    # is not callable".
    from importlib import import_module

    import hyperfit
    import hyperfit.stages.compare
    import hyperfit.stages.evaluate
    import hyperfit.stages.generate
    import hyperfit.stages.report
    import hyperfit.training.loop

    for name in ("train", "generate", "evaluate", "report", "compare"):
        assert callable(getattr(hyperfit, name))
        module = import_module(hyperfit._EXPORTS[name])  # the module the flat name is re-exported from
        calls = []
        monkeypatch.setattr(module, name, lambda *args, calls=calls, **kw: calls.append((args, kw)) or "done")
        assert getattr(hyperfit, name)(1, key=2) == "done" and calls == [((1,), {"key": 2})]


def test_a_run_whose_data_fails_leaves_no_folder_behind(tmp_path, tiny_llama, corpus_file):
    # config.yaml was written before the data stage failed; the corrected command then met "already exists"
    # and --resume refused the changed data settings, so the folder had to be deleted by hand.

    overrides = tiny_overrides(tiny_llama, corpus_file, tmp_path, "short")
    with pytest.raises(DataError):
        run(load_config(None, overrides + ["data.num_train=1000"]))
    assert not (tmp_path / "short").exists()
    run(load_config(None, overrides + ["train.epochs=1"]))  # the corrected command, same name
    assert (tmp_path / "short" / "report.md").is_file()


def test_run_resume_after_a_crash_before_the_first_checkpoint_starts_training_over(
        tmp_path, tiny_llama, corpus_file, monkeypatch):
    # `hyperfit run --resume` refused its own leftover train_log.jsonl ("already holds training output").
    import hyperfit.training.loop as T

    cfg = load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path, "early") + ["train.epochs=1"])
    with monkeypatch.context() as m:
        m.setattr(T, "_update", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
        with pytest.raises(RuntimeError, match="killed"):
            run(cfg)
    run_dir = run(cfg, resume=True)
    assert [r["step"] for r in read_jsonl(run_dir.train_log) if r["type"] == "step"] == [1, 2]
    assert (run_dir.path / "report.md").is_file()


def test_the_stage_functions_take_a_run_folder_as_a_path(tmp_path, tiny_llama, corpus_file):
    # Notebooks pass paths; a str failed deep inside ("'str' object has no attribute 'require'").
    import hyperfit
    from hyperfit.models import load_tokenizer
    from hyperfit.runs import save_config

    cfg = hyperfit.load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path, "paths") + ["train.epochs=1"])
    folder = str(tmp_path / "paths")
    save_config(hyperfit.RunDir(folder), cfg)
    hyperfit.prepare_data(cfg.data, load_tokenizer(cfg.model), folder)
    hyperfit.train(cfg.train, cfg.model, folder)
    generations = hyperfit.generate(cfg.generate, cfg.model, folder)
    assert [p.name for p in hyperfit.evaluate(cfg.evaluate, cfg.model, folder)] == ["greedy.json", "reference.json"]
    assert hyperfit.report([folder]).is_file() and generations.is_file()


def test_a_process_count_the_batch_cannot_split_over_is_refused_before_anything_is_written(
        tmp_path, tiny_llama, corpus_file, monkeypatch):
    # Under `accelerate launch --num_processes 3` with the batch of 8: the refusal came from train(), after
    # config.yaml and data/ were written, and the corrected command then met "already exists".
    import hyperfit.stages.pipeline
    from hyperfit.errors import TrainError

    monkeypatch.setattr(hyperfit.stages.pipeline, "world", lambda: (0, 3))
    cfg = load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path, "three") + ["train.batch_size=8"])
    with pytest.raises(TrainError, match="cannot be split over 3 process"):
        run(cfg)
    assert not (tmp_path / "three").exists()


def test_resuming_a_finished_run_with_other_training_settings_is_refused_and_keeps_the_record(
        tmp_path, tiny_llama, corpus_file):
    # `run --resume train.lr=0.5` on a finished run trained nothing but saved lr 0.5 in config.yaml.
    from hyperfit.runs import RunError

    base = tiny_overrides(tiny_llama, corpus_file, tmp_path, "done") + ["train.epochs=1", "generate.with_base=false"]
    run_dir = run(load_config(None, base))
    saved = run_dir.config.read_text()
    with pytest.raises(RunError, match=r"train\.lr 0\.003 → 0\.5 would not take effect"):
        run(load_config(None, [*base, "train.lr=0.5"]), resume=True)
    assert run_dir.config.read_text() == saved
    run(load_config(run_dir.config), resume=True)  # the run's own config resumes it (nothing left to do)


@pytest.mark.parametrize("damage", ["weights", "tokenizer"])
def test_a_damaged_model_folder_is_refused_before_the_run_folder_is_written(damage, tmp_path, tiny_llama, corpus_file,
                                                                           capsys):
    # A corrupt model.safetensors failed in training, after config and data were written (the corrected
    # command then said "already exists"); a folder without tokenizer files said "install sentencepiece".
    import shutil

    from hyperfit.cli import main

    model = shutil.copytree(tiny_llama, tmp_path / "model")
    if damage == "weights":
        (model / "model.safetensors").write_bytes(b"\x00" * 64)
    else:
        for f in model.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens")):
                f.unlink()
    args = tiny_overrides(model, corpus_file, tmp_path / "runs", "r")
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert ("model.safetensors cannot be read" if damage == "weights" else "has no tokenizer files") in err
    assert "Traceback" not in err and not (tmp_path / "runs" / "r").exists()


def test_a_run_without_contexts_is_refused_before_anything_is_written(tmp_path, tiny_llama, corpus_file):
    # data.num_contexts=0 trained, then reported rows of 0.000 labelled "None / None".
    from hyperfit.errors import ConfigError

    cfg = load_config(None, [*tiny_overrides(tiny_llama, corpus_file, tmp_path, "empty"), "data.num_contexts=0"])
    with pytest.raises(ConfigError, match="data.num_contexts=0"):
        run(cfg)
    assert not (tmp_path / "empty").exists()


def test_a_run_that_did_not_reach_near_zero_loss_says_so_and_the_report_carries_the_data_report(
        tmp_path, tiny_llama, corpus_file, capsys):
    # Out-of-domain runs ended at training loss 0.21-0.26 and their reports read like a success.
    cfg = load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path, "short") + ["train.epochs=1"])
    run_dir = run(cfg)
    out = capsys.readouterr().out
    assert "WARNING: training loss did not reach near zero" in out and "train.epochs=1" in out
    report = (run_dir.path / "report.md").read_text()
    assert "training loss did not reach near zero" in report and "raise train.lr" in report
    assert "## Data: short" in report and "documents read: 60" in report
    assert (run_dir.data / "report.md").is_file()
