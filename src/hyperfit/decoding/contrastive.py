"""Contrastive search (Su et al., 2022, "A Contrastive Framework for Neural Text Generation"), offline.

    hyperfit generate runs/demo generate.decoder=contrastive "generate.params={penalty_alpha: 0.6, top_k: 4}"

At each step the k most probable next tokens v are candidates; each is scored

    (1 − α) · p(v | x<t)  −  α · max_j cos(h_v, h_j)

where h_v is the last-layer hidden state the model computes *for v* (so every candidate needs a forward
pass) and h_j ranges over the hidden states of every earlier token, context included. The argmax wins.
α = 0 is greedy decoding. transformers offers this method only as downloaded hub code, so it lives here
as a loop over logits that works offline.

Cost: one forward over the context, then per step one forward of B·k single-token rows against the KV
cache repeated k times (a copy of the cache per step: the hidden cost of batching the candidates).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperfit.decoding.tokens import banned_eos, batches, cut_at_eos, left_pad
from hyperfit.dist import map_batches
from hyperfit.models import cache_argument


@torch.no_grad()
def contrastive_search(model, contexts: Sequence[Sequence[int]], gen_config, penalty_alpha: float = 0.6,
                       top_k: int = 4, batch_size: int = 32, logits_processor=None) -> list[list[int]]:
    """Continuations (new tokens only) of each context; length and EOS rules come from `gen_config`."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    todo = batches(contexts, batch_size)

    def search(b: int) -> list[list[int]]:
        ids, mask = left_pad(todo[b], gen_config.pad_token_id, device)
        new = _search_batch(model, ids, mask, gen_config, penalty_alpha, top_k, logits_processor)
        return [cut_at_eos(row, gen_config) for row in new.tolist()]

    try:
        return map_batches(len(todo), search)  # under a launch, the batches are dealt out over the ranks
    finally:
        model.train(was_training)


def _search_batch(model, ids, mask, gen_config, alpha: float, top_k: int, logits_processor) -> torch.Tensor:
    """New tokens [B, max_new_tokens] for one left-padded batch."""
    batch = ids.shape[0]
    # Left padding: positions count real tokens only, as generate() does.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache_kw = cache_argument(model)  # the cache keyword this transformers version speaks
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, output_hidden_states=True)
    cache, logits = getattr(out, cache_kw), out.logits[:, -1].float()
    history = out.hidden_states[-1].float()  # [B, T, D] hidden states of every earlier token
    history_ok = mask.bool()  # padding is not an "earlier token"
    next_pos = positions[:, -1] + 1
    seq = ids
    banned = banned_eos(gen_config)
    rows = torch.arange(batch, device=ids.device)
    for _ in range(gen_config.max_new_tokens):
        if banned:
            logits[:, banned] = float("-inf")
        if logits_processor is not None:
            logits = logits_processor(seq, logits)
        k = min(top_k, logits.shape[-1])
        probs, candidates = logits.softmax(-1).topk(k, dim=-1)  # [B, k]
        # All B·k candidates in one forward pass: row b·k + i is candidate i of sequence b.
        cache.batch_repeat_interleave(k)
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)
        out = model(input_ids=candidates.reshape(-1, 1), attention_mask=mask.repeat_interleave(k, 0),
                    position_ids=next_pos.repeat_interleave(k).unsqueeze(-1), **{cache_kw: cache},
                    use_cache=True, output_hidden_states=True)
        h = out.hidden_states[-1][:, -1].float()  # [B·k, D]
        penalty = max_cosine(h.view(batch, k, -1), history, history_ok)  # [B, k]
        best = ((1 - alpha) * probs - alpha * penalty).argmax(-1)  # [B]
        chosen_rows = rows * k + best
        cache.batch_select_indices(chosen_rows)
        logits = out.logits[chosen_rows, -1].float()
        history = torch.cat([history, h[chosen_rows].unsqueeze(1)], dim=1)
        history_ok = torch.cat([history_ok, history_ok.new_ones(batch, 1)], dim=1)
        seq = torch.cat([seq, candidates[rows, best].unsqueeze(-1)], dim=-1)
        next_pos = next_pos + 1
    return seq[:, ids.shape[1]:]


def max_cosine(candidates: torch.Tensor, history: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """max_j cos(candidates[b, i], history[b, j]) over valid j: [B, k, D] × [B, T, D] → [B, k].

    >>> max_cosine(torch.tensor([[[1., 0.]]]), torch.tensor([[[0., 2.], [3., 3.]]]), torch.tensor([[True, True]]))
    tensor([[0.7071]])
    """
    c = torch.nn.functional.normalize(candidates, dim=-1)
    hist = torch.nn.functional.normalize(history, dim=-1)
    cos = torch.einsum("bkd,btd->bkt", c, hist)
    return cos.masked_fill(~valid.unsqueeze(1), float("-inf")).max(-1).values

