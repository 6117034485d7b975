from dataclasses import fields
from pathlib import Path

import pytest

from hyperfit.config import ConfigError, RunConfig, field_docs, help_text, load_config, replace
from hyperfit.experiments import is_spec

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers_recipe():
    cfg = RunConfig()
    t, d, g = cfg.train, cfg.data, cfg.generate
    assert (d.num_train, d.seq_len, d.context_len) == (2000, 256, 32)
    assert (t.epochs, t.lr, t.weight_decay, t.batch_size) == (20, 1e-6, 0.0, 8)
    assert d.num_train // t.batch_size * t.epochs == 5000  # the paper's 5,000 updates
    assert g.decoder == "greedy" and cfg.evaluate.window == 96
    assert cfg.model.dtype == "float32"


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  source: x.txt\n  seq_len: 64\ntrain:\n  lr: 1e-4\n")
    cfg = load_config(path, ["train.epochs=3", "evaluate.metrics=ttr,rep_2", "train.betas=[0.8, 0.9]"])
    assert cfg.data.seq_len == 64 and cfg.train.lr == 1e-4 and cfg.train.epochs == 3
    assert cfg.evaluate.metrics == ("ttr", "rep_2") and cfg.train.betas == (0.8, 0.9)
    assert replace(cfg, ["train.lr=5e-5"]).train.lr == 5e-5


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown key train\.learning_rat.*|did you mean"):
        load_config(None, ["data.source=x", "train.learning_rat=1"])
    with pytest.raises(ConfigError, match="did you mean train.epochs"):
        load_config(None, ["data.source=x", "train.epoch=1"])


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.lr=-1", "data.seq_len=abc", "train.batch_size=8", "train.grad_accum=3"])
    msg = str(e.value)
    assert "data.seq_len='abc'" in msg or "data.seq_len=abc" in msg


def test_contradictions_name_the_flags():
    with pytest.raises(ConfigError, match="train.grad_accum=3"):
        load_config(None, ["data.source=x", "train.grad_accum=3"])
    with pytest.raises(ConfigError, match="data.source is empty"):
        load_config(None, [])
    with pytest.raises(ConfigError, match="context_len"):
        load_config(None, ["data.source=x", "data.seq_len=16", "data.context_len=32"])


def test_every_field_has_help_and_appears_in_help_text():
    text = help_text()
    for section in ("data", "model", "train", "generate", "evaluate"):
        cls = type(getattr(RunConfig(), section))
        docs = field_docs(cls)
        for f in fields(cls):
            assert docs.get(f.name), f"{section}.{f.name} has no docstring"
            assert f"{section}.{f.name}=" in text


# Run configs only: experiment specs (configs/experiments/*.yaml with axes:) are checked in test_experiments.py.
HYPERFIT_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                          if "accelerate" not in p.parts and not is_spec(p))
LAUNCH_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", HYPERFIT_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.data.source
    assert path.read_text().startswith("#") and "hyperfit " in path.read_text().split("\n\n")[0]  # command in header


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=lambda p: p.name)
def test_accelerate_launch_files_are_valid(path):
    import yaml

    doc = yaml.safe_load(path.read_text())
    assert doc["distributed_type"] in ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED")
    assert "accelerate launch --config_file configs/accelerate/" in path.read_text()  # how to use it
    if doc["distributed_type"] == "DEEPSPEED":
        assert (ROOT / doc["deepspeed_config"]["deepspeed_config_file"]).is_file()


def test_yaml_booleans_and_none_read_as_the_help_text_writes_them(tmp_path):
    # YAML 1.1 reads `no` as False: train.precision=no, the value the help names, was refused as 'False'.
    # `--help` prints unset fields as None: `generate.tag=None` wrote generations/None.jsonl.
    cfg = load_config(None, ["data.source=x", "train.precision=no", "generate.tag=None", "train.tracker=None"])
    assert cfg.train.precision == "no" and cfg.generate.tag is None and cfg.train.tracker is None
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  source: x\ntrain:\n  precision: no\n")
    assert load_config(path).train.precision == "no"


def problems_of(overrides, path=None) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, ["data.source=x", *overrides])
    return str(e.value)


def test_numbers_out_of_their_domain_are_refused_together():
    # Each of these was accepted; lr nan and betas [0.9] then crashed in torch after the run folder was written.
    msg = problems_of(["train.lr=.nan", "train.betas=[0.9]", "train.weight_decay=-1", "train.max_grad_norm=-1",
                       "data.max_documents=-5", "train.eps=0", "train.stop_at_loss=-1", "generate.seed=-1",
                       "evaluate.batch_size=0", "train.grad_accum=0"])
    for expected in ["train.lr=nan must be a finite number", "train.betas=[0.9] must be two numbers in [0, 1)",
                     "train.weight_decay=-1.0 must not be negative", "train.max_grad_norm=-1.0 must be positive",
                     "data.max_documents=-5 must be at least 1", "train.eps=0.0 must be positive",
                     "train.stop_at_loss=-1.0 must not be negative", "generate.seed=-1 must be in [0,",
                     "evaluate.batch_size=0 must be at least 1", "train.grad_accum=0 must be at least 1"]:
        assert expected in msg
    assert "train.lr=inf must be a finite number" in problems_of(["train.lr=.inf"])
    assert "train.lr=nan" in problems_of(["train.lr=nan"])  # float("nan") reads the plain word too
    assert "train.betas=[0.9, 1.0]" in problems_of(["train.betas=[0.9, 1]"])
    # decoder parameters: transformers would refuse these only when generation starts, after training
    msg = problems_of(["generate.decoder=top_p", "generate.params={temperature: 0, top_p: 1.5}"])
    assert "generate.params.temperature=0.0 must be positive" in msg and "generate.params.top_p=1.5" in msg
    assert "top_k=0 must be at least 1" in problems_of(["generate.decoder=contrastive", "generate.params.top_k=0"])


def test_every_numeric_field_and_decoder_parameter_has_a_range():
    from typing import Optional, get_type_hints

    from hyperfit.config import DECODER_RANGES, RANGES
    from hyperfit.decoding.presets import PRESETS

    numeric = (int, float, Optional[int], Optional[float])
    for section in ("data", "model", "train", "generate", "evaluate"):
        for name, typ in get_type_hints(type(getattr(RunConfig(), section))).items():
            assert typ not in numeric or f"{section}.{name}" in RANGES, f"{section}.{name} has no range"
    for preset in PRESETS.values():
        for name, default in preset.params.items():
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                assert name in DECODER_RANGES, f"decoder parameter {name} has no range"
                assert DECODER_RANGES.get((preset.name, name), DECODER_RANGES[name]).problem(name, default) is None


def test_an_empty_section_takes_overrides(tmp_path):
    # `train:` with every key commented out reads as None; the override said 'train' is a value, not a section.
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  source: x\ntrain:\n  # lr: 1e-4\n  # epochs: 3\ngenerate:\n  params:\n")
    cfg = load_config(path, ["train.lr=1e-3"])
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 20 and cfg.generate.params == {}
    top_p = load_config(path, ["generate.decoder=top_p", "generate.params.top_p=0.95"])
    assert top_p.generate.params == {"top_p": 0.95}


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    # PyYAML keeps the second `train:` silently, dropping lr.
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  source: x\ntrain:\n  lr: 1e-3\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: key 'train' appears twice .*lines 3 and 5"):
        load_config(path)
    path.write_text("data:\n  source: x\n  seq_len: 64\n  num_val: 8\n  seq_len: 128\n")
    with pytest.raises(ConfigError, match=r"key 'seq_len' appears twice .*lines 3 and 5"):
        load_config(path)
    with pytest.raises(ConfigError, match="key 'top_p' appears twice"):
        load_config(None, ["data.source=x", "generate.decoder=top_p", "generate.params={top_p: 0.9, top_p: 0.5}"])
    # a merge key's values may be overridden: that is what `<<` is for
    path.write_text("data:\n  <<: {source: x, seq_len: 64}\n  seq_len: 128\n")
    assert load_config(path).data.seq_len == 128


def test_str_fields_keep_the_text_as_written(tmp_path):
    # YAML 1.1 read off as False ("no"), 2024_01_05 as 20240105 and 0755 as octal 493.
    cfg = load_config(None, ["data.source=x", "name=off", "generate.tag=2024_01_05", "model.revision=0755",
                             "model.attn_implementation=None", "train.tracker=null"])
    assert (cfg.name, cfg.generate.tag, cfg.model.revision) == ("off", "2024_01_05", "0755")
    assert cfg.model.attn_implementation is None and cfg.train.tracker is None
    assert replace(cfg, ["model.revision=1.10"]).model.revision == "1.10"
    assert replace(cfg, ["name='quoted'"]).name == "quoted"  # YAML quotes still work
    with pytest.raises(ConfigError, match="name=\\['a'\\] is not a valid str"):
        load_config(None, ["data.source=x", "name=[a]"])
    path = tmp_path / "c.yaml"
    path.write_text("name: off\ndata:\n  source: x\nmodel:\n  revision: 0755\n  attn_implementation: null\n"
                    "generate:\n  tag: 2024_01_05\n")
    cfg = load_config(path)
    assert (cfg.name, cfg.model.revision, cfg.generate.tag) == ("off", "0755", "2024_01_05")
    assert cfg.model.attn_implementation is None


def test_config_fields_and_decoder_parameters_share_one_reading_of_values():
    # One coercer (hyperfit.values.coerce): 3.0 is an int, 3.5 and true are not, "1e-4" is a float.
    from hyperfit.decoding.presets import resolve

    cfg = load_config(None, ["data.source=x", "data.seq_len=64.0", "train.lr='1e-4'"])
    assert cfg.data.seq_len == 64 and cfg.train.lr == 1e-4
    assert resolve("top_k", {"top_k": 3.0, "temperature": "0.5"}).params == {"top_k": 3, "temperature": 0.5}
    for bad in ("3.5", "true"):
        assert f"data.seq_len={bad if bad != 'true' else True}" in problems_of([f"data.seq_len={bad}"])
        assert "generate.params.top_k=" in problems_of(["generate.decoder=top_k", f"generate.params.top_k={bad}"])


def test_unknown_keys_get_the_closest_name_or_the_synonym_other_tools_use():
    from hyperfit.errors import closest, did_you_mean

    assert "unknown key train.num_train_epochs; did you mean train.epochs?" in problems_of(["train.num_train_epochs=3"])
    assert "unknown key train.gradient_accumulation_steps; did you mean train.grad_accum?" in problems_of(
        ["train.gradient_accumulation_steps=2"])
    assert "unknown key train.zzz; known keys: epochs, updates, lr," in problems_of(["train.zzz=1"])
    assert closest("lerning_rate", ["lr", "epochs"], synonyms={"learning_rate": "lr"}) == ["lr"]
    # the synonym's target must exist
    assert closest("lerning_rate", ["epochs"], synonyms={"learning_rate": "lr"}) == []
    assert did_you_mean("num_epochs", ["epochs", "lr"], synonyms={"num_epochs": "epochs"}) == " Did you mean epochs?"


def test_metric_names_are_checked_with_the_rest_of_the_config():
    msg = problems_of(["evaluate.metrics=ttr,ttrr,bogus", "train.lr=-1"])
    assert "evaluate.metrics: unknown metric 'ttrr'. Did you mean ttr" in msg and "train.lr=-1.0" in msg
    assert "unknown metric 'bogus'. Known metrics: " in msg and "distinct_2" in msg


def test_importing_the_config_loads_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = ("import sys, hyperfit.config as c; c.load_config(None, ['data.source=x']); "
            "print(sorted({'torch', 'transformers', 'accelerate'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_run_config_file_is_read_like_any_config_file(tmp_path):
    from hyperfit.config import read_config_file

    path = tmp_path / "config.yaml"
    path.write_text("name: off\ndata:\n  source: x\nprovenance:\n  seed: 0\n")
    assert read_config_file(path) == {"name": "off", "data": {"source": "x"}, "provenance": {"seed": 0}}
    path.write_bytes(b"\xff")
    with pytest.raises(ConfigError, match="cannot be read .*UTF-8"):
        read_config_file(path)


def test_a_runs_own_config_yaml_is_a_valid_config(tmp_path):
    # `hyperfit run RUN/config.yaml --resume` failed with "unknown key provenance".
    from hyperfit.config import RunConfig
    from hyperfit.runs import RunDir, save_config

    cfg = load_config(None, ["data.source=x.txt", "train.lr=0.5", "name=r"])
    run = RunDir(tmp_path / "r")
    save_config(run, cfg)
    assert "provenance" in run.config.read_text()
    again = load_config(run.config)
    assert isinstance(again, RunConfig) and again == cfg
