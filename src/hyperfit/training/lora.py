"""LoRA hyperfitting (train.method=lora): low-rank adapters through peft on a frozen base model.

    hyperfit run configs/paper.yaml train.method=lora train.lora_rank=16
    hyperfit run configs/paper.yaml train.method=lora train.lora_layers=last:5   # late-stage LoRA

The adapters are injected into the transformers model itself (peft replaces each target Linear by a LoRA
layer), so the loop trains, probes and wraps (DDP) the same model object as for full training; the
PeftModel around it is kept only to save the adapter. Adapters are fp32 whatever model.dtype is: the
precision guard's reasoning holds for them too (an update of lr 1e-6 rounds away on bf16 weights), and
the frozen bf16 base costs 2 B/parameter instead of 16.

Checkpoints hold the adapter (adapter_model.safetensors + adapter_config.json) and the optimizer state;
final/ holds the merged model, which plain transformers loads, and the adapter in final/adapter/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperfit.config import TrainConfig
from hyperfit.errors import TrainError

ADAPTER_DIR = "adapter"  # final/adapter/: the trained adapter beside the merged model
ADAPTER_FILE = "adapter_config.json"  # what marks a folder as holding an adapter, not a whole model
_LAYER_INDEX = re.compile(r"\.(\d+)\.")  # the block index in a module name: model.layers.3.self_attn.q_proj


def is_adapter_folder(path: str | Path | None) -> bool:
    """A checkpoint of a LoRA run: an adapter and no full model (config.json) in it."""
    return path is not None and (Path(path) / ADAPTER_FILE).is_file() and not (Path(path) / "config.json").is_file()


def block_linears(model) -> dict[str, list[str]]:
    """Leaf name → full names of the linear modules inside the model's numbered transformer blocks.

    Linear layers of transformers (nn.Linear, and GPT-2's Conv1D, a 2-D weight used as x @ W) outside the
    blocks (the LM head, embeddings' projections) are not listed: adapters on the output layer change every
    token's logits directly, which is not what 'LoRA on attention and MLP' means."""
    out: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        linear = isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
        if linear and weight is not None and weight.dim() == 2 and _LAYER_INDEX.search(name):
            out.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    return out


def resolve_targets(model, targets: tuple[str, ...]) -> list[str]:
    """train.lora_targets, or every linear leaf name inside the blocks; unknown names are refused."""
    found = block_linears(model)
    if not targets:
        if not found:
            raise TrainError(f"train.method=lora: {type(model).__name__} has no linear layers inside numbered "
                             "transformer blocks to put adapters on; name them with train.lora_targets=[...]")
        return sorted(found)
    unknown = [t for t in targets if t not in found]
    if unknown:
        raise TrainError(f"train.lora_targets={list(targets)}: {', '.join(unknown)} is not a linear layer in the "
                         f"blocks of {type(model).__name__}; its linear layers are {', '.join(sorted(found))}")
    return list(targets)


def num_blocks(model) -> int:
    """Transformer blocks of the model (its text config's num_hidden_layers, or n_layer for GPT-2)."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not n:
        raise TrainError(f"train.lora_layers: cannot tell how many blocks {type(model).__name__} has "
                         "(no num_hidden_layers in its config); use train.lora_layers=all")
    return int(n)


def resolve_layers(spec: str, n_blocks: int) -> list[int] | None:
    """train.lora_layers → block indices (None: all blocks).

    >>> resolve_layers("last:2", 5), resolve_layers("0, 3", 5), resolve_layers("all", 5)
    ([3, 4], [0, 3], None)
    """
    text = str(spec).strip()
    if text == "all":
        return None
    if text.startswith("last:"):
        k = text.removeprefix("last:").strip()
        if not (k.isdigit() and 1 <= int(k) <= n_blocks):
            raise TrainError(f"train.lora_layers={spec!r}: K in last:K must be a whole number from 1 to the "
                             f"model's {n_blocks} blocks, e.g. last:{min(5, n_blocks)}")
        return list(range(n_blocks - int(k), n_blocks))
    items = [x.strip() for x in text.split(",")]
    if not all(x.isdigit() and int(x) < n_blocks for x in items):
        raise TrainError(f"train.lora_layers={spec!r} must be all, last:K or block indices from 0 to {n_blocks - 1} "
                         "separated by commas, e.g. 0,1,4")
    return sorted({int(x) for x in items})


def lora_config(model, cfg: TrainConfig):
    """peft's LoraConfig for train.lora_*, targets and blocks resolved against `model`."""
    from peft import LoraConfig

    layers = resolve_layers(cfg.lora_layers, num_blocks(model))
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=resolve_targets(model, tuple(cfg.lora_targets)), layers_to_transform=layers,
                      bias="none", task_type="CAUSAL_LM")


def add_adapters(model, cfg: TrainConfig, adapter_from: Path | None = None):
    """Freeze `model`, inject LoRA adapters in fp32 (loaded from `adapter_from`, a checkpoint, when resuming);
    returns the PeftModel. `model` itself now computes base + adapter and is what the loop trains."""
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    peft_model = get_peft_model(model, lora_config(model, cfg))
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # peft already upcasts adapters of a bf16 base; made sure of here
    if adapter_from is not None:
        result = set_peft_model_state_dict(peft_model, load_peft_weights(str(adapter_from), device="cpu"))
        missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
        if missing:
            raise TrainError(f"--resume: {adapter_from} lacks adapter weights {missing[:3]}: it was written with other "
                             "train.lora_* settings; resume with the settings of the run that wrote it")
    return peft_model


@dataclass(frozen=True)
class Trained:
    """Which parameters an update changes: counts, and the modules (for the report)."""

    method: str
    trainable: int
    total: int
    targets: tuple[str, ...] = ()
    layers: str = "all"

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def row(self) -> dict:
        """The train_log.jsonl row the report reads."""
        return {"type": "trained", "epoch": 0, "step": 0, "method": self.method, "trainable": self.trainable,
                "total": self.total, "share": self.share, "targets": list(self.targets), "layers": self.layers}


def trained(model, cfg: TrainConfig, peft_model=None) -> Trained:
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    if peft_model is None:
        return Trained("full", trainable, total)
    base = total - trainable  # the adapters are extra parameters: share of the base model's size
    targets = tuple(sorted(next(iter(peft_model.peft_config.values())).target_modules))
    return Trained("lora", trainable, base, targets, cfg.lora_layers)


def save_adapter(peft_model, folder: Path) -> None:
    """adapter_model.safetensors + adapter_config.json into `folder` (rank 0)."""
    peft_model.save_pretrained(str(folder), safe_serialization=True)


def merged(peft_model):
    """The base model with the adapters folded into its weights (plain transformers modules; in place)."""
    return peft_model.merge_and_unload()


def load_merged(base, adapter_folder: Path):
    """`base` with the adapter saved in `adapter_folder` merged in: what a LoRA checkpoint's weights are."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_folder)).merge_and_unload()
