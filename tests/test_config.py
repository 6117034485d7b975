from dataclasses import fields
from pathlib import Path

import pytest

from hyperfit.config import ConfigError, RunConfig, field_docs, help_text, load_config, replace

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


HYPERFIT_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts)
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
