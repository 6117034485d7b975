import pytest

from hyperfit.cli import main
from hyperfit.plan import (DEFAULT_GPU_GIB, OVERHEAD, STATE_BYTES, PlanError, Shape, activation_bytes, gpu_size,
                           looks_like_path, per_gpu, shape_of, table)


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
    # ZeRO-3 offload: 4 B/param on the GPUs (sharded), 12 B/param on the host
    gpu, host = per_gpu(s, "zero3_offload", 4, 8, 256, False)
    assert host == 12_000 and gpu == 1000 + 2 * 2 * 500 + activation_bytes(s, 2, 256, False) + OVERHEAD


def test_70b_needs_zero3_offload_on_8_gpus(capsys):
    assert main(["plan", "llama-3.1-70b"]) == 0
    out = capsys.readouterr().out
    assert "70.55 B parameters" in out and "1,051.3 GiB" in out  # 16 B/param ≈ 1.1 TB
    lines = {l.split()[0]: l for l in out.splitlines() if l.split() and l.split()[0] in
             ("single_gpu", "ddp", "fsdp2", "zero3_offload")}
    assert lines["zero3_offload"].rstrip().endswith(" 8")
    assert "does not fit" in lines["fsdp2"] and "does not fit" in lines["ddp"]


def test_tinyllama_fits_one_gpu():
    rows = {r["strategy"]: r for r in table(shape_of(__import__("hyperfit.plan").plan.model_config("tinyllama-1.1b")))}
    assert rows["single_gpu"]["gpus"] == 1 and 16 < rows["single_gpu"]["per_gpu_gib"] < 40


def plan_lines(out: str) -> dict[str, str]:
    return {l.split()[0]: l for l in out.splitlines() if l.split() and l.split()[0] in
            ("strategy", "single_gpu", "ddp", "fsdp2", "zero3_offload")}


def test_gpu_size_is_gib_and_gb_is_converted(capsys):
    # Llama 3.1 8B under FSDP2 on 2 GPUs takes 68.2 GiB: it fits 70 GiB, not 70 GB (65.2 GiB).
    assert main(["plan", "llama-3.1-8b", "--gpu-gib", "70"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert lines["fsdp2"].rstrip().endswith(" 2") and "GPUs of 70 GiB needed" in lines["strategy"]
    assert main(["plan", "llama-3.1-8b", "--gpu-gb", "70"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert lines["fsdp2"].rstrip().endswith(" 4") and "GPUs of 70 GB = 65.2 GiB needed" in lines["strategy"]


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
