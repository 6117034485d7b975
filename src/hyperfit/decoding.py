"""Named decoding presets → a complete, explicit `transformers.GenerationConfig`.

Greedy must really be greedy: a model's own generation_config.json may turn sampling on (many chat
models ship do_sample=True, top_p=0.9), and generate() merges such defaults into a user config whose
values equal the library defaults. So every preset builds its GenerationConfig from scratch, and
`generate` installs it as the model's generation config for the call; the effective settings are
recorded in every output row.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

# The paper's nucleus-sampling baseline, as reported by Carlsson et al. (2025), §4: p 0.9, temperature 0.7,
# top-k 50. Keep the values here only.
REPORTED_TOP_P = {"top_p": 0.9, "temperature": 0.7, "top_k": 50}


@dataclass(frozen=True)
class Preset:
    name: str
    help: str
    settings: dict = field(default_factory=dict)

    @property
    def samples(self) -> bool:
        return bool(self.settings.get("do_sample"))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("greedy", "Argmax at every step (the paper's decoder for hyperfitted models).", {"do_sample": False}),
        Preset("top_p", "Nucleus sampling with the paper's reported baseline values.", {"do_sample": True, **REPORTED_TOP_P}),
    ]
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown decoder {name!r}.{hint} Known decoders: {', '.join(PRESETS)}")
    return PRESETS[name]


def generation_config(name: str, tokenizer, max_new_tokens: int, stop_at_eos: bool = False):
    """A GenerationConfig for preset `name`, with every sampling field set explicitly."""
    from transformers import GenerationConfig

    preset = get_preset(name)
    settings = {"do_sample": False, "num_beams": 1, "temperature": 1.0, "top_k": None, "top_p": None}
    settings.update(preset.settings)
    eos = tokenizer.eos_token_id
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        # Fixed-length continuations (the paper's setting): EOS may not end a continuation early.
        min_new_tokens=None if stop_at_eos else max_new_tokens,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        bos_token_id=tokenizer.bos_token_id,
        **settings,
    )


def effective_settings(gen_config) -> dict:
    """The settings that decide the output, for the record in each generation row."""
    keys = ("do_sample", "num_beams", "temperature", "top_k", "top_p", "typical_p", "min_p", "epsilon_cutoff",
            "eta_cutoff", "repetition_penalty", "no_repeat_ngram_size", "penalty_alpha", "max_new_tokens",
            "min_new_tokens")
    d = gen_config.to_dict()
    return {k: d.get(k) for k in keys if d.get(k) is not None}
