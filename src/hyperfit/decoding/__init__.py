"""Decoding: the decoder presets (each with a method object saying how it runs) and the loops that run them.

    from hyperfit.decoding import resolve, generation_config, decode
    decoded = decode(model, contexts, resolve("greedy"), generation_config("greedy", tokenizer, 256))
    decoded.samples[0], decoded.loop                 # continuations, and "fast_greedy" / "generate" / ...

Rooms: presets (names → Decoder, GenerationConfig), tokens (EOS, cutting, batching, padding), loops (the one
dispatch), fast_greedy, contrastive, entropy_match, blocker. The presets load eagerly (config checks decoder
names without torch); everything that needs torch is imported on first use.
"""

from importlib import import_module

from hyperfit.decoding.presets import PRESETS, Decoder, Method, Preset, effective_settings, generation_config, resolve

_LAZY = {
    "decode": "hyperfit.decoding.loops",
    "Decoded": "hyperfit.decoding.loops",
    "continue_contexts": "hyperfit.decoding.loops",
    "fast_greedy_runs": "hyperfit.decoding.loops",
    "loop_for": "hyperfit.decoding.loops",
    "sample_seed": "hyperfit.decoding.loops",
    "cut_at_eos": "hyperfit.decoding.tokens",
    "eos_ids": "hyperfit.decoding.tokens",
    "GreedyDecoder": "hyperfit.decoding.fast_greedy",
    "contrastive_search": "hyperfit.decoding.contrastive",
    "NgramBlocker": "hyperfit.decoding.blocker",
}
__all__ = ["PRESETS", "Decoder", "Method", "Preset", "effective_settings", "generation_config", "resolve", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hyperfit.decoding' has no attribute {name!r}")
