"""Load a causal LM and its tokenizer (hub id or local path) with the paper's settings: dropout off,
fp32 master weights, and a precision guard against updates that would round away.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch

from hyperfit.config import DataConfig, ModelConfig
from hyperfit.dist import device, world
from hyperfit.errors import ModelError, PrecisionError  # noqa: F401 - raised here, importable from here
from hyperfit.images import PALETTE_FILE, has_palette, pixel_tokenizer
from hyperfit.memory_modes import KEPT_TOLERANCE, PROBE_STEPS, RECOMMENDED, guard_share, keeping_modes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _source(cfg: ModelConfig, path: str | Path | None) -> str:
    name = str(path) if path is not None else cfg.name
    p = Path(name)
    # adapter_config.json: a checkpoint of a LoRA run (its tokenizer loads from it, its weights need the base).
    if (name.startswith((".", "/", "~")) or p.exists()) and not any(
            (p / f).is_file() for f in ("config.json", "adapter_config.json")):
        listing = sorted(x.name for x in p.iterdir())[:20] if p.is_dir() else "nothing (no such directory)"
        raise ModelError(f"model.name={name!r} is not a model directory: it needs config.json and weights, and holds "
                         f"{listing}. Give a hub id or a directory written by save_pretrained "
                         "(or `hyperfit import-llama2c` for llama2.c checkpoints)")
    return name


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt",
                   "tokenizer_config.json",
                   PALETTE_FILE, "preprocessor_config.json")  # image models: colour clusters (hyperfit, ImageGPT)


def check_model_files(cfg: ModelConfig, path: str | Path | None = None) -> None:
    """A local model folder has tokenizer files and readable weights: checked up front (the headers only),
    so a damaged download fails before a run folder is written, with the file and the fix."""
    folder = Path(_source(cfg, path))
    if not folder.is_dir():
        return  # a hub id: the hub's files are checked as they download
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"{folder} has no tokenizer files (any of {', '.join(TOKENIZER_FILES)}); save the tokenizer "
                         "beside the weights (tokenizer.save_pretrained(folder)) or copy its files there")
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


def check_safetensors(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{path} cannot be read ({e}): the file is damaged or incomplete; download or export it "
                         "again") from None


def load_model_config(cfg: ModelConfig, path: str | Path | None = None):
    from transformers import AutoConfig

    name = _source(cfg, path)
    try:
        config = AutoConfig.from_pretrained(name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:  # ValueError: a folder whose config.json names no model_type (or has none)
        raise ModelError(f"cannot load the config of model.name={name!r}: {str(e).rstrip('.')}. "
                         "Check the hub id (and network / HF_HUB_OFFLINE) or the local path") from e
    return disable_dropout(config)


def disable_dropout(config):
    """Set every dropout probability in a transformers config to 0 (the paper trains without dropout).

    Names differ by architecture (attention_dropout, hidden_dropout_prob, resid_pdrop, ...), so match them
    by name rather than listing architectures.
    """
    for key, value in list(vars(config).items()):
        if isinstance(value, float) and ("dropout" in key or key.endswith("pdrop")):
            setattr(config, key, 0.0)
    for sub in ("text_config", "decoder"):
        if hasattr(config, sub) and hasattr(getattr(config, sub), "to_dict"):
            disable_dropout(getattr(config, sub))
    return config


def is_image_model(cfg: ModelConfig, config) -> bool:
    """Whether the model reads colour-cluster tokens: model.arch=imagegpt, an ImageGPT config, or a folder
    carrying a pixel palette (a model built or hyperfitted here on images, e.g. a scratch Llama)."""
    if cfg.arch != "auto":
        return cfg.arch == "imagegpt" or has_palette(cfg.name)
    return getattr(config, "model_type", None) == "imagegpt" or has_palette(cfg.name)


def model_class(cfg: ModelConfig, config):
    """AutoModelForCausalLM, or ImageGPTForCausalImageModeling, which transformers lists under causal *image*
    modeling (AutoModelForCausalLM does not map imagegpt)."""
    from transformers import AutoModelForCausalLM

    arch = cfg.arch if cfg.arch != "auto" else ("imagegpt" if config.model_type == "imagegpt" else "causal_lm")
    if arch == "imagegpt":
        from transformers import ImageGPTForCausalImageModeling

        return ImageGPTForCausalImageModeling
    return AutoModelForCausalLM


def load_model(cfg: ModelConfig, path: str | Path | None = None):
    """The model from cfg.name (or `path`, e.g. a checkpoint), dropout off, in cfg.dtype. A checkpoint of a
    LoRA run holds only the adapter: it is merged into cfg.name's weights."""
    from hyperfit.training.lora import is_adapter_folder, load_merged

    if is_adapter_folder(path):
        return load_merged(load_model(cfg), Path(path))
    name = _source(cfg, path)
    config = load_model_config(cfg, path)
    kwargs = {}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = model_class(cfg, config).from_pretrained(
        name, config=config, revision=cfg.revision if path is None else None, dtype=DTYPES[cfg.dtype],
        trust_remote_code=cfg.trust_remote_code, **kwargs)
    return model


def load_for_inference(cfg: ModelConfig, path: str | Path | None = None):
    """The model ready for forwards in this process (generation, loss probes, agreement).

    Under `accelerate launch --config_file configs/accelerate/fsdp2.yaml` with several processes it is
    sharded over them (FSDP2): each GPU holds 1/N of the weights and gathers one layer at a time, so a model
    larger than one GPU still runs (70B in bf16: 140 GB, 17.5 GB per GPU on 8), each rank on its own
    contexts. Otherwise the whole model goes to this process's device.
    """

    launched = world()[1] > 1
    if deepspeed_launch():
        raise ModelError("generation and evaluation do not run under DeepSpeed (a ZeRO-3 model must be wrapped by "
                         "a DeepSpeed engine to run forwards). Launch them with configs/accelerate/fsdp2.yaml "
                         "to shard the model over the GPUs, or ddp.yaml when it fits one GPU")
    model = load_model(cfg, path)
    if launched and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return _shard_for_inference(model)
    return model.to(device())


def _shard_for_inference(model):
    """FSDP2 over the launched processes, computing in the dtype the model was loaded in.

    The launch's mixed precision is the training recipe's (fsdp2.yaml: bf16 compute over fp32 masters).
    Applied here it silently changed generation (bf16 compute while the rows said float32), and
    accelerate upcasts trainable weights to fp32 masters, doubling the memory of a bf16 model.
    So the weights are frozen (nothing to upcast) and sharded with no casting policy: generate.dtype
    decides, as in one process.
    """
    from accelerate import Accelerator
    from accelerate.utils import fsdp2_prepare_model

    model.requires_grad_(False)
    accelerator = Accelerator()
    plugin = accelerator.state.fsdp_plugin
    policy, plugin.mixed_precision_policy = plugin.mixed_precision_policy, None
    try:
        # Accelerator.prepare insists on an optimizer under FSDP2 (it re-points the optimizer's params);
        # with none, its sharding step alone is what inference needs.
        return fsdp2_prepare_model(accelerator, model).eval()
    finally:
        plugin.mixed_precision_policy = policy  # the training loop of `hyperfit run` shares this plugin


def cache_argument(model) -> str:
    """The name of the KV-cache argument of model.forward (and field of its output): transformers 5.x
    names it `past_key_values` or `cache` depending on the version; pyproject allows both."""

    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def deepspeed_launch() -> bool:
    """True under `accelerate launch` with a DeepSpeed config and several processes."""

    return world()[1] > 1 and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"


def has_sharded_weights(model) -> bool:
    """Weights split over processes (FSDP2 DTensors, DeepSpeed ZeRO-3): every forward is a collective."""
    weight = next(model.parameters())
    return hasattr(weight, "device_mesh") or hasattr(weight, "ds_id")


def load_tokenizer(cfg: ModelConfig, path: str | Path | None = None):
    """The tokenizer; for an image model its pixel tokenizer (colour clusters + SOS, hyperfit.images)."""
    from transformers import AutoTokenizer

    name = _source(cfg, path)
    if has_palette(name) or cfg.arch == "imagegpt" or (cfg.arch == "auto" and _hub_imagegpt(cfg, path)):
        return pixel_tokenizer(name, revision=cfg.revision if path is None else None)
    try:
        tok = AutoTokenizer.from_pretrained(name, revision=cfg.revision if path is None else None,
                                            trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:  # ValueError: a folder without tokenizer files ("install sentencepiece")
        check_model_files(cfg, path)
        raise ModelError(f"cannot load the tokenizer of model.name={name!r}: {str(e).rstrip('.')}") from e
    if tok.pad_token_id is None:
        # Contexts all have the same length, so padding never reaches the model; generate() still wants an id.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def _hub_imagegpt(cfg: ModelConfig, path) -> bool:
    try:
        return load_model_config(cfg, path).model_type == "imagegpt"
    except ModelError:
        return False


def build_scratch_model(cfg: ModelConfig, vocab_size: int, positions: int, seed: int):
    """A new, randomly initialised model from model.config (model.init=scratch): a tiny ImageGPT or Llama over
    `vocab_size` tokens (colour clusters + SOS) and `positions` positions (pixels + SOS), dropout off."""
    from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling, LlamaConfig, LlamaForCausalLM

    sizes = {k: v for k, v in cfg.config.items() if k not in ("model_type", "clusters")}
    torch.manual_seed(seed)
    if cfg.config.get("model_type", "imagegpt") == "llama":
        defaults = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=4, tie_word_embeddings=True)
        config = LlamaConfig(**{**defaults, **sizes}, vocab_size=vocab_size, max_position_embeddings=positions,
                             bos_token_id=vocab_size - 1, eos_token_id=None, pad_token_id=0)
        return LlamaForCausalLM(disable_dropout(config))
    defaults = dict(n_embd=64, n_layer=4, n_head=4)
    config = ImageGPTConfig(**{**defaults, **sizes}, vocab_size=vocab_size, n_positions=positions)
    config.bos_token_id, config.pad_token_id = vocab_size - 1, 0
    return ImageGPTForCausalImageModeling(disable_dropout(config))


def context_length(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_lengths(config, data: DataConfig, max_new_tokens: int, probe_new_tokens: int) -> None:
    """Fail before any work if samples or continuations would not fit the model's context window."""
    limit = context_length(config)
    if limit is None:
        return
    problems = []
    if data.seq_len > limit:
        problems.append(f"data.seq_len={data.seq_len} is longer than the model's context of {limit} tokens; "
                        f"set data.seq_len to at most {limit}")
    for key, new in (("generate.max_new_tokens", max_new_tokens), ("train.probe_new_tokens", probe_new_tokens)):
        if data.context_len + new > limit:
            problems.append(f"data.context_len + {key} = {data.context_len} + {new} exceeds the model's context of "
                            f"{limit} tokens; lower {key} to at most {limit - data.context_len}")
    if problems:
        raise ModelError("; ".join(problems))


def lost_update_fraction(model, lr: float, sample: int = 1_000_000) -> dict[torch.dtype, float]:
    """For each low-precision dtype among trainable weights: share of weights where w + lr == w.

    An Adam step moves each weight by about lr, so this is the share of updates that would round away.
    Measured on up to `sample` weights per dtype (exact for small models).
    """
    out = {}
    for dtype in (torch.bfloat16, torch.float16):
        params = [p for p in model.parameters() if p.requires_grad and p.dtype == dtype]
        if not params:
            continue
        flat = torch.cat([p.detach().reshape(-1)[: max(1, sample // len(params))] for p in params])
        step = torch.full_like(flat, lr, dtype=torch.float32)
        moved = (flat.float() + step * torch.sign(flat.float())).to(dtype)
        out[dtype] = (moved == flat).float().mean().item()
    return out


def _reading_text(reading) -> str:
    def one(kept):
        off = abs(1 - kept)
        return f"{kept:.1%} ({'lost' if kept < 1 else 'overshot'} {off:.1%})" if off >= 0.0005 else f"{kept:.1%}"

    (name, _, kept), *rest = reading.parts
    if not rest:
        return f"{one(kept)} of the exact AdamW movement"
    other, share, other_kept = rest[0]
    return (f"{one(kept)} of the exact AdamW movement on the tensors it quantizes and {one(other_kept)} on the "
            f"{share:.1%} of this model's trainable weights in tensors it steps as {other}, "
            f"{reading.error:.1%} off on average,")


def _others() -> str:
    others = [m for m in keeping_modes() if m != RECOMMENDED]
    return f"which keeps lr-1e-6 updates (so do {', '.join(others)}), " if others else "which keeps lr-1e-6 updates, "


def precision_guard(model, lr: float, optimizer: str = "adamw", max_lost: float = 0.5) -> float:
    """Refuse to train when train.optimizer would lose the updates of size lr; returns the kept share.

    The paper's lr 1e-6 is far below bf16's resolution for typical weights (~1e-2 magnitude, 8 bits of
    mantissa → spacing ~1e-4): on an H100 ~98 % of such updates round to nothing and training silently
    does not happen. adamw: fp32 master weights avoid this; on low-precision weights the static check
    (w + lr == w) refuses it. The bf16 memory modes are measured instead, on weights drawn from this model
    (memory_modes.guard_share), and must make the exact AdamW movement within KEPT_TOLERANCE: less loses
    updates, more overshoots them (an optimizer whose bf16 moments stop moving).
    """
    if optimizer != "adamw":
        reading = guard_share(optimizer, model, lr)
        if not reading.passes:
            raise PrecisionError(
                f"train.optimizer={optimizer} made {_reading_text(reading)} at train.lr={lr:g} on this model's "
                f"weights (measured over {PROBE_STEPS} steady-gradient updates; within {KEPT_TOLERANCE:.0%} of "
                f"the exact movement is required). Use train.optimizer={RECOMMENDED}, {_others()}or adamw with "
                "fp32 master weights if memory allows; docs/lowmem.md has each mode's measurement")
        return reading.kept
    for dtype, lost in lost_update_fraction(model, lr).items():
        if lost > max_lost:
            name = str(dtype).replace("torch.", "")
            raise PrecisionError(
                f"{lost:.0%} of the trainable weights are {name} values that an update of train.lr={lr:g} does not "
                f"change (w + lr rounds back to w), so plain AdamW would silently do little or nothing. Keep fp32 "
                f"master weights (model.dtype=float32, the default; compute still runs in bf16 autocast on GPU), or "
                f"keep bf16 weights with a train.optimizer that keeps the updates: {', '.join(keeping_modes())} "
                f"({RECOMMENDED} recommended; `hyperfit plan MODEL` shows their memory)")
    return 1.0
