import json
from pathlib import Path

import pytest

from hyperfit.cli import main
from hyperfit.plan import (
    CHECKPOINTED_BY_LAUNCH_FILE,
    DEFAULT_GPU_GIB,
    OFFLOAD_HOST_BYTES,
    OVERHEAD,
    REDUCE_BUCKET_BYTES,
    STATE_BYTES,
    STRATEGIES,
    PlanError,
    Shape,
    activation_bytes,
    gpu_size,
    looks_like_path,
    per_gpu,
    rank_options,
    shape_of,
    table,
)

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=10, tie_word_embeddings=False)


def test_parameter_count_by_hand():
    # embeddings 10×8 + lm_head 8×10 = 160; per layer q,k,v,o 4×64 + MLP 3×8×16 + 2 norms ×8 = 656; final norm 8
    s = shape_of(tiny_config())
    assert s.params == 160 + 2 * 656 + 8 == 1480 and (s.layers, s.hidden, s.vocab) == (2, 8, 10)


def test_memory_by_hand():
    s = Shape(params=1000, layers=2, hidden=8, vocab=10)
    tokens = 8 * 256
    act = 2 * 34 * tokens * 8 + tokens * 10 * 10
    assert activation_bytes(s, 8, 256, checkpointing=False) == act
    assert per_gpu(s, "single_gpu", 1, 8, 256, False) == (STATE_BYTES * 1000 + act + OVERHEAD, 0)
    assert per_gpu(s, "ddp", 2, 8, 256, False) == (16_000 + activation_bytes(s, 4, 256, False) + OVERHEAD, 0)


def test_zero3_offload_memory_by_hand():
    # Host, per parameter (DeepSpeed's buffers after one step): bf16 partition 2 + fp32 master 4 + its fp32
    # grad 4 + bf16 grad partition 2 + AdamW moments 8 = 20; the old plan said 12 (masters + moments only).
    assert OFFLOAD_HOST_BYTES == 20
    s = Shape(params=1000, layers=2, hidden=8, vocab=10)
    gpu, host = per_gpu(s, "zero3_offload", 4, 8, 256, False)
    # GPU: no shard of the model (the old plan kept a 4 B/param one), only bf16 weights of the layer in use and
    # the prefetched one (2 × 2 B × 500) + the layer's bf16 grads (2 B × 500) + the 5e8-element bf16 bucket.
    assert REDUCE_BUCKET_BYTES == 10**9
    assert host == 20_000 and gpu == 3000 + 10**9 + activation_bytes(s, 2, 256, False) + OVERHEAD
    # More GPUs change the GPU bytes only through activations, and the host total not at all.
    one_gpu, one_host = per_gpu(s, "zero3_offload", 1, 8, 256, False)
    assert one_host == host and one_gpu - gpu == activation_bytes(s, 8, 256, False) - activation_bytes(s, 2, 256, False)


def test_fsdp2_row_is_checkpointed_as_its_yaml_is():
    # fsdp2.yaml sets fsdp_activation_checkpointing, so its row counts checkpointed activations even when
    # --checkpointing is off; the other rows follow the flag.
    s = Shape(params=1000, layers=2, hidden=8, vocab=10)
    checkpointed = activation_bytes(s, 4, 256, checkpointing=True)
    assert checkpointed < activation_bytes(s, 4, 256, checkpointing=False)
    assert per_gpu(s, "fsdp2", 2, 8, 256, False) == (16_000 // 2 + 2 * 2 * 500 + checkpointed + OVERHEAD, 0)
    assert per_gpu(s, "fsdp2", 2, 8, 256, False) == per_gpu(s, "fsdp2", 2, 8, 256, True)
    assert per_gpu(s, "ddp", 2, 8, 256, False) != per_gpu(s, "ddp", 2, 8, 256, True)


def test_rows_match_their_launch_files():
    import yaml

    # The plan's assumptions about each launch file, read from the files themselves.
    for strategy in STRATEGIES:
        doc = yaml.safe_load((LAUNCH_DIR / f"{strategy}.yaml").read_text())
        on = doc.get("fsdp_config", {}).get("fsdp_activation_checkpointing", False)
        assert on == (strategy in CHECKPOINTED_BY_LAUNCH_FILE), strategy
    ds = json.loads((LAUNCH_DIR / "zero3_offload.json").read_text())
    zero = ds["zero_optimization"]
    assert "activation_checkpointing" not in ds  # so its row follows --checkpointing
    assert zero["offload_param"]["device"] == zero["offload_optimizer"]["device"] == "cpu"  # the 20 B/param
    assert zero["contiguous_gradients"] and "reduce_bucket_size" not in zero  # DeepSpeed's 5e8 bucket


def test_launch_file_comments_state_the_plans_numbers():
    ddp = (LAUNCH_DIR / "ddp.yaml").read_text().split("\ncompute_environment")[0]
    assert f"{STATE_BYTES} B/param" in ddp and "gradient_as_bucket_view=True" in ddp and "20 B/param" in ddp
    fsdp2 = (LAUNCH_DIR / "fsdp2.yaml").read_text().split("\ncompute_environment")[0]
    assert "reduce_dtype=fp32" in fsdp2 and "would reduce them in bf16" in fsdp2
    zero3 = (LAUNCH_DIR / "zero3_offload.yaml").read_text().split("\ncompute_environment")[0]
    assert f"{OFFLOAD_HOST_BYTES} B/param" in zero3 and "12 B/param" not in zero3 and "1,314 GiB" in zero3
    for text in (ddp, fsdp2, zero3):
        assert "--num_processes N -m hyperfit train RUN_DIR" in text


def test_70b_is_bounded_by_host_ram_under_zero3_offload(capsys):
    # Was test_70b_needs_zero3_offload_on_8_gpus, expecting 8 GPUs and 788 GiB of host RAM: the plan put a
    # 4 B/param shard on each GPU and 12 B/param on the host. With offload_param DeepSpeed keeps no shard on
    # the GPUs and 20 B/param on the host, so one GPU fits by memory and host RAM is the bound.
    assert main(["plan", "llama-3.1-70b"]) == 0
    out = capsys.readouterr().out
    assert "70.55 B parameters" in out and "1,051.3 GiB" in out  # 16 B/param ≈ 1.1 TB
    lines = plan_lines(out)
    assert lines["zero3_offload"].rstrip().endswith(" 1,314  1")  # 20 × 70.55e9 B = 1,314 GiB of host RAM
    assert "does not fit" in lines["fsdp2"] and "does not fit" in lines["ddp"]  # fsdp2 even checkpointed
    assert "Host RAM bounds zero3_offload, not GPUs: ~1,314 GiB in total" in out
    assert "faster, not needed for memory" in out
    assert ("accelerate launch --config_file configs/accelerate/zero3_offload.yaml --num_processes 1 "
            "-m hyperfit train RUN_DIR") in out


def test_zero3_offload_may_run_on_one_gpu():
    assert rank_options("zero3_offload", 8) == [1, 2, 4, 8] and rank_options("zero3_offload", 1) == [1]
    assert rank_options("fsdp2", 8) == rank_options("ddp", 8) == [2, 4, 8] and rank_options("single_gpu", 8) == [1]


def test_single_gpu_miss_says_one_gpu_and_where_to_go(capsys):
    assert main(["plan", "deepseek-7b"]) == 0
    line = plan_lines(capsys.readouterr().out)["single_gpu"]
    assert "does not fit one GPU" in line and "fsdp2" in line and "zero3_offload" in line
    assert "most ranks" not in line  # single_gpu allows exactly one


@pytest.mark.parametrize("model,launch", [
    ("tinyllama-1.1b", "single_gpu.yaml --num_processes 1"), ("llama-3.1-8b", "fsdp2.yaml --num_processes 2")])
def test_launch_line_names_the_strategy_and_its_gpu_count(capsys, model, launch):
    assert main(["plan", model]) == 0
    out = capsys.readouterr().out
    assert f"  accelerate launch --config_file configs/accelerate/{launch} -m hyperfit train RUN_DIR" in out
    assert "<strategy>" not in out


def test_launch_line_when_nothing_fits(capsys):
    assert main(["plan", "llama-3.1-70b", "--gpu-gib", "4"]) == 0
    out = capsys.readouterr().out
    assert "Launch: no strategy fits GPUs of 4 GiB" in out and "--checkpointing" in out
    assert "accelerate launch" not in out


def test_tinyllama_fits_one_gpu():
    rows = {r["strategy"]: r for r in table(shape_of(__import__("hyperfit.plan").plan.model_config("tinyllama-1.1b")))}
    assert rows["single_gpu"]["gpus"] == 1 and 16 < rows["single_gpu"]["per_gpu_gib"] < 40


def plan_lines(out: str) -> dict[str, str]:
    return {l.split()[0]: l for l in out.splitlines() if l.split() and l.split()[0] in
            ("strategy", "single_gpu", "ddp", "fsdp2", "zero3_offload")}


def test_gpu_size_is_gib_and_gb_is_converted(capsys):
    # Llama 3.1 8B under FSDP2 on 2 GPUs takes 64.4 GiB (checkpointed, as fsdp2.yaml runs it): it fits
    # 66 GiB, not 66 GB (61.5 GiB). (Was 70: 68.2 GiB before the fsdp2 row counted its checkpointing.)
    assert main(["plan", "llama-3.1-8b", "--gpu-gib", "66"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert lines["fsdp2"].rstrip().endswith(" 2") and "GPUs of 66 GiB needed" in lines["strategy"]
    assert main(["plan", "llama-3.1-8b", "--gpu-gb", "66"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert lines["fsdp2"].rstrip().endswith(" 4") and "GPUs of 66 GB = 61.5 GiB needed" in lines["strategy"]


def test_default_gpu_is_an_80gb_h100_in_gib(capsys):
    assert gpu_size() == (DEFAULT_GPU_GIB, "79.6 GiB") and DEFAULT_GPU_GIB * 2**30 <= 81_559 * 2**20
    assert abs(gpu_size(gpu_gb=80)[0] - 80e9 / 2**30) < 1e-9
    assert main(["plan", "tinyllama-1.1b"]) == 0
    assert "GPUs of 79.6 GiB needed" in capsys.readouterr().out


@pytest.mark.parametrize("flag,value", [("--gpu-gb", "0"), ("--gpu-gb", "-5"), ("--gpu-gib", "0"),
                                        ("--gpu-gib", "-1"), ("--gpu-gib", "nan"), ("--batch", "0"), ("--seq", "-1")])
def test_non_positive_sizes_are_refused(capsys, flag, value):
    assert main(["plan", "tinyllama-1.1b", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be a positive number, got {value}" in err


def test_gpu_size_given_twice_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["plan", "tinyllama-1.1b", "--gpu-gib", "80", "--gpu-gb", "80"])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(PlanError, match="given twice"):
        gpu_size(80, 80)


def test_batch_of_one_fits_one_gpu_and_splits_nowhere(capsys):
    assert main(["plan", "tinyllama-1.1b", "--batch", "1"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert lines["single_gpu"].rstrip().endswith(" 1") and "needs a batch of 2 or more" in lines["fsdp2"]
    assert lines["zero3_offload"].rstrip().endswith(" 1")  # offload needs no second GPU


@pytest.mark.parametrize("name", ["/nonexistent/hyperfit-dir", "./no-such-model-dir", "../no-such-model-dir",
                                  "~/no-such-model-dir", "runs/x/checkpoints/final"])
def test_missing_folder_is_named_not_blamed_on_the_hub(capsys, name):
    assert looks_like_path(name)
    assert main(["plan", name]) == 2
    err = capsys.readouterr().err
    assert f"no such folder: {name}" in err and "llama-3.1-70b" in err and "config.json" in err
    assert "HF_HUB_OFFLINE" not in err and "Repo id" not in err


def test_hub_ids_are_not_taken_for_paths():
    assert not looks_like_path("TinyLlama/TinyLlama_v1.1") and not looks_like_path("gpt2")


def test_folder_without_config_json(tmp_path, capsys):
    assert main(["plan", str(tmp_path)]) == 2
    assert f"folder {tmp_path} has no config.json" in capsys.readouterr().err


def test_folder_with_unreadable_config_json(tmp_path, capsys):
    (tmp_path / "config.json").write_text("not json")
    assert main(["plan", str(tmp_path)]) == 2
    assert f"{tmp_path / 'config.json'} is not a transformers config" in capsys.readouterr().err


def test_model_folder_is_planned(tiny_llama, capsys):
    assert main(["plan", str(tiny_llama)]) == 0
    assert plan_lines(capsys.readouterr().out)["single_gpu"].rstrip().endswith(" 1")


def test_invalid_hub_id_is_not_blamed_on_the_network(capsys):
    assert main(["plan", "not a model"]) == 2
    err = capsys.readouterr().err
    assert "'not a model' is not a preset, a folder or a hub id" in err and "HF_HUB_OFFLINE" not in err


def test_unknown_hub_id_offline_says_how_to_go_online(capsys):
    assert main(["plan", "nobody/no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "did not load from the hub" in err and "unset HF_HUB_OFFLINE" in err


def test_a_config_that_is_not_a_causal_lm_is_refused_with_the_fix(tmp_path, capsys):
    from transformers import T5Config

    # An encoder-decoder: AutoModelForCausalLM has no class for it, and plan printed that ValueError's traceback.
    T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=2, d_kv=4, vocab_size=10).save_pretrained(tmp_path)
    assert main(["plan", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "T5Config (model_type 't5') is not a causal LM" in err and "AutoModelForCausalLM" in err
    assert "plan one of those" in err and "Traceback" not in err
