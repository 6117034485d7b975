import pytest
import torch

from hyperfit.config import DataConfig, ModelConfig
from hyperfit.models import (
    ModelError,
    PrecisionError,
    check_lengths,
    load_model,
    load_model_config,
    lost_update_fraction,
    precision_guard,
)
from tinymodels import save_tiny_model


def test_dropout_is_disabled(tmp_path):
    path = save_tiny_model(tmp_path / "g", arch="gpt2", resid_pdrop=0.3, embd_pdrop=0.3, attn_pdrop=0.3)
    model = load_model(ModelConfig(name=str(path)))
    assert model.config.resid_pdrop == model.config.embd_pdrop == model.config.attn_pdrop == 0.0
    model.train()
    ids = torch.randint(0, 100, (2, 12))
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_precision_guard_refuses_bf16_at_paper_lr(tiny_llama):
    model = load_model(ModelConfig(name=str(tiny_llama), dtype="bfloat16"))
    assert lost_update_fraction(model, 1e-6)[torch.bfloat16] > 0.9
    with pytest.raises(PrecisionError, match=r"bfloat16 .*train.lr=1e-06.*model.dtype=float32"):
        precision_guard(model, 1e-6)
    precision_guard(model, 1e-1)  # large steps survive bf16 rounding
    precision_guard(load_model(ModelConfig(name=str(tiny_llama))), 1e-6)  # fp32 master weights: fine


def test_missing_model_path_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="needs config.json"):
        load_model_config(ModelConfig(name=str(tmp_path / "empty")))
    with pytest.raises(ModelError, match="no such directory"):
        load_model_config(ModelConfig(name=str(tmp_path / "nope")))


def test_lengths_beyond_the_context_window(tiny_llama):
    config = load_model_config(ModelConfig(name=str(tiny_llama)))  # 128 positions
    check_lengths(config, DataConfig(source="x", seq_len=128), 96, 96)
    with pytest.raises(ModelError, match=r"data.seq_len=256 is longer than the model's context of 128"):
        check_lengths(config, DataConfig(source="x", seq_len=256), 64, 64)
    with pytest.raises(ModelError, match="generate.max_new_tokens"):
        check_lengths(config, DataConfig(source="x", seq_len=64), 256, 64)


def test_inference_under_a_deepspeed_launch_is_refused_before_loading(tmp_path, monkeypatch):
    # A ZeRO-3 model cannot run forwards outside a DeepSpeed engine; a full copy per rank would not fit
    # the models that need ZeRO-3. The message names the launch to use instead.
    import hyperfit.models
    from hyperfit.models import load_for_inference

    monkeypatch.setattr(hyperfit.models, "world", lambda: (0, 2))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ModelError, match="fsdp2.yaml"):
        load_for_inference(ModelConfig(name=str(tmp_path / "not-even-loaded")))
    from hyperfit.models import deepspeed_launch

    assert deepspeed_launch()  # what `hyperfit run` asks before it plans to stop after training
    monkeypatch.setattr(hyperfit.models, "world", lambda: (0, 1))
    assert not deepspeed_launch()  # one process: generation runs, the model is whole
