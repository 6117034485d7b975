import json
import subprocess
import sys

import pytest
import yaml

from hyperfit.cli import main
from hyperfit.runs import read_jsonl
from tinymodels import ASSETS, needs_assets, tiny_overrides


def test_run_end_to_end_writes_the_run_directory(tmp_path, tiny_llama, corpus_file, capsys):
    assert main(["run", *tiny_overrides(tiny_llama, corpus_file, tmp_path, "e2e")]) == 0
    run = tmp_path / "e2e"
    for rel in ("config.yaml", "data/train.jsonl", "data/val.jsonl", "data/contexts.jsonl", "data/vocabulary.txt",
                "train_log.jsonl", "checkpoints/final/model.safetensors", "generations/greedy.jsonl",
                "generations/base-greedy.jsonl", "metrics/greedy.json", "metrics/base-greedy.json",
                "metrics/reference.json", "report.md", "plots/training_curves.png"):
        assert (run / rel).is_file(), rel
    rows = read_jsonl(run / "generations/greedy.jsonl")
    assert len(rows) == 8 and all(len(r["continuation_ids"]) == 24 for r in rows)
    assert rows[0]["decoder"] == "greedy" and rows[0]["decoder_config"]["do_sample"] is False
    metrics = json.loads((run / "metrics/greedy.json").read_text())
    assert 0 < metrics["metrics"]["ttr"]["value"] <= 1 and len(metrics["metrics"]["ttr"]["per_item"]) == 8
    assert metrics["predictive"]["perplexity"] > 1
    config = (run / "config.yaml").read_text()
    assert "provenance:" in config and "torch:" in config and "lr: 0.003" in config
    report = (run / "report.md").read_text()
    assert "| e2e | greedy | final / greedy |" in report and "human (reference)" in report
    assert "TTR over the last 16 generated tokens" in report  # evaluate.window=16 here, not the paper's 96
    # a later stage alone, on the existing run directory, with an override
    assert main(["generate", str(run), "generate.max_new_tokens=12", "generate.tag=short"]) == 0
    assert all(len(r["continuation_ids"]) == 12 for r in read_jsonl(run / "generations/short.jsonl"))
    reference = (run / "metrics/reference.json").read_bytes()
    assert main(["evaluate", str(run), "--tag", "short"]) == 0
    assert main(["evaluate", str(run), "--tag", "short", "--tag", "greedy", "evaluate.window=8"]) == 0
    # Each length and window has its own human row; the run's own (24 tokens, window 16) is never rewritten.
    assert (run / "metrics/reference.json").read_bytes() == reference
    refs = {p.stem: json.loads(p.read_text()) for p in (run / "metrics").glob("reference*.json")}
    assert {k: (m["tokens"], m["window"]) for k, m in refs.items()} == {
        "reference": (24, 16), "reference-L12": (12, 16), "reference-L12-w8": (12, 8), "reference-L24-w8": (24, 8)}
    assert json.loads((run / "metrics/short.json").read_text())["reference"] == "reference-L12-w8"
    # config.yaml keeps the run's settings (later stages read their defaults there) and notes the overrides
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["generate"]["max_new_tokens"] == 24
    assert [s["overrides"] for s in saved["provenance"]["stages"]] == [["generate.max_new_tokens=12",
                                                                        "generate.tag=short"], ["evaluate.window=8"]]
    # Generations rewritten under the same tag without evaluating again: the report flags the old metrics
    assert main(["generate", str(run), "generate.max_new_tokens=10", "generate.tag=short"]) == 0
    assert main(["report", str(run)]) == 0
    stale = [l for l in (run / "report.md").read_text().splitlines() if l.startswith("| e2e |")]
    assert [l.split(" | ")[1] for l in stale if "STALE: the generations changed" in l] == ["short"]
    # refusing to clobber an existing run
    assert main(["run", *tiny_overrides(tiny_llama, corpus_file, tmp_path, "e2e")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["train.learnig_rate=1"], "did you mean train.lr"),
    (["data.seq_len=512"], "longer than the model's context of 128"),
    (["model.dtype=bfloat16", "train.lr=1e-6"], "round"),
])
def test_bad_settings_fail_before_writing(tmp_path, tiny_llama, corpus_file, capsys, extra, message):
    code = main(["run", *tiny_overrides(tiny_llama, corpus_file, tmp_path, "bad"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_help_lists_every_field_with_defaults():
    out = subprocess.run([sys.executable, "-m", "hyperfit", "run", "--help"], capture_output=True, text=True).stdout
    for key in ("train.lr=1e-06", "train.weight_decay=0.0", "train.batch_size=8", "data.num_train=2000",
                "data.seq_len=256", "generate.decoder=greedy", "evaluate.window=96"):
        assert key in out


def test_metrics_command_lists_the_registry(capsys):
    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    assert "ttr " in out and "nonword_rate" in out


def test_demo_without_assets_names_the_files_and_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYPERFIT_ASSETS", raising=False)
    assert main(["demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "stories260K/stories260K.bin" in err and "--assets DIR" in err
    assert not (tmp_path / "demo").exists()


@needs_assets()
def test_demo_on_the_real_model(tmp_path, capsys):
    # The real demo with fewer epochs: same code path, seconds instead of minutes.
    code = main(["demo", "--assets", str(ASSETS), "--out", str(tmp_path), "train.epochs=2", "train.probe_every=1",
                 "data.num_train=32", "generate.max_new_tokens=32", "data.num_contexts=8"])
    assert code == 0
    out = capsys.readouterr().out
    assert "before (greedy):" in out and "after  (greedy):" in out and "report:" in out
    assert (tmp_path / "demo" / "report.md").is_file()
    probes = [r for r in read_jsonl(tmp_path / "demo" / "train_log.jsonl") if r["type"] == "probe"]
    assert 1.2 < probes[0]["val_loss"] < 1.7  # the real pretrained model before training
    assert probes[-1]["train_loss"] < probes[0]["train_loss"]
    # Documents are whole stories: a held-out context's story has no paragraph among the training samples.
    stories = [json.loads(line)["text"] for line in (tmp_path / "assets/tinystories_val_stories.jsonl").open()]
    trained = {r["doc_id"] for r in read_jsonl(tmp_path / "demo/data/train.jsonl")}
    held_out = {r["doc_id"] for r in read_jsonl(tmp_path / "demo/data/contexts.jsonl")}
    assert len(stories) == 714 and not trained & held_out
    assert all(stories[i].startswith("Once upon a time") for i in held_out | trained if i > 0)
    # The demo replaces its own run, and refuses a folder it did not write (it deleted one, checkpoints and all).
    assert main(["demo", "--assets", str(ASSETS), "--out", str(tmp_path), "train.epochs=0", "data.num_train=32",
                 "generate.max_new_tokens=8", "data.num_contexts=8"]) == 0
    assert "replacing the previous demo run" in capsys.readouterr().out
    precious = tmp_path / "precious"
    (precious / "checkpoints").mkdir(parents=True)
    (precious / "config.yaml").write_text("name: precious\n")
    assert main(["demo", "--assets", str(ASSETS), "--out", str(tmp_path), "name=precious"]) == 2
    assert "was not written by hyperfit demo" in capsys.readouterr().err and (precious / "config.yaml").is_file()


def test_any_causal_lm_gpt2_and_the_python_api(tmp_path, tiny_gpt2, corpus_file):
    import hyperfit

    cfg = hyperfit.load_config(None, tiny_overrides(tiny_gpt2, corpus_file, tmp_path, "gpt2") + ["train.epochs=1"])
    run = hyperfit.run(cfg)
    rows = read_jsonl(run.generation_file("greedy"))
    assert len(rows) == 8 and all(len(r["continuation_ids"]) == 24 for r in rows)
    card = (run.final / "README.md").read_text()
    assert "lr 0.003 constant" in card and f"base_model: {tiny_gpt2}" in card


def test_report_compares_several_runs(tmp_path, tiny_llama, corpus_file):
    for name, epochs in (("a", 1), ("b", 2)):
        assert main(["run", *tiny_overrides(tiny_llama, corpus_file, tmp_path, name), f"train.epochs={epochs}"]) == 0
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab")]) == 0
    report = (tmp_path / "ab" / "report.md").read_text()
    assert "| a | greedy |" in report and "| b | greedy |" in report
    assert "Training probes: a" in report and "Training probes: b" in report
    # Two runs of one name in different folders keep their own rows, sections and plots
    assert main(["run", *tiny_overrides(tiny_llama, corpus_file, tmp_path / "other", "a"), "train.epochs=1"]) == 0
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "other" / "a"), "--out", str(tmp_path / "aa")]) == 0
    same_names = (tmp_path / "aa" / "report.md").read_text()
    assert f"| {tmp_path.name}/a | greedy |" in same_names and "| other/a | greedy |" in same_names
    assert len(list((tmp_path / "aa" / "plots").glob("ttr_by_position-*.png"))) == 2
    # A mistyped folder is refused, not reported on as an empty run (nor created)
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "typo"), "--out", str(tmp_path / "at")]) == 2
    assert not (tmp_path / "typo").exists() and not (tmp_path / "at").exists()
    assert (tmp_path / "ab" / "plots" / "training_curves.png").stat().st_size > 1000
    assert (tmp_path / "ab" / "plots" / "ttr_by_position-b.png").stat().st_size > 1000  # the paper's Figure 9
    assert "![TTR by position](plots/ttr_by_position-a.png)" in report


def test_agreement_between_runs_trained_in_different_orders(tmp_path, tiny_llama, corpus_file):
    for name, seed in (("s0", 0), ("s1", 1)):
        assert main(["run", *tiny_overrides(tiny_llama, corpus_file, tmp_path, name), f"train.seed={seed}",
                     "train.epochs=2", "train.probe_every=0", "generate.with_base=false"]) == 0
    assert main(["agreement", str(tmp_path / "s0"), str(tmp_path / "s1"), "--base", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "agreement.json").read_text())
    m = result["matrix"]
    assert result["models"] == ["base", "s0", "s1"] and result["positions"] == 8 * 31
    assert [m[i][i] for i in range(3)] == [1.0, 1.0, 1.0] and m[1][2] == m[2][1]
    assert 0.0 < m[1][2] < 1.0  # same samples, different order: different models
    assert "| s0 |" in (tmp_path / "agreement.md").read_text()


def test_push_to_hub_uploads_the_final_folder_with_its_model_card(tmp_path, tiny_llama, corpus_file, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:  # stands in for the hub, which tests never reach
        def create_repo(self, repo_id, exist_ok):
            calls.append(("create", repo_id))

        def upload_folder(self, folder_path, repo_id, commit_message):
            files = sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())
            calls.append(("upload", repo_id, files, (tmp_path / "p" / "checkpoints" / "final").samefile(folder_path)))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(["run", *tiny_overrides(tiny_llama, corpus_file, tmp_path, "p"), "train.epochs=1",
                 "generate.with_base=false", "--push-to-hub", "me/tiny-hyperfitted"]) == 0
    assert calls[0] == ("create", "me/tiny-hyperfitted")
    _, repo, files, is_final = calls[1]
    assert repo == "me/tiny-hyperfitted" and is_final
    assert {"README.md", "model.safetensors", "config.json"} <= set(files)


def test_demo_fetches_from_the_hub_when_no_local_copy(tmp_path, monkeypatch, capsys):
    """The hub path, with hf_hub_download served from a local folder shaped like the hub repos."""
    import huggingface_hub

    if not (ASSETS / "stories260K").is_dir():
        pytest.skip(f"real assets not found at {ASSETS}")
    stories = (ASSETS / "text/tinystories/tinystories_val.txt").read_text().split("\n\n")[:400]
    hub_text = tmp_path / "TinyStories-valid.txt"
    hub_text.write_text("\n<|endoftext|>\n".join(stories))
    served = []

    def fake_download(repo_id, filename, repo_type=None):
        served.append((repo_id, filename, repo_type))
        return str(hub_text if repo_type == "dataset" else ASSETS / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.delenv("HYPERFIT_ASSETS", raising=False)
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "train.epochs=1", "data.num_train=16", "data.num_val=8",
                 "data.num_contexts=4", "generate.max_new_tokens=16", "train.probe_every=0"]) == 0
    assert ("karpathy/tinyllamas", "stories260K/stories260K.bin", None) in served
    assert ("roneneldan/TinyStories", "TinyStories-valid.txt", "dataset") in served
    docs = read_jsonl(out / "assets" / "tinystories_valid.jsonl")
    assert len(docs) == 400 and "<|endoftext|>" not in docs[0]["text"]
    assert (out / "demo" / "report.md").is_file()


@pytest.mark.parametrize("argv,field,expected", [
    (["train", "runs/x", "--resume", "train.epochs=4"], "overrides", ["train.epochs=4"]),
    (["train", "runs/x", "train.lr=1", "--resume", "train.epochs=4", "--push-to-hub", "me/m", "train.seed=2"],
     "overrides", ["train.lr=1", "train.epochs=4", "train.seed=2"]),
    (["run", "configs/paper.yaml", "--resume", "train.epochs=4"], "overrides", ["train.epochs=4"]),
    (["evaluate", "runs/x", "--tag", "short", "evaluate.window=8"], "overrides", ["evaluate.window=8"]),
    (["data", "runs/x", "data.num_train=4"], "overrides", ["data.num_train=4"]),
    (["generate", "runs/x", "generate.tag=a"], "overrides", ["generate.tag=a"]),
    (["demo", "--out", "o", "train.epochs=1"], "overrides", ["train.epochs=1"]),
    (["compare", "runs/a", "--decoders", "greedy", "generate.num_samples=3"], "items",
     ["runs/a", "generate.num_samples=3"]),
])
def test_overrides_after_options_reach_the_command(monkeypatch, argv, field, expected):
    import hyperfit.cli as cli

    seen = []
    for name in [n for n in vars(cli) if n.startswith("cmd_")]:
        monkeypatch.setattr(cli, name, lambda args: seen.append(args) or 0)
    assert main(argv) == 0
    assert getattr(seen[0], field) == expected


def test_stray_positionals_after_options_are_still_refused(monkeypatch, capsys):
    import hyperfit.cli as cli

    for name in [n for n in vars(cli) if n.startswith("cmd_")]:
        monkeypatch.setattr(cli, name, lambda args: pytest.fail("dispatched"))
    with pytest.raises(SystemExit):
        main(["train", "runs/x", "--resume", "runs/y"])
    assert "unrecognized arguments: runs/y" in capsys.readouterr().err


def test_help_of_every_override_command_lists_the_fields():
    for command in ("train", "compare"):
        out = subprocess.run([sys.executable, "-m", "hyperfit", command, "--help"], capture_output=True,
                             text=True).stdout
        assert "train.lr=1e-06" in out and "evaluate.window=96" in out, command


def test_every_command_has_its_own_function():
    import hyperfit.cli as cli

    sub = next(a for a in cli._parser()._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, parser in sub.choices.items():
        if name != "study":  # handed whole to hyperfit.study.cli before parsing
            assert parser.get_default("fn") is getattr(cli, "cmd_" + name.replace("-", "_")), name


def test_a_missing_config_file_is_one_line_naming_it(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.yaml" in err and "does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [b"a: [\n", b"\xff\xfe not utf-8", b"- a list\n"])
def test_a_malformed_config_file_is_a_user_error(tmp_path, capsys, content):
    # invalid YAML, undecodable bytes (a UnicodeDecodeError traceback) and a list instead of sections
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hyperfit run: error: config file {str(path)!r}") and "Traceback" not in err


@pytest.mark.parametrize("content", ["garbage: [\n", "- 1\n"])
def test_a_damaged_run_config_is_a_user_error(tmp_path, capsys, content):
    # A run's config.yaml that is not YAML, or not a mapping (a TypeError from raw.pop before)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(content)
    for command in ("data", "train", "generate", "evaluate"):
        assert main([command, str(tmp_path / "r")]) == 2, command
        assert "config.yaml" in capsys.readouterr().err


def test_a_missing_run_directory_names_the_stage_that_makes_it(tmp_path, capsys):
    for command in ("data", "train", "generate", "evaluate", "compare"):
        assert main([command, str(tmp_path / "nope")]) == 2, command
        err = capsys.readouterr().err
        assert f"{tmp_path / 'nope' / 'config.yaml'} does not exist" in err and "hyperfit run" in err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_an_unknown_metric_is_refused_with_the_config(capsys):
    assert main(["run", "data.source=x", "evaluate.metrics=ttr,ttx"]) == 2
    err = capsys.readouterr().err
    assert "evaluate.metrics: unknown metric 'ttx'. Did you mean ttr" in err


def test_an_internal_error_keeps_its_traceback(monkeypatch, tmp_path):
    # KeyError and FileNotFoundError are bugs in hyperfit now, not one-line user errors
    import hyperfit.cli as cli

    def broken(*args, **kwargs):
        raise KeyError("rows")

    monkeypatch.setattr(cli, "report", broken)
    with pytest.raises(KeyError, match="rows"):
        main(["report", str(tmp_path)])

    def reads_a_missing_file(*args):
        with open(tmp_path / "missing.json"):
            pass

    monkeypatch.setattr(cli, "report", reads_a_missing_file)
    with pytest.raises(FileNotFoundError):
        main(["report", str(tmp_path)])


def test_an_internal_error_prints_a_traceback_from_the_console(tmp_path):
    code = "import sys, hyperfit.cli as c; c.cmd_metrics = lambda a: {}['x']; sys.exit(c.main(['metrics']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" in out.stderr and "KeyError: 'x'" in out.stderr


def test_the_cli_loads_no_torch_until_a_command_needs_it():
    # `hyperfit study serve` goes through this module: the annotation server must not load torch
    code = "import sys, hyperfit.cli; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("lengths", ["12x", "128,", "-5", "0"])
def test_compare_refuses_lengths_that_are_not_token_counts(lengths, tmp_path, capsys):
    # `--lengths 12x` printed a ValueError traceback.
    assert main(["compare", str(tmp_path), "--decoders", "greedy", "--lengths", lengths]) == 2
    err = capsys.readouterr().err
    assert "--lengths" in err and "e.g. --lengths 128,256" in err and "Traceback" not in err
