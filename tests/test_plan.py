from hyperfit.cli import main
from hyperfit.plan import OVERHEAD, STATE_BYTES, Shape, activation_bytes, per_gpu, shape_of, table


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
