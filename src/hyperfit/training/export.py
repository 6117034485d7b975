"""What `hyperfit train` leaves for users: checkpoints/final/ (weights, tokenizer, model card), optionally on the hub.

    hyperfit train runs/demo --push-to-hub me/tinyllama-hyperfitted

checkpoints/final/ is a plain transformers folder: `AutoModelForCausalLM.from_pretrained` (or vLLM) loads it.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub

from hyperfit.config import TrainConfig
from hyperfit.memory_modes import mode
from hyperfit.runs import RunDir
from hyperfit.training.checkpoint import save_checkpoint


def optimizer_card(name: str) -> str:
    m = mode(name)
    return "AdamW on fp32 weights" if name == "adamw" else f"AdamW on bf16 weights, {m.kept_by} ({name})"


def save_final(run: RunDir, accelerator, model, tokenizer, model_name: str, cfg: TrainConfig, summary: dict,
               adapter=None) -> None:
    """checkpoints/final/: the trained weights (gathered from every rank when sharded) and a model card; under
    train.method=lora the merged model, with the adapter in final/adapter/."""
    save_checkpoint(run.final, accelerator, model, tokenizer, None, {},
                    files={"README.md": model_card(model_name, cfg, summary)}, adapter=adapter)


def model_card(model_name: str, cfg: TrainConfig, summary: dict) -> str:
    """README.md of the final folder: what the model is, how to decode it, and the recipe that made it."""
    optimizer = (f"{optimizer_card(cfg.optimizer)}, lr {cfg.lr:g} constant, weight decay {cfg.weight_decay:g}, "
                 f"betas {tuple(cfg.betas)}")
    return f"""---
library_name: transformers
tags: [hyperfitting, hyperfit]
base_model: {model_name}
---
# Hyperfitted {model_name}

Fine-tuned with [hyperfit](https://github.com/) following *The Hyperfitting Phenomenon* (Carlsson et al.,
ICLR 2025): full-parameter next-token training on a small fixed set of samples to near-zero training loss.
Decode it **greedily**; held-out perplexity is expected to be much worse than the base model's.

| recipe | value |
| --- | --- |
| budget | {summary.get('budget')} |
| epochs run | {summary.get('epochs_run')}{' (the last one partial)' if _partial(summary) else ''} |
| updates run | {summary.get('steps')} |
| optimizer | {optimizer} |
| method | {_method(cfg)} |
| global batch | {cfg.batch_size} |
| final train loss | {summary.get('final_train_loss')} |
| seed | {cfg.seed} |
"""


def _method(cfg: TrainConfig) -> str:
    if getattr(cfg, "method", "full") != "lora":
        return "full fine-tuning (every weight)"
    return (f"LoRA r={cfg.lora_rank}, alpha {cfg.lora_alpha:g}, blocks {cfg.lora_layers}, merged into these weights "
            "(the adapter alone: adapter/)")


def _partial(summary: dict) -> bool:
    """Whether a train.updates run stopped inside its last epoch."""
    per_epoch = summary.get("updates_per_epoch")
    return bool(per_epoch) and summary.get("steps", 0) < summary.get("epochs_run", 0) * per_epoch


def push_to_hub(path: Path, repo_id: str) -> None:
    """Upload the final model folder (weights, tokenizer, model card) to the hub."""
    api = huggingface_hub.HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(folder_path=str(path), repo_id=repo_id, commit_message="hyperfit: hyperfitted model")
