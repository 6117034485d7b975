"""Teacher-forced metrics on held-out text: loss/perplexity, entropy, top-k probability mass, gold rank.

The paper's central observation is here: hyperfitting makes predictions very low-entropy (almost all
mass on the top-1 token) while validation loss and perplexity get much worse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import torch

from hyperfit.dist import map_batches

TOPK = (1, 3, 5)


def token_stats(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums over all positions of next-token statistics; logits [B, T, V] predict targets [B, T].

    >>> lg = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))   # one position, p = (.5, .25, .25)
    >>> s = token_stats(lg, torch.tensor([[1]]))              # the gold token is the 2nd most likely
    >>> [round(s[k].item(), 4) for k in ("nll", "entropy", "top1_mass", "gold_rank")]
    [1.3863, 1.0397, 0.5, 2.0]
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    gold = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    top = p.topk(min(max(TOPK), p.shape[-1]), dim=-1).values.cumsum(-1)
    out = {
        "nll": -gold.sum(),
        "entropy": -(p * logp).sum(-1).sum(),
        # rank 1 = the gold token is the argmax; ties count in the gold token's favour
        "gold_rank": ((logp > gold.unsqueeze(-1)).sum(-1) + 1).float().sum(),
        "count": torch.tensor(float(targets.numel()), device=logits.device),
    }
    for k in TOPK:
        out[f"top{k}_mass"] = top[..., min(k, top.shape[-1]) - 1].sum()
    return out


@torch.no_grad()
def predictive_metrics(model, sequences: Sequence[Sequence[int]], batch_size: int = 16,
                       autocast: str | None = None, temperature: float = 1.0) -> dict[str, float]:
    """Mean per-token metrics of `model` over `sequences` (equal-length token id lists).

    Returns loss (nats/token), perplexity, entropy (nats), top-1/3/5 probability mass, mean gold rank.
    `temperature` divides the logits first (the entropy-matched temperature control searches over it).
    """

    if not sequences:
        return {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast == "bf16" else nullcontext()
    batches = [sequences[s : s + batch_size] for s in range(0, len(sequences), batch_size)]

    def batch_stats(b: int) -> list[dict[str, torch.Tensor]]:
        ids = torch.tensor([list(s) for s in batches[b]], device=device)
        with ctx:
            logits = model(input_ids=ids, use_cache=False).logits  # no KV cache to build for one pass
        return [token_stats(logits[:, :-1] / temperature, ids[:, 1:])]

    totals: dict[str, torch.Tensor] = {}
    # Summed in batch order whichever rank ran a batch: the same numbers as one process.
    for stats in map_batches(len(batches), batch_stats):
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
    model.train(was_training)
    n = totals.pop("count").item()  # one host sync for the whole evaluation
    means = {k: v.item() / n for k, v in totals.items()}
    means["loss"] = means.pop("nll")
    means["perplexity"] = math.exp(min(means["loss"], 700.0))
    return means


@torch.no_grad()
def top1_predictions(model, sequences: Sequence[Sequence[int]], batch_size: int = 16) -> torch.Tensor:
    """Argmax next-token predictions [N, T-1] (for top-1 agreement between models)."""

    device = next(model.parameters()).device
    batches = [sequences[s : s + batch_size] for s in range(0, len(sequences), batch_size)]

    def predict(b: int) -> list[torch.Tensor]:
        ids = torch.tensor([list(s) for s in batches[b]], device=device)
        return [model(input_ids=ids, use_cache=False).logits[:, :-1].argmax(-1).cpu()]

    return torch.cat(map_batches(len(batches), predict))


def top1_agreement(predictions: Sequence[torch.Tensor]) -> list[list[float]]:
    """Matrix of the share of positions where two models' argmax predictions agree.

    >>> top1_agreement([torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 0, 0]])])
    [[1.0, 0.5], [0.5, 1.0]]
    """
    return [[(a == b).float().mean().item() for b in predictions] for a in predictions]
