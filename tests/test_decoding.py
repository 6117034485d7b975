import copy
import math

import pytest
import torch

from hyperfit.config import ConfigError, ModelConfig, load_config
from hyperfit.decoding import decode
from hyperfit.decoding.contrastive import contrastive_search
from hyperfit.decoding.entropy_match import match_temperature, mean_entropy
from hyperfit.decoding.presets import (
    PRESETS,
    REPORTED_TOP_P,
    DecoderError,
    effective_settings,
    generation_config,
    resolve,
)
from hyperfit.models import load_model, load_tokenizer

# Decoders that search against another checkpoint first need a run: see test_compare.
LOOPED = [name for name, p in PRESETS.items() if p.method.target(resolve(name)) is None]


@pytest.fixture(scope="module")
def model_and_tok(tiny_llama):
    cfg = ModelConfig(name=str(tiny_llama))
    return load_model(cfg), load_tokenizer(cfg)


def contexts(tok):
    return [[tok.bos_token_id, 5, 9, 17], [tok.bos_token_id, 40, 41]]  # different lengths: left padding


@pytest.mark.parametrize("name", LOOPED)
def test_every_preset_builds_a_valid_config_and_decodes(model_and_tok, name):
    model, tok = model_and_tok
    decoder = resolve(name)
    gen = generation_config(decoder, tok, max_new_tokens=10)
    gen.validate(strict=True)  # transformers' own checks, warnings as errors
    samples = decode(model, contexts(tok), decoder, gen, num_samples=2, batch_size=2).samples
    assert len(samples) == (2 if decoder.samples else 1)
    assert all(len(row) == 10 for conts in samples for row in conts)
    settings = effective_settings(gen, decoder)
    assert settings["do_sample"] is decoder.samples
    for key, value in decoder.params.items():  # every parameter is in the record of each row
        assert settings[key] == value


def test_top_p_is_the_reported_baseline_and_params_override_it():
    assert resolve("top_p").params == REPORTED_TOP_P
    assert resolve("top_p", {"top_p": 0.95}).params == {**REPORTED_TOP_P, "top_p": 0.95}
    with pytest.raises(DecoderError, match="its parameters: top_p, temperature, top_k"):
        resolve("top_p", {"penalty_alpha": 0.5})
    with pytest.raises(DecoderError, match="must be a int"):
        resolve("beam", {"num_beams": 2.5})
    with pytest.raises(DecoderError, match="Did you mean top_p"):
        resolve("topp")


def test_params_through_the_config():
    cfg = load_config(None, ["data.source=x.txt", "generate.decoder=top_p", "generate.params.top_p=0.8"])
    assert resolve(cfg.generate.decoder, cfg.generate.params).params["top_p"] == 0.8
    with pytest.raises(ConfigError, match="generate.params.alpha is not a parameter of decoder 'greedy'"):
        load_config(None, ["data.source=x.txt", "generate.params={alpha: 1}"])


@pytest.mark.parametrize("name", [n for n in LOOPED if not PRESETS[n].samples])
def test_deterministic_presets_ignore_the_seed(model_and_tok, name):
    model, tok = model_and_tok
    decoder = resolve(name)
    gen = generation_config(decoder, tok, 8)
    a = decode(model, contexts(tok), decoder, gen, seed=0, num_samples=3).samples
    b = decode(model, contexts(tok), decoder, gen, seed=1).samples
    assert a == b and len(a) == 1


@pytest.mark.parametrize("name", [n for n in LOOPED if PRESETS[n].samples])
def test_sampling_presets_reproduce_with_a_seed_and_differ_across_seeds(model_and_tok, name):
    model, tok = model_and_tok
    decoder = resolve(name)
    gen = generation_config(decoder, tok, 8)
    run = lambda seed: decode(model, contexts(tok), decoder, gen, seed=seed, num_samples=2).samples  # noqa: E731
    a, b = run(0), run(1)
    assert a == run(0)
    assert a != b
    assert a[0] != a[1]  # the samples of one call differ from each other
    assert a[1] != b[0]  # sample 1 of seed 0 is not sample 0 of seed 1


# Contrastive search -------------------------------------------------------------------------------------


@torch.no_grad()
def contrastive_reference(model, ctx, steps, alpha, k):
    """Su et al. (2022) from scratch: every candidate gets a full forward pass of the whole sequence."""
    seq = list(ctx)
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
        probs = logits.float().softmax(-1)
        top = probs.topk(k)
        scores = []
        for p, v in zip(top.values.tolist(), top.indices.tolist()):
            hidden = model(input_ids=torch.tensor([seq + [v]]), output_hidden_states=True).hidden_states[-1][0].float()
            cos = torch.nn.functional.cosine_similarity(hidden[-1:], hidden[:-1], dim=-1)
            scores.append((1 - alpha) * p - alpha * cos.max().item())
        seq.append(top.indices[max(range(k), key=lambda i: scores[i])].item())
    return seq[len(ctx):]


def test_contrastive_matches_a_brute_force_reference(model_and_tok):
    model, tok = model_and_tok
    gen = generation_config("contrastive", tok, 12)
    got = contrastive_search(model, contexts(tok), gen, penalty_alpha=0.6, top_k=4, batch_size=2)
    assert got == [contrastive_reference(model, c, 12, 0.6, 4) for c in contexts(tok)]


def test_contrastive_with_alpha_zero_is_greedy(model_and_tok):
    model, tok = model_and_tok
    greedy = decode(model, contexts(tok), resolve("greedy"), generation_config("greedy", tok, 16)).samples
    gen = generation_config("contrastive", tok, 16)
    assert contrastive_search(model, contexts(tok), gen, penalty_alpha=0.0, top_k=4) == greedy[0]


def test_contrastive_penalty_changes_the_output(model_and_tok):
    # Guards the reference test against a loop that ignores alpha.
    model, tok = model_and_tok
    gen = generation_config("contrastive", tok, 16)
    assert (contrastive_search(model, contexts(tok), gen, 0.9, 4)
            != contrastive_search(model, contexts(tok), gen, 0.0, 4))


# Entropy-matched temperature ----------------------------------------------------------------------------


def test_entropy_matching_recovers_the_temperature_of_a_sharpened_copy(model_and_tok):
    model, _ = model_and_tok
    sharp = copy.deepcopy(model)
    with torch.no_grad():
        sharp.lm_head.weight *= 2.0  # logits × 2 = the original model at temperature 0.5, exactly
    sequences = [[(7 * i + 3 * j) % 300 + 2 for j in range(16)] for i in range(4)]
    found = match_temperature(model, sharp, sequences, tolerance=1e-4)
    assert abs(found["matched_entropy"] - found["target_entropy"]) <= 1e-4
    assert found["target_entropy"] < found["original_entropy"]
    assert math.isclose(found["temperature"], 0.5, rel_tol=1e-2)
    assert math.isclose(mean_entropy(model, sequences, found["temperature"]), found["target_entropy"], abs_tol=1e-4)
