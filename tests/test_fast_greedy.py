"""hyperfit.decoding.fast_greedy gives exactly generate()'s greedy tokens (fp32, CPU), with and without a logits
hook."""

import pytest
import torch

from hyperfit.config import ModelConfig
from hyperfit.decoding.fast_greedy import GreedyDecoder, fast_greedy_applies
from hyperfit.decoding.loops import continue_contexts
from hyperfit.decoding.presets import generation_config
from hyperfit.models import load_model, load_tokenizer


class BanRecentTokens:
    """A blocker-like hook: a pure tensor op over the tokens so far (bans the last 3 tokens)."""

    def __call__(self, input_ids, logits):
        banned = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, input_ids[:, -3:], True)
        return logits.masked_fill(banned, float("-inf"))


def contexts(tok, n=5, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[tok.bos_token_id] + torch.randint(2, len(tok), (length - 1,), generator=g).tolist() for _ in range(n)]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("hook", [None, BanRecentTokens()], ids=["plain", "hook"])
def test_fast_greedy_equals_generate(fixture, hook, request):
    from transformers import LogitsProcessorList

    cfg = ModelConfig(name=str(request.getfixturevalue(fixture)))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    ctx = contexts(tok)
    gen = generation_config("greedy", tok, max_new_tokens=24)
    procs = LogitsProcessorList([hook]) if hook else None
    # batch_size 2 over 5 contexts: the short last batch is padded inside the fast path.
    slow = continue_contexts(model, ctx, gen, batch_size=2, logits_processor=procs, fast=False)
    fast = continue_contexts(model, ctx, gen, batch_size=2, logits_processor=procs, fast=True)
    assert fast == slow and all(len(r) == 24 for r in fast)


def test_fast_greedy_handles_eos_like_generate(tiny_llama):
    cfg = ModelConfig(name=str(tiny_llama))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    with torch.no_grad():  # EOS is the argmax almost everywhere
        model.lm_head.weight[tok.eos_token_id] += 3.0
    ctx = contexts(tok, n=3)
    for stop in (False, True):  # fixed length (EOS banned) / cut at the first EOS
        gen = generation_config("greedy", tok, 16, stop_at_eos=stop)
        assert continue_contexts(model, ctx, gen, fast=True) == continue_contexts(model, ctx, gen, fast=False)


def test_fast_greedy_inside_autocast_decodes_in_the_models_dtype(tiny_llama):
    # Training probes decode inside bf16 autocast. The static cache must not see fp32 keys beside bf16
    # values (this broke the probe on an H200); the decoder turns autocast off and matches fp32 generate().
    cfg = ModelConfig(name=str(tiny_llama))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    ctx = contexts(tok, n=3)
    gen = generation_config("greedy", tok, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = continue_contexts(model, ctx, gen, fast=True)
    assert fast == continue_contexts(model, ctx, gen, fast=False)


def test_fast_path_only_where_it_is_exact(tiny_llama):
    tok = load_tokenizer(ModelConfig(name=str(tiny_llama)))
    greedy, top_p = generation_config("greedy", tok, 8), generation_config("top_p", tok, 8)
    assert fast_greedy_applies(greedy, [[1, 2], [3, 4]])
    assert not fast_greedy_applies(greedy, [[1, 2], [3]])  # unequal lengths: generate() with left padding
    assert not fast_greedy_applies(top_p, [[1, 2]])


def test_decoder_refuses_wrong_shapes_and_gpu_modes_on_cpu(tiny_llama):
    model = load_model(ModelConfig(name=str(tiny_llama)))
    dec = GreedyDecoder(model, batch_size=2, context_len=4, max_new_tokens=3)
    assert dec.mode == "eager" and dec(torch.ones(2, 4, dtype=torch.long)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"shape \(3, 4\); this decoder was built for \(2, 4\)"):
        dec(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="needs a CUDA model"):
        GreedyDecoder(model, 2, 4, 3, mode="graph")


def sliding_window_model():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    return MistralForCausalLM(MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=120,
                                            sliding_window=8, max_position_embeddings=64)).eval()


def test_sliding_window_models_are_never_recorded_and_decode_like_generate():
    # Their cache keeps its fill level as a Python int: a recorded CUDA graph replays the capture step's
    # position and mask at every token (30 % of tokens right, emulated; or an index_copy_ out of range).
    from transformers import GenerationConfig, StaticCache

    from hyperfit.decoding.fast_greedy import recordable, resolve_mode

    model = sliding_window_model()
    cache = StaticCache(config=model.config, max_cache_len=40)
    assert not recordable(cache)
    assert resolve_mode("auto", torch.device("cuda"), recordable(cache)) == "eager"
    with pytest.raises(ValueError, match="sliding-window attention"):
        resolve_mode("graph", torch.device("cuda"), False)
    assert resolve_mode("auto", torch.device("cuda"), True) == "graph"
    # Eagerly, the loop gives generate()'s tokens past the window (8) too.
    ctx = torch.randint(3, 120, (3, 6), generator=torch.Generator().manual_seed(1)).tolist()
    gen = GenerationConfig(max_new_tokens=20, min_new_tokens=20, do_sample=False, eos_token_id=1, pad_token_id=0)
    assert continue_contexts(model, ctx, gen, 3, fast=True) == continue_contexts(model, ctx, gen, 3, fast=False)


def test_attention_kernels_that_need_a_mask_take_generate(tiny_llama):
    # Given no mask, flash attention reads every slot of the static cache, the empty future ones included.
    from hyperfit.decoding.loops import model_runs_fast_greedy

    cfg = ModelConfig(name=str(tiny_llama))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    gen = generation_config("greedy", tok, max_new_tokens=8)
    assert model_runs_fast_greedy(model, gen, contexts(tok), True)
    model.config._attn_implementation = "flash_attention_2"
    assert not model_runs_fast_greedy(model, gen, contexts(tok), True)
    with pytest.raises(ValueError, match="attn_implementation sdpa or eager.*'flash_attention_2'"):
        GreedyDecoder(model, 5, 6, 8)


@pytest.mark.parametrize("name,fast", [("greedy", True), ("greedy", False), ("greedy", None), ("top_p", True),
                                       ("contrastive", True), ("repetition_penalty", True)])
def test_the_loop_a_job_is_keyed_by_is_the_loop_that_runs(tiny_llama, name, fast):
    # One rule decides "fast greedy?": the cache key asks it before loading (device, model.attn_implementation),
    # decode asks it of the loaded model, and the row records what ran.
    from hyperfit.decoding import decode, loop_for, resolve

    cfg = ModelConfig(name=str(tiny_llama))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    decoder = resolve(name)
    gen = generation_config(decoder, tok, max_new_tokens=6)
    ctx = [c[:3] for c in contexts(tok)]  # equal lengths: the fast loop may apply
    planned = loop_for(decoder, gen, ctx, fast, "cpu", cfg.attn_implementation)
    assert decode(model, ctx, decoder, gen, fast=fast).loop == planned
    expected = {("greedy", True): "fast_greedy", ("contrastive", True): "contrastive"}.get((name, fast), "generate")
    assert planned == expected
