"""Typed configuration: YAML + dotted overrides → a frozen `RunConfig`.

Each field's docstring (the string literal under it) is the only copy of its help text: `hyperfit run
--help` reads them from this file's source. Defaults are the paper's values (Carlsson et al., 2025, §3):
2000 sequences × 256 tokens, 20 epochs, Adam lr 1e-6 constant, weight decay 0, batch 8, greedy decoding.

    cfg = load_config("configs/paper.yaml", ["train.lr=1e-4", "data.num_train=64"])

YAML is 1.1 (PyYAML): an unquoted off/yes reads as a bool, 0755 as octal 493, 2024_01_05 as 20240105. A
field typed str keeps the text as written instead (`name=off` names the run "off", `model.revision: 0755` is
"0755"), in files and overrides alike; every other field gets YAML's value. A key given twice in one mapping
is an error (PyYAML would keep the last silently), and an empty section (`train:` with its keys commented
out) is an empty mapping.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import textwrap
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union, get_args, get_origin, get_type_hints

import yaml
from hyperfit.errors import ConfigError  # noqa: F401 - raised here, importable from here


@dataclass(frozen=True)
class DataConfig:
    source: str = ""
    """Required. Text source: a .txt file (documents separated by blank lines), a .jsonl/.csv/.parquet file with a
    text column (see text_field), or a Hugging Face datasets id (needs `pip install datasets`)."""
    text_field: str = "text"
    """Column holding the document text, for .jsonl/.csv/.parquet files and datasets ids."""
    hf_config: Optional[str] = None
    """Dataset configuration name, for a Hugging Face datasets id."""
    split: str = "train"
    """Dataset split, for a Hugging Face datasets id."""
    seq_len: int = 256
    """Tokens per training sample (paper: 256, BOS included when the tokenizer adds one). Documents with
    fewer tokens are skipped; longer ones are truncated."""
    num_train: int = 2000
    """Number of training samples, drawn at random (seeded) from qualifying documents (paper: 2000)."""
    num_val: int = 200
    """Held-out validation sequences (seq_len tokens each) for loss, perplexity and entropy probes."""
    num_contexts: int = 200
    """Held-out generation contexts; the rest of each document is kept as the human continuation."""
    context_len: int = 32
    """Tokens of each held-out document given to the model as context (paper: 32)."""
    max_documents: Optional[int] = None
    """Read at most this many documents from the source (None: all). Useful for huge datasets."""
    seed: int = 0
    """Seed for the random choice of training, validation and context documents."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"
    """Hugging Face hub id or local directory of a causal LM (paper: TinyLlama 1.1B, DeepSeek 7B,
    Llama 3.1 8B/70B). `hyperfit import-llama2c` converts llama2.c checkpoints to such a directory."""
    revision: Optional[str] = None
    """Hub revision (branch, tag or commit) to load."""
    dtype: str = "float32"
    """Dtype of the trainable weights: float32 (the master weights; compute runs in bf16 autocast on GPU),
    bfloat16 or float16 (refused by the precision guard when updates of size lr would round away)."""
    trust_remote_code: bool = False
    """Allow model code from the hub repository (only for models that need it)."""
    attn_implementation: Optional[str] = None
    """Attention kernel passed to transformers (e.g. sdpa, eager, flash_attention_2); None: its default."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    """Passes over the training samples (paper: 20, i.e. 5,000 updates for 2000 samples at batch 8)."""
    lr: float = 1e-6
    """Learning rate, constant (paper: 1e-6 for 1B+ models; a 260K-parameter model needs ~1e-4–1e-3)."""
    weight_decay: float = 0.0
    """AdamW weight decay (paper: 0)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    batch_size: int = 8
    """Global batch size in samples per update, whatever the number of devices (paper: 8)."""
    grad_accum: int = 1
    """Micro-batches per update on each device; batch_size must divide by devices × grad_accum."""
    max_grad_norm: Optional[float] = None
    """Clip the gradient norm to this value (paper: no clipping)."""
    precision: str = "auto"
    """Compute precision: auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp16 or no. Weights stay
    fp32 either way (see model.dtype)."""
    seed: int = 0
    """Seed for weight-independent randomness: data order per epoch and RNG state."""
    stop_at_loss: Optional[float] = None
    """Stop after the epoch whose mean training loss is at or below this value (None: run all epochs)."""
    probe_every: int = 1
    """Run the probes (val loss, entropy, greedy TTR, examples) every this many epochs, and at epoch 0
    before training. 0 turns probes off."""
    probe_contexts: int = 32
    """Held-out contexts continued greedily in each probe (greedy TTR and examples)."""
    probe_new_tokens: int = 96
    """Tokens generated per context in a probe; the TTR is over these (paper's window: 96)."""
    probe_val: int = 64
    """Validation sequences used by each probe (loss, perplexity, entropy, top-1 mass)."""
    save_every: int = 1
    """Write a resumable checkpoint every this many epochs (0: only the final model)."""
    keep_checkpoints: int = 1
    """How many epoch checkpoints to keep (oldest deleted first); final/ is always kept."""
    log_every: int = 10
    """Log the training loss every this many updates (each log is a device-to-host sync)."""
    tracker: Optional[str] = None
    """Also send metrics to an accelerate tracker: tensorboard, wandb, mlflow, comet_ml, aim, ..."""
    push_to_hub: Optional[str] = None
    """Upload the final model with its model card to this hub repository id when training ends."""
    compile: Optional[bool] = None
    """torch.compile the model and the loss for training (None: on with CUDA, off on CPU). Costs tens of
    seconds of compilation once; set false to debug or when the compiler fails on a model."""
    activation_checkpointing: bool = False
    """Recompute activations in backward instead of storing them: less memory, ~30 % more compute. Only
    when memory needs it (see `hyperfit plan`); under FSDP set fsdp_activation_checkpointing in its YAML."""
    optimizer: str = "adamw"
    """adamw (fp32 master weights, the paper's), or adamw_kahan: bf16 weights (model.dtype=bfloat16) with
    Kahan-compensated updates, so lr 1e-6 updates are not rounded away; 10 instead of 16 bytes/parameter."""


@dataclass(frozen=True)
class GenerateConfig:
    decoder: str = "greedy"
    """Decoding preset: greedy (the paper's), top_p (the paper's baseline), top_k, temperature, typical, min_p,
    eta, epsilon, repetition_penalty, no_repeat_ngram, beam, contrastive, entropy_matched_temperature (see
    `hyperfit.decoding.presets`)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the decoder over its preset's defaults, e.g. generate.params={top_p: 0.95} or
    generate.params.top_p=0.95; an unknown one is an error listing the preset's parameters."""
    num_samples: int = 1
    """Continuations per context for sampling decoders (rows get sample = 0..n−1, each with its own seed);
    deterministic decoders give one row per context."""
    block_ngrams: Optional[int] = None
    """Citation blocker: forbid the decoder to reproduce any N-token span of the training samples (paper: 6;
    None: off)."""
    block_until_word_end: bool = False
    """With block_ngrams: the paper's variant that lets the model finish the word it is in. Only tokens that
    start a new word are banned, so a copy stops at the next word boundary instead of mid-word."""
    max_new_tokens: int = 256
    """Tokens generated per context (paper: 96, 128 and 256)."""
    stop_at_eos: bool = False
    """Stop a continuation at the end-of-sequence token. Off by default: the paper compares fixed-length
    continuations, and TTR over the last 96 tokens needs at least 96 of them."""
    checkpoint: str = "final"
    """Which weights continue the contexts: final, base (the untrained model.name) or epoch-NNNN."""
    batch_size: int = 32
    """Contexts per generate() call."""
    tag: Optional[str] = None
    """Name of the output file generations/<tag>.jsonl (default: <decoder>, or <checkpoint>-<decoder>
    when checkpoint is not final)."""
    seed: int = 0
    """Seed for sampling decoders."""
    fast: Optional[bool] = None
    """Greedy decoding with hyperfit.decoding.fast_greedy (static KV cache, decode step replayed as a CUDA graph):
    the same tokens as generate() in fp32, without its per-token Python overhead (benchmarks/generate.py
    measures it); in bf16 the two round differently and rows can part where two logits nearly tie. None: on
    with CUDA. Other decoders, or contexts of unequal length, use generate()."""
    dtype: str = "auto"
    """Weights dtype while generating: auto (bfloat16 on CUDA, as the speed numbers in the README are; float32
    elsewhere), float32, bfloat16 or float16. Greedy tokens can differ between dtypes where two logits
    nearly tie, so each generation row records it; float32 reproduces the trained fp32 masters exactly."""
    with_base: bool = True
    """`hyperfit run` also continues the contexts with the untrained model (tag base-<decoder>), so the
    report compares the model before and after hyperfitting."""


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: tuple[str, ...] = (
        "ttr", "ttr_whole", "ttr_words", "distinct_1", "distinct_2", "distinct_4", "rep_2", "rep_4",
        "nonword_rate", "diversity", "self_bleu", "dataset_bleu", "longest_overlap", "overlap_gt10",
    )
    """Metrics computed on generations (see `hyperfit metrics` for the list)."""
    window: int = 96
    """Window for windowed metrics: TTR over the last `window` tokens (paper: 96)."""
    predictive: bool = True
    """Also compute teacher-forced metrics on the validation set: perplexity, entropy, top-1/3/5 mass."""
    batch_size: int = 16
    """Validation sequences per forward pass for the predictive metrics."""


@dataclass(frozen=True)
class RunConfig:
    name: str = "hyperfit"
    """Run name: the run directory is <out_dir>/<name>."""
    out_dir: str = "runs"
    """Parent directory of run directories."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# ---------------------------------------------------------------------------------------------------------
# Loading, overriding, validating


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML file (or start from the defaults), apply `key.sub=value` overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; give the path of a YAML file such as configs/paper.yaml")
        raw = _read_yaml_file(path)
    for item in overrides:
        _set_dotted(raw, *_parse_override(item, "train.lr=1e-4"))
    return from_dict(raw)


def from_dict(raw: dict) -> RunConfig:
    """Build a RunConfig from nested dicts; collect every problem, then raise them together."""
    problems: list[str] = []
    cfg = _build(RunConfig, raw, "", problems)
    if not problems:
        problems += validate(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON."""
    out = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def replace(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """Apply dotted overrides to an existing config (e.g. one read back from a run directory)."""
    raw = to_dict(cfg)
    for item in overrides:
        _set_dotted(raw, *_parse_override(item, "generate.decoder=greedy"))
    return from_dict(raw)


# ---------------------------------------------------------------------------------------------------------
# YAML: duplicate keys refused, str fields kept as written


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last one without a word, so
    a second `train:` section would silently drop the first one's settings."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden key by key, by design
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the SafeLoader below says so
                continue
            if first is not None:
                raise ConfigError(f"{key_node.start_mark.name}: key {key!r} appears twice in the same mapping (lines "
                                  f"{first} and {line}); YAML would keep only the second. Merge them into one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _load_yaml(text: str, name: str, loader=_UniqueKeyLoader) -> Any:
    loader = loader(text)
    loader.name = name  # error marks name the file or override instead of "<unicode string>"
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml_file(path: Path) -> dict:
    text = path.read_text()
    try:
        raw = _load_yaml(text, str(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(raw).__name__}")
    # The same file read without YAML 1.1's typing (every scalar a string), for str fields given unquoted
    # values such as `revision: 0755`. Cheaper than a loader that knows each key's field type.
    as_written = _load_yaml(text, str(path), yaml.BaseLoader)
    return _str_fields_as_written(raw, as_written, RunConfig)


def _str_fields_as_written(raw: dict, text: Any, cls) -> dict:
    """`raw` with every str field of `cls` (nested sections too) set to its `text` where YAML typed it."""
    hints, out = get_type_hints(cls), dict(raw)
    for name, value in raw.items():
        typ, written = hints.get(name), text.get(name) if isinstance(text, dict) else None
        if typ is not None and dataclasses.is_dataclass(typ) and isinstance(value, dict):
            out[name] = _str_fields_as_written(value, written, typ)
        elif typ is not None and isinstance(written, str):
            out[name] = _as_written(value, written, typ)
    return out


def _as_written(value: Any, text: str, typ: Any) -> Any:
    """For a str field, `text` in place of the bool, number or date YAML 1.1 read from it (off → False,
    0755 → 493, 2024_01_05 → 20240105); quoted strings, lists, mappings and null keep YAML's reading, so
    `key=null` still unsets an Optional[str] and a list is still refused."""
    if value is None or isinstance(value, (str, list, dict)) or typ not in (str, Optional[str]):
        return value
    return text


def _field_type(key: str) -> Any:
    """Type of the field a dotted key names (None for unknown keys and for keys inside generate.params)."""
    cls: Any = RunConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        cls = get_type_hints(cls).get(part)
    return cls


def _parse_override(item: str, example: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. {example})")
    if not text:
        return key, None  # `key=` unsets an Optional field
    typ = _field_type(key)
    try:
        value = _load_yaml(text, f"override {key}")
    except yaml.YAMLError as e:
        if typ in (str, Optional[str]):
            return key, text  # a str field takes any text, YAML or not (e.g. name=a: b: c)
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({e.problem}); quote it or fix it") from None
    return key, _as_written(value, text, typ)


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:  # `train:` with every key commented out reads as None: an empty section
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------------------
# Validation


class Range(NamedTuple):
    """The values a numeric setting may take; a float must also be finite (nan and inf pass `<` tests)."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False  # low itself excluded: lr > 0, not lr ≥ 0
    open_high: bool = False
    why: str = ""  # appended to the message: what the bound protects, or what null means

    def problem(self, key: str, value: Any) -> str | None:
        if value is None or isinstance(value, bool):  # None: an Optional left unset; bools are not numbers
            return None
        if not math.isfinite(value):
            return f"{key}={value} must be a finite number" + ("" if self == Range() else f" and {self.bounds()}")
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return None if above and below else f"{key}={value} must {self.bounds()}{self.why}"

    def bounds(self) -> str:
        low, high = self.low, self.high
        if high == math.inf and low == 0:
            return "be positive" if self.open_low else "not be negative"
        if high == math.inf:
            return f"be greater than {low}" if self.open_low else f"be at least {low}"
        return f"be in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


POSITIVE, NON_NEGATIVE, AT_LEAST_1 = Range(0, open_low=True), Range(0), Range(1)
SEED = Range(0, 2**32, open_high=True, why=" (numpy refuses negative seeds; 32 bits fit every generator)")

# Every int and float field (test_every_numeric_field_and_decoder_parameter_has_a_range checks that none is
# missing). Values out of range crash late (torch: "Invalid learning rate: nan" after the run folder is
# written) or run silently wrong (weight_decay -1 grows the weights).
RANGES: dict[str, Range] = {
    "data.seq_len": Range(2), "data.num_train": AT_LEAST_1, "data.num_val": NON_NEGATIVE,
    "data.num_contexts": NON_NEGATIVE, "data.context_len": AT_LEAST_1, "data.seed": SEED,
    "data.max_documents": Range(1, why=", or null to read them all"),
    "train.epochs": NON_NEGATIVE, "train.lr": POSITIVE, "train.weight_decay": NON_NEGATIVE, "train.eps": POSITIVE,
    "train.batch_size": AT_LEAST_1, "train.grad_accum": AT_LEAST_1, "train.seed": SEED,
    "train.max_grad_norm": Range(0, open_low=True, why=", or null for no clipping"),
    "train.stop_at_loss": Range(0, why=" (a cross-entropy loss never is), or null to run all epochs"),
    "train.probe_every": NON_NEGATIVE, "train.probe_contexts": NON_NEGATIVE, "train.probe_new_tokens": NON_NEGATIVE,
    "train.probe_val": NON_NEGATIVE, "train.save_every": NON_NEGATIVE, "train.log_every": AT_LEAST_1,
    "train.keep_checkpoints": Range(1, why=" (the checkpoint that --resume needs)"),
    "generate.num_samples": AT_LEAST_1, "generate.max_new_tokens": AT_LEAST_1, "generate.batch_size": AT_LEAST_1,
    "generate.block_ngrams": Range(2, why=" (the paper blocks 6-grams), or null"), "generate.seed": SEED,
    "evaluate.window": AT_LEAST_1, "evaluate.batch_size": AT_LEAST_1,
}

# Numeric decoder parameters (generate.params), as transformers' logits processors check them when
# generation starts, i.e. after training; (decoder, name) entries take precedence over name alone.
DECODER_RANGES: dict[Any, Range] = {
    "temperature": POSITIVE, "top_p": Range(0, 1), "top_k": Range(0, why=" (0: off)"), "min_p": Range(0, 1),
    "typical_p": Range(0, 1, True, True), "eta_cutoff": Range(0, 1, True, True),
    "epsilon_cutoff": Range(0, 1, True, True), "repetition_penalty": Range(0, open_low=True, why=" (1: none)"),
    "no_repeat_ngram_size": AT_LEAST_1, "num_beams": AT_LEAST_1, "length_penalty": Range(),
    "penalty_alpha": Range(0, 1), "max_sequences": AT_LEAST_1, "tolerance": POSITIVE,
    ("contrastive", "top_k"): Range(1, why=" (candidates scored per step)"),
}


def validate(cfg: RunConfig) -> list[str]:
    """Contradictions and out-of-range values, each naming the flag to change."""
    p = _range_problems(cfg)
    d, t, g = cfg.data, cfg.train, cfg.generate
    if not d.source:
        p.append("data.source is empty: set it to a text file or a datasets id, e.g. data.source=stories.txt")
    if d.context_len >= d.seq_len:
        p.append(f"data.context_len={d.context_len} must be shorter than data.seq_len={d.seq_len}: contexts are "
                 "the start of held-out documents and the rest is the human continuation")
    if t.grad_accum >= 1 and t.batch_size % t.grad_accum:
        p.append(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}; "
                 "the global batch is fixed, so choose grad_accum among its divisors")
    if t.precision not in ("auto", "bf16", "fp16", "no"):
        p.append(f"train.precision={t.precision!r} must be one of auto, bf16, fp16, no")
    if t.optimizer not in ("adamw", "adamw_kahan"):
        p.append(f"train.optimizer={t.optimizer!r} must be adamw or adamw_kahan")
    elif t.optimizer == "adamw_kahan" and cfg.model.dtype != "bfloat16":
        p.append(f"train.optimizer=adamw_kahan compensates bf16 rounding, but model.dtype={cfg.model.dtype}; set "
                 "model.dtype=bfloat16 with it, or use train.optimizer=adamw for fp32 master weights")
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        p.append(f"model.dtype={cfg.model.dtype!r} must be one of float32, bfloat16, float16")
    if g.dtype not in ("auto", "float32", "bfloat16", "float16"):
        p.append(f"generate.dtype={g.dtype!r} must be one of auto, float32, bfloat16, float16")
    p += _decoder_problems(g)
    if not (g.checkpoint in ("final", "base") or g.checkpoint.startswith("epoch-")):
        p.append(f"generate.checkpoint={g.checkpoint!r} must be final, base or epoch-NNNN")
    return p


def _range_problems(cfg: RunConfig) -> list[str]:
    p = [RANGES[key].problem(key, _get(cfg, key)) for key in RANGES]
    betas = cfg.train.betas
    if len(betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in betas):  # torch: IndexError, or refusal
        p.append(f"train.betas={list(betas)} must be two numbers in [0, 1) (Adam's beta1 and beta2), "
                 "e.g. train.betas=[0.9,0.999]")
    return [m for m in p if m]


def _get(cfg: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _decoder_problems(g: GenerateConfig) -> list[str]:
    from hyperfit.decoding.presets import DecoderError, resolve  # light: no torch until a GenerationConfig is built

    try:
        decoder = resolve(g.decoder, g.params)
    except DecoderError as e:
        return [str(e)]
    p = []
    for name in g.params:  # the presets' own defaults are in range; check what the user gave
        rule = DECODER_RANGES.get((g.decoder, name)) or DECODER_RANGES.get(name)
        if rule is not None and isinstance(decoder.params[name], (int, float)):
            p.append(rule.problem(f"generate.params.{name}", decoder.params[name]))
    return [m for m in p if m]


SYNONYMS = {"learning_rate": "lr", "num_epochs": "epochs", "num_train_epochs": "epochs", "wd": "weight_decay",
            "train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum", "model_name": "name",
            "max_length": "max_new_tokens", "num_samples": "num_train", "block_size": "seq_len", "max_seq_len": "seq_len"}


def _build(cls, raw: Any, prefix: str, problems: list[str]):
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
        return cls()
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            if not close:  # names other tools use for the same thing (learning_rate, num_epochs, ...)
                alias = difflib.get_close_matches(str(key), SYNONYMS, n=1, cutoff=0.75)
                close = [SYNONYMS[alias[0]]] if alias and SYNONYMS[alias[0]] in names else []
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(names)}"
            problems.append(f"unknown key {prefix}{key}{hint}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, raw[name] if raw[name] is not None else {}, f"{prefix}{name}.", problems)
        else:
            try:
                kwargs[name] = _coerce(raw[name], typ)
            except (TypeError, ValueError):
                problems.append(f"{prefix}{name}={raw[name]!r} is not a valid {_type_name(typ)}")
    return cls(**kwargs)


def _coerce(value: Any, typ: Any) -> Any:
    origin, args = get_origin(typ), get_args(typ)
    if origin is Union:  # Optional[X]
        if value is None or value == "None":  # --help prints unset fields as None; `key=None` means unset
            return None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if origin is dict:
        if value is None:  # `params:` with every entry commented out: nothing over the preset's defaults
            return {}
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError
        inner = args[0]
        return tuple(_coerce(v, inner) for v in value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        return int(value)
    if typ is float:
        if isinstance(value, bool):
            raise TypeError
        return float(value)  # YAML reads 1e-6 as a string; float() accepts it
    if typ is str:
        if value is None or isinstance(value, (dict, list)):
            raise TypeError
        if isinstance(value, bool):  # YAML 1.1 reads no/off/yes/on as booleans: `precision: no` is "no"
            return "yes" if value else "no"
        return str(value)
    return value


def _type_name(typ: Any) -> str:
    origin, args = get_origin(typ), get_args(typ)
    if origin is Union:
        return "value or null (" + _type_name(next(a for a in args if a is not type(None))) + ")"
    if origin is tuple:
        return "list"
    if origin is dict:
        return "mapping (e.g. {top_p: 0.95})"
    return getattr(typ, "__name__", str(typ))


# ---------------------------------------------------------------------------------------------------------
# Help text: read the docstrings under each field from this module's source.


@lru_cache(maxsize=None)
def field_docs(cls) -> dict[str, str]:
    """{field name: docstring} for a config dataclass, from the string literal below each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def help_text(width: int = 100) -> str:
    """Every field with its default and meaning, grouped by section."""
    lines = []
    defaults = RunConfig()
    for section in ("", "data", "model", "train", "generate", "evaluate"):
        obj = getattr(defaults, section) if section else defaults
        docs = field_docs(type(obj))
        lines.append(f"{section or 'run'}:")
        for f in fields(obj):
            if dataclasses.is_dataclass(getattr(obj, f.name)):
                continue
            key = f"{section}.{f.name}" if section else f.name
            default = getattr(obj, f.name)
            default = ",".join(map(str, default)) if isinstance(default, tuple) else default
            lines.append(f"  {key}={default}")
            lines += textwrap.wrap(docs.get(f.name, ""), width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
