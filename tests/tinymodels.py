"""Test helpers: tiny models built from configs in-process, a locally trained tokenizer, a text corpus.

Imported by name from tests (`from tinymodels import ...`); fixtures that use them live in conftest.py.
"""

import random
from pathlib import Path

import pytest
import torch

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
WORDS = ("the cat dog sun moon tree house girl boy ran saw big small red blue happy sad played jumped "
         "river hill bird fish green little old friend park ball went said and then with a to").split()


def needs_assets():
    return pytest.mark.skipif(not (ASSETS / "stories260K" / "stories260K.bin").is_file(),
                              reason=f"real assets not found at {ASSETS} (CI has ../shared/assets beside the repo)")


def make_corpus(n_docs: int = 60, words_per_doc: int = 60, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(words_per_doc // 8):
            s = " ".join(rng.choice(WORDS) for _ in range(8))
            sentences.append(s.capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


def build_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def save_tiny_model(path: Path, arch: str = "llama", seed: int = 0, texts=None, **overrides) -> Path:
    """A random tiny causal LM + the local tokenizer (trained on `texts`, make_corpus() by default), saved like
    a hub model."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(texts or make_corpus())
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if arch == "llama":
        cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=128, **common, **overrides)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **common, **overrides)
        model = GPT2LMHeadModel(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_overrides(model: Path, source: Path, out: Path, name: str = "t") -> list[str]:
    """A complete, fast configuration for the tiny models (seconds, not minutes)."""
    return [f"name={name}", f"out_dir={out}", f"model.name={model}", f"data.source={source}",
            "data.seq_len=32", "data.context_len=8", "data.num_train=16", "data.num_val=8", "data.num_contexts=8",
            "train.lr=3e-3", "train.epochs=3", "train.probe_contexts=4", "train.probe_new_tokens=16",
            "train.probe_val=8", "train.log_every=1", "generate.max_new_tokens=24", "evaluate.window=16"]


def crash_at_update(monkeypatch, n: int):
    """Make training's n-th optimizer update raise RuntimeError("simulated crash"); returns the undo."""
    import hyperfit.training.loop as loop

    real, calls = loop._update, []

    def crashing(*args, **kw):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError("simulated crash")
        return real(*args, **kw)

    monkeypatch.setattr(loop, "_update", crashing)
    return lambda: monkeypatch.setattr(loop, "_update", real)
