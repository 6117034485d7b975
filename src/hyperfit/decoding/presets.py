"""Named decoding presets → a resolved `Decoder` → a complete, explicit `transformers.GenerationConfig`.

    hyperfit generate runs/demo generate.decoder=top_p generate.num_samples=3
    hyperfit generate runs/demo generate.decoder=top_p "generate.params={top_p: 0.95}"
    hyperfit compare runs/demo --decoders greedy,top_p,repetition_penalty,contrastive

Greedy must really be greedy: a model's own generation_config.json may turn sampling on (many chat
models ship do_sample=True, top_p=0.9), and generate() merges such defaults into a user config whose
values equal the library defaults. So every preset builds its GenerationConfig from scratch, and
`generate` installs it as the model's generation config for the call; the effective settings are
recorded in every output row.

Everything transformers implements (top-k/p, typical, min-p, eta, epsilon, repetition penalty, no-repeat
n-gram, beam search) is plain GenerationConfig fields. Two presets need more than that:
`contrastive` (transformers ships it only as hub code; see `hyperfit.decoding.contrastive`) and
`entropy_matched_temperature` (a temperature found by bisection; see `hyperfit.decoding.entropy_match`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hyperfit.decoding import entropy_match
from hyperfit.errors import DecoderError, did_you_mean
from hyperfit.values import coerce

# The paper's nucleus-sampling baseline, as reported by Carlsson et al. (2025), §4: p 0.9, temperature 0.7,
# top-k 50. Keep the values here only.
REPORTED_TOP_P = {"top_p": 0.9, "temperature": 0.7, "top_k": 50}

class Method:
    """How a preset runs: model.generate() with the GenerationConfig alone. Code that needs to know how a
    decoder runs asks its method (`decoder.method`), so no module tests a preset's name.

    `loop` names the decoding loop in hyperfit.decoding.loops; greedy configs of the `generate` loop may run
    in the fast greedy loop (the one rule: `loops.fast_greedy_runs`).
    """

    name = "generate"
    loop = "generate"

    def config_fields(self, decoder: Decoder) -> dict:
        """GenerationConfig fields set from the decoder's parameters (on top of the preset's fixed ones)."""
        return dict(decoder.params)

    def record(self, decoder: Decoder) -> dict:
        """What the rows record beyond the GenerationConfig's own fields."""
        return {}

    def target(self, decoder: Decoder) -> str | None:
        """The checkpoint a search measures against (it is then part of the cache key), if any."""
        return None

    def skip_reason(self, decoder: Decoder, checkpoint: str) -> str | None:
        """Why decoding `checkpoint` with this decoder would be meaningless (compare notes it and skips)."""
        return None

    def prepare(self, decoder: Decoder, model, run, load: Callable[[str], Any]) -> Decoder:
        """The decoder with anything a search must find first (with `model` loaded; `load(checkpoint)` loads
        another of the run's checkpoints for inference)."""
        return decoder


class Contrastive(Method):
    """A loop of its own (hyperfit.decoding.contrastive); its parameters are not GenerationConfig fields."""

    name = loop = "contrastive"

    def config_fields(self, decoder: Decoder) -> dict:
        return {}

    def record(self, decoder: Decoder) -> dict:
        return decoder.record()


class EntropyMatched(Method):
    """generate() at a temperature found by bisection against the `target` checkpoint
    (hyperfit.decoding.entropy_match) before decoding."""

    name = "entropy_matched"

    def config_fields(self, decoder: Decoder) -> dict:
        return {"do_sample": decoder.params["do_sample"], "temperature": decoder.found.get("temperature", 1.0)}

    def record(self, decoder: Decoder) -> dict:
        return decoder.record()

    def target(self, decoder: Decoder) -> str | None:
        return decoder.params["target"]

    def skip_reason(self, decoder: Decoder, checkpoint: str) -> str | None:
        target = self.target(decoder)
        return f"it is its own target ({target})" if target == checkpoint else None

    def prepare(self, decoder: Decoder, model, run, load: Callable[[str], Any]) -> Decoder:
        return entropy_match.prepare(decoder, model, run, load)


GENERATE, CONTRASTIVE, ENTROPY_MATCHED = Method(), Contrastive(), EntropyMatched()


@dataclass(frozen=True)
class Preset:
    name: str
    help: str
    fixed: dict = field(default_factory=dict)
    """GenerationConfig fields this preset always sets (e.g. do_sample)."""
    params: dict = field(default_factory=dict)
    """Parameters a user may change via generate.params, with their defaults (their types are enforced)."""
    method: Method = GENERATE
    """How it runs (see `Method`)."""

    @property
    def samples(self) -> bool:
        return bool(self.fixed.get("do_sample") or self.params.get("do_sample"))


def _sampling(name: str, help: str, **params) -> Preset:
    return Preset(name, help, {"do_sample": True}, params)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("greedy", "Argmax at every step (the paper's decoder for hyperfitted models).", {"do_sample": False}),
        _sampling("top_p", "Nucleus sampling (Holtzman et al., 2020) with the paper's reported baseline values.",
                  **REPORTED_TOP_P),
        _sampling("top_k", "Top-k sampling (Fan et al., 2018).", top_k=50, temperature=1.0),
        _sampling("temperature", "Pure temperature sampling over the whole vocabulary.", temperature=0.7),
        _sampling("typical", "Locally typical sampling (Meister et al., 2023).", typical_p=0.95, temperature=1.0),
        _sampling("min_p", "Min-p sampling (Nguyen et al., 2024): keep tokens with p ≥ min_p · p_max.",
                  min_p=0.1, temperature=1.0),
        _sampling("eta", "Eta sampling (Hewitt et al., 2022), entropy-dependent truncation.", eta_cutoff=3e-4),
        _sampling("epsilon", "Epsilon sampling (Hewitt et al., 2022): keep tokens with p ≥ epsilon.",
                  epsilon_cutoff=3e-4),
        Preset("repetition_penalty", "Greedy with the CTRL repetition penalty (Keskar et al., 2019).",
               {"do_sample": False}, {"repetition_penalty": 1.2}),
        Preset("no_repeat_ngram", "Greedy that never repeats an n-gram of its own output (context included).",
               {"do_sample": False}, {"no_repeat_ngram_size": 3}),
        Preset("beam", "Beam search; the highest-scoring beam is kept.", {"do_sample": False},
               {"num_beams": 4, "length_penalty": 1.0}),
        Preset("contrastive", "Contrastive search (Su et al., 2022): top-k candidates scored by "
               "(1−α)·p − α·max cosine similarity to earlier hidden states.",
               {"do_sample": False}, {"penalty_alpha": 0.6, "top_k": 4}, method=CONTRASTIVE),
        Preset("entropy_matched_temperature", "Temperature whose mean teacher-forced entropy on the validation "
               "text equals that of the `target` checkpoint (the hyperfitted model); then sample at it.",
               {}, {"do_sample": True, "target": "final", "max_sequences": 64, "tolerance": 1e-3},
               method=ENTROPY_MATCHED),
    ]
}


@dataclass(frozen=True)
class Decoder:
    """A preset with every parameter resolved; `found` holds values a search chose (entropy matching)."""

    preset: Preset
    params: dict
    found: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def method(self) -> Method:
        return self.preset.method

    @property
    def samples(self) -> bool:
        return bool(self.preset.fixed.get("do_sample") or self.params.get("do_sample"))

    def record(self) -> dict:
        """Everything that decides the output apart from the GenerationConfig's own fields."""
        return {**self.params, **self.found}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise DecoderError(f"unknown decoder {name!r}.{did_you_mean(name, PRESETS)} "
                           f"Known decoders: {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve(name: str, params: Mapping[str, Any] | None = None) -> Decoder:
    """Preset `name` with `params` (generate.params) over its defaults; unknown or mistyped ones fail.

    >>> resolve("top_p", {"top_p": 0.95}).params
    {'top_p': 0.95, 'temperature': 0.7, 'top_k': 50}
    """
    preset = get_preset(name)
    params = dict(params or {})
    problems = []
    for key in params:
        if key not in preset.params:
            valid = ", ".join(preset.params) or "none"
            problems.append(f"generate.params.{key} is not a parameter of decoder {name!r}; its parameters: {valid}")
    out = dict(preset.params)
    for key, value in params.items():
        if key in preset.params:
            try:
                out[key] = coerce(value, type(preset.params[key]))
            except (TypeError, ValueError):
                kind = type(preset.params[key]).__name__
                problems.append(f"generate.params.{key}={value!r} for decoder {name!r} must be a {kind}")
    if problems:
        raise DecoderError("; ".join(problems))
    return Decoder(preset, out)


def generation_config(decoder: str | Decoder, tokenizer, max_new_tokens: int, stop_at_eos: bool = False):
    """A GenerationConfig for a decoder (or preset name), with every sampling field set explicitly.

    For the two methods that run their own loop, it holds what they share with everyone else (length,
    special tokens, do_sample, temperature); their own parameters stay in `Decoder.record()`.
    """
    from transformers import GenerationConfig

    decoder = resolve(decoder) if isinstance(decoder, str) else decoder
    settings = {"do_sample": False, "num_beams": 1, "temperature": 1.0, "top_k": None, "top_p": None}
    settings.update(decoder.preset.fixed)
    settings.update(decoder.method.config_fields(decoder))
    if not settings["do_sample"]:
        settings["temperature"] = 1.0  # irrelevant to argmax; 1.0 keeps transformers from warning
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


def effective_settings(gen_config, decoder: Decoder | None = None) -> dict:
    """The settings that decide the output, for the record in each generation row."""
    keys = ("do_sample", "num_beams", "temperature", "top_k", "top_p", "typical_p", "min_p", "epsilon_cutoff",
            "eta_cutoff", "repetition_penalty", "no_repeat_ngram_size", "length_penalty", "max_new_tokens",
            "min_new_tokens")
    d = gen_config.to_dict()
    out = {k: d.get(k) for k in keys if d.get(k) is not None}
    if out.get("num_beams", 1) == 1:
        out.pop("length_penalty", None)  # only beam search reads it; keep the record to what matters
    if decoder is not None:
        out.update(decoder.method.record(decoder))  # contrastive's penalty_alpha/top_k, the matched temperature, ...
    return out
