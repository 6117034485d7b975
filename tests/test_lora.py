"""train.method=lora: only adapters train, late-stage LoRA touches only the last blocks, final/ is a merged model
that plain transformers loads with base + adapter's logits, and a killed LoRA run resumes exactly."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from hyperfit.config import load_config
from hyperfit.errors import ConfigError, TrainError
from hyperfit.runs import read_jsonl
from hyperfit.training import train
from hyperfit.training.lora import block_linears, resolve_layers
from test_train import prepared, step_losses
from tinymodels import crash_at_update

LORA = ("train.method=lora", "train.lora_rank=4", "train.lora_alpha=8", "train.lr=3e-2", "train.probe_every=0")


def adapter_weights(folder):
    return load_file(folder / "adapter_model.safetensors")


def test_lora_trains_only_the_adapters_and_final_is_a_merged_model_with_the_same_logits(tmp_path, tiny_llama,
                                                                                       corpus_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *LORA, "train.epochs=4")
    summary = train(cfg.train, cfg.model, run)
    losses = step_losses(run)
    assert losses[-1] < losses[0] - 0.05, losses  # the adapters learn
    assert summary["steps"] == 8
    # The checkpoint holds the adapter and the optimizer state, not the frozen base.
    ckpt = run.epoch_checkpoints()[-1]
    assert {p.name for p in ckpt.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json",
                                                "training_state.pt", "tokenizer.json"}
    assert not (ckpt / "model.safetensors").exists()
    adapter = adapter_weights(ckpt)
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it moved
    assert all(v.dtype == torch.float32 for v in adapter.values())

    # final/: a plain transformers folder whose weights are base + B·A·alpha/r, the adapter beside it.
    assert (run.final / "adapter" / "adapter_model.safetensors").is_file()
    base = load_file(tiny_llama / "model.safetensors")
    merged = load_file(run.final / "model.safetensors")
    assert set(merged) == set(base)  # no lora_ keys: plain modules
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    targets = set(block_linears(AutoModelForCausalLM.from_pretrained(tiny_llama)))
    assert changed and all(k.rsplit(".", 2)[-2] in targets for k in changed), changed  # only adapted linears

    ids = torch.tensor([read_jsonl(run.data_file("val"))[0]["input_ids"]])
    plain = AutoModelForCausalLM.from_pretrained(run.final).eval()
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                             run.final / "adapter").eval()
    with torch.no_grad():
        a, b = plain(ids).logits, with_adapter(ids).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # An epoch checkpoint (adapter only) loads as model.name with its adapter merged: generate.checkpoint=epoch-N.
    from hyperfit.models import load_model

    at_epoch = load_model(cfg.model, ckpt).eval()
    epoch_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), ckpt).eval()
    with torch.no_grad():
        assert torch.allclose(at_epoch(ids).logits, epoch_adapter(ids).logits, atol=1e-5)
    trained = next(r for r in read_jsonl(run.train_log) if r["type"] == "trained")
    assert trained["method"] == "lora" and trained["trainable"] == sum(v.numel() for v in adapter.values())
    assert 0 < trained["share"] < 1
    from hyperfit.stages.report import report

    text = report([run]).read_text()
    assert "## Trained parameters" in text and f"{trained['trainable']:,}" in text


def test_late_stage_lora_touches_only_the_last_blocks(tmp_path, tiny_llama, corpus_file):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *LORA, "train.epochs=2", "train.lora_layers=last:1",
                        "train.lora_targets=[q_proj,v_proj]", "train.save_every=0")
    train(cfg.train, cfg.model, run)
    adapter = adapter_weights(run.final / "adapter")
    assert adapter and all(".layers.1." in k and (".q_proj." in k or ".v_proj." in k) for k in adapter), list(adapter)
    base, merged = load_file(tiny_llama / "model.safetensors"), load_file(run.final / "model.safetensors")
    changed = sorted(k for k in base if not torch.equal(base[k], merged[k]))
    assert changed == ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight"]


def test_a_killed_lora_run_resumes_exactly(tmp_path, tiny_llama, corpus_file, monkeypatch):
    cfg, full = prepared(tmp_path, tiny_llama, corpus_file, *LORA, "train.epochs=4", name="full")
    train(cfg.train, cfg.model, full)
    cfg2, broken = prepared(tmp_path, tiny_llama, corpus_file, *LORA, "train.epochs=4", name="broken")
    undo = crash_at_update(monkeypatch, 6)  # 2 updates per epoch: inside epoch 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg2.train, cfg2.model, broken)
    undo()
    assert [p.name for p in broken.epoch_checkpoints()] == ["epoch-0002"]
    train(cfg2.train, cfg2.model, broken, resume=True)
    assert step_losses(broken) == pytest.approx(step_losses(full), rel=1e-6)
    a, b = adapter_weights(full.final / "adapter"), adapter_weights(broken.final / "adapter")
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def test_a_lora_checkpoint_resumed_as_a_full_run_is_refused(tmp_path, tiny_llama, corpus_file, monkeypatch):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *LORA, "train.epochs=2")
    undo = crash_at_update(monkeypatch, 4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg.train, cfg.model, run)
    undo()
    with pytest.raises(TrainError, match="train.method=lora"):
        train(dataclasses.replace(cfg.train, method="full"), cfg.model, run, resume=True)


def test_adapters_stay_fp32_on_a_bf16_base_so_lr_1e_6_is_not_rounded_away(tmp_path, tiny_llama, corpus_file):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *LORA, "model.dtype=bfloat16", "train.lr=1e-6",
                        "train.epochs=1", "train.save_every=0")
    train(cfg.train, cfg.model, run)  # the precision guard would refuse bf16 trainable weights at 1e-6
    adapter = adapter_weights(run.final / "adapter")
    assert all(v.dtype == torch.float32 for v in adapter.values())
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)


def test_lora_settings_are_checked_before_anything_is_written(tmp_path, tiny_llama, corpus_file):
    assert resolve_layers("last:5", 22) == [17, 18, 19, 20, 21]
    with pytest.raises(TrainError, match="last:K"):
        resolve_layers("last:9", 2)
    with pytest.raises(TrainError, match="block indices"):
        resolve_layers("1,x", 4)
    with pytest.raises(ConfigError, match="train.method"):
        load_config(None, ["data.source=x", "train.method=qlora"])
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, *LORA, "train.lora_targets=[qkv]")
    with pytest.raises(TrainError, match="q_proj"):
        train(cfg.train, cfg.model, run)


def test_gpt2_blocks_get_adapters_on_their_conv1d_layers(tiny_gpt2):
    from transformers import AutoModelForCausalLM

    names = block_linears(AutoModelForCausalLM.from_pretrained(tiny_gpt2))
    assert set(names) == {"c_attn", "c_proj", "c_fc"}


@pytest.mark.parametrize("layers", ["all", "last:1"])
def test_plan_counts_the_adapters_peft_builds_and_the_frozen_base(tiny_llama, layers):
    from transformers import AutoConfig, AutoModelForCausalLM

    from hyperfit.config import TrainConfig
    from hyperfit.plan import LoraPlan, lora_counts, plan
    from hyperfit.training.lora import add_adapters

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    add_adapters(model, TrainConfig(method="lora", lora_rank=4, lora_layers=layers))
    built = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapters, depth = lora_counts(AutoConfig.from_pretrained(tiny_llama), LoraPlan(4, layers))
    assert adapters == built and depth == (2 if layers == "all" else 1)
    assert f"{built:,} adapter parameters" in plan(str(tiny_llama), lora=LoraPlan(4, layers))
