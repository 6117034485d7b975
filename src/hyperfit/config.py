"""Typed configuration: YAML + dotted overrides → a frozen `RunConfig`.

Each field's docstring (the string literal under it) is the only copy of its help text: `hyperfit run
--help` reads them from this file's source. Defaults are the paper's values (Carlsson et al., 2025, §3):
2000 sequences × 256 tokens, 20 epochs, Adam lr 1e-6 constant, weight decay 0, batch 8, greedy decoding.

    cfg = load_config("configs/paper.yaml", ["train.lr=1e-4", "data.num_train=64"])
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message names the key, the value and the fix."""


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
    `hyperfit.decoding`)."""
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
    """Greedy decoding with hyperfit.fast_greedy (static KV cache, decode step replayed as a CUDA graph):
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
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. train.lr=1e-4)")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
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
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. generate.decoder=greedy)")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
    return from_dict(raw)


def validate(cfg: RunConfig) -> list[str]:
    """Contradictions and out-of-range values, each naming the flag to change."""
    p = []
    d, t, g = cfg.data, cfg.train, cfg.generate
    for key, value, low in [
        ("data.seq_len", d.seq_len, 2), ("data.num_train", d.num_train, 1), ("data.context_len", d.context_len, 1),
        ("train.batch_size", t.batch_size, 1), ("train.grad_accum", t.grad_accum, 1),
        ("generate.max_new_tokens", g.max_new_tokens, 1), ("generate.batch_size", g.batch_size, 1),
        ("evaluate.window", cfg.evaluate.window, 1), ("train.log_every", t.log_every, 1),
        ("train.keep_checkpoints", t.keep_checkpoints, 1),
    ]:
        if value < low:
            p.append(f"{key}={value} must be at least {low}")
    for key, value in [("data.num_val", d.num_val), ("data.num_contexts", d.num_contexts), ("train.epochs", t.epochs),
                       ("train.probe_every", t.probe_every), ("train.save_every", t.save_every),
                       ("train.probe_val", t.probe_val), ("train.probe_contexts", t.probe_contexts),
                       ("train.probe_new_tokens", t.probe_new_tokens)]:
        if value < 0:
            p.append(f"{key}={value} must not be negative")
    if not d.source:
        p.append("data.source is empty: set it to a text file or a datasets id, e.g. data.source=stories.txt")
    if d.context_len >= d.seq_len:
        p.append(f"data.context_len={d.context_len} must be shorter than data.seq_len={d.seq_len}: contexts are "
                 "the start of held-out documents and the rest is the human continuation")
    if t.lr <= 0:
        p.append(f"train.lr={t.lr} must be positive")
    if t.batch_size % t.grad_accum:
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
    if g.num_samples < 1:
        p.append(f"generate.num_samples={g.num_samples} must be at least 1")
    if g.block_ngrams is not None and g.block_ngrams < 2:
        p.append(f"generate.block_ngrams={g.block_ngrams} must be at least 2 (the paper blocks 6-grams), or null")
    p += _decoder_problems(g)
    if not (g.checkpoint in ("final", "base") or g.checkpoint.startswith("epoch-")):
        p.append(f"generate.checkpoint={g.checkpoint!r} must be final, base or epoch-NNNN")
    if t.keep_checkpoints < 1:
        p.append(f"train.keep_checkpoints={t.keep_checkpoints} must be at least 1 (the checkpoint that --resume needs)")
    return p


def _decoder_problems(g: GenerateConfig) -> list[str]:
    from hyperfit.decoding import DecoderError, resolve  # light: no torch until a GenerationConfig is built

    try:
        resolve(g.decoder, g.params)
    except DecoderError as e:
        return [str(e)]
    return []


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
    node[parts[-1]] = value


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
