import torch
from transformers import GenerationConfig

from hyperfit.config import ModelConfig
from hyperfit.decoding.loops import continue_contexts
from hyperfit.decoding.presets import effective_settings, generation_config
from hyperfit.models import load_model, load_tokenizer


def argmax_loop(model, ctx, n):
    ids = torch.tensor([ctx])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(ctx):].tolist()


def test_greedy_is_argmax_and_ignores_the_models_sampling_defaults(tiny_llama):
    cfg = ModelConfig(name=str(tiny_llama))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    # A model whose own generation_config turns sampling on, as many hub models do.
    model.generation_config = GenerationConfig(do_sample=True, temperature=1.5, top_k=5, top_p=0.5)
    contexts = [[tok.bos_token_id, 5, 9, 17], [tok.bos_token_id, 40, 41, 42]]
    gen = generation_config("greedy", tok, max_new_tokens=20)
    torch.manual_seed(1)
    a = continue_contexts(model, contexts, gen, batch_size=2)
    torch.manual_seed(2)
    b = continue_contexts(model, contexts, gen, batch_size=1)
    assert a == b
    assert a == [argmax_loop(model, c, 20) for c in contexts]
    assert model.generation_config.do_sample is True  # the model's own config is restored afterwards
    assert effective_settings(gen)["do_sample"] is False


def test_fixed_length_unless_stop_at_eos(tiny_llama):
    cfg = ModelConfig(name=str(tiny_llama))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    with torch.no_grad():  # make EOS the argmax everywhere
        model.lm_head.weight[tok.eos_token_id] += 100.0
    ctx = [[tok.bos_token_id, 5, 6]]
    assert len(continue_contexts(model, ctx, generation_config("greedy", tok, 12))[0]) == 12
    stopping = generation_config("greedy", tok, 12, stop_at_eos=True)
    assert continue_contexts(model, ctx, stopping)[0] == [tok.eos_token_id]


def test_left_padding_gives_the_same_continuation(tiny_llama):
    cfg = ModelConfig(name=str(tiny_llama))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    short, long = [tok.bos_token_id, 7, 8], [tok.bos_token_id, 9, 10, 11, 12, 13]
    gen = generation_config("greedy", tok, 10)
    together = continue_contexts(model, [short, long], gen, batch_size=2)
    alone = [continue_contexts(model, [c], gen)[0] for c in (short, long)]
    assert together == alone


def test_generation_dtype_is_applied_and_recorded_in_every_row(tmp_path, tiny_llama, corpus_file):
    # generate.dtype=auto is float32 off CUDA (bfloat16 on it); an explicit bfloat16 loads bf16 weights.
    # Greedy tokens may differ between dtypes, so each row says which one made it, and compare's cache
    # key changes with it.
    from hyperfit.runs import read_jsonl
    from hyperfit.stages.generate import Job, generate
    from test_train import prepared

    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "generate.checkpoint=base", name="auto")
    rows = read_jsonl(generate(cfg.generate, cfg.model, run))
    assert {r["dtype"] for r in rows} == {"float32"}
    cfg16, run16 = prepared(tmp_path, tiny_llama, corpus_file, "generate.checkpoint=base", "generate.dtype=bfloat16",
                            name="bf16")
    rows16 = read_jsonl(generate(cfg16.generate, cfg16.model, run16))
    assert {r["dtype"] for r in rows16} == {"bfloat16"} and len(rows16) == len(rows)
    keys = [Job.of(run, c, max_new_tokens=8).key for c in (cfg, cfg16)]
    assert keys[0] != keys[1]


def test_weights_for_names_the_folder_of_each_checkpoint(tmp_path):
    import pytest

    from hyperfit.runs import RunDir, RunError

    run = RunDir(tmp_path)
    (run.final).mkdir(parents=True)
    assert run.weights_for("base") is None and run.weights_for("final") == run.final
    with pytest.raises(RunError, match="epoch-0003.*does not exist.*available: base, final"):
        run.weights_for("epoch-0003")


def test_the_tag_scheme_keeps_the_runs_own_names_and_suffixes_the_rest():
    import dataclasses

    from hyperfit.config import GenerateConfig
    from hyperfit.stages.generate import job_tag

    own = GenerateConfig(max_new_tokens=24, block_ngrams=6)
    tag = lambda **c: job_tag(dataclasses.replace(own, **c), own)  # noqa: E731
    assert tag() == "greedy" and tag(checkpoint="base") == "base-greedy"
    assert tag(max_new_tokens=8) == "final-greedy-L8-block6"
    assert tag(block_ngrams=None) == "final-greedy-L24"
    assert tag(block_until_word_end=True) == "final-greedy-L24-block6-wordend"
    assert tag(tag="mine", max_new_tokens=8) == "mine"
