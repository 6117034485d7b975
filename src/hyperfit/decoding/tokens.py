"""Token bookkeeping every decoding loop shares: EOS ids and the fixed-length rule, cutting a continuation
at EOS, batching contexts, and left padding.

A hyperfit continuation has a fixed length unless generate.stop_at_eos is on: `generation_config` then sets
min_new_tokens == max_new_tokens, every loop bans EOS at every step, and nothing is cut afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def eos_ids(gen_config) -> list[int]:
    """The EOS ids of a GenerationConfig as a list (transformers allows one id, a list, or None).

    >>> from types import SimpleNamespace as C
    >>> eos_ids(C(eos_token_id=2)), eos_ids(C(eos_token_id=[2, 7])), eos_ids(C(eos_token_id=None))
    ([2], [2, 7], [])
    """
    eos = gen_config.eos_token_id
    return [e for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]


def fixed_length(gen_config) -> bool:
    """Whether EOS is banned for the whole continuation (min_new_tokens == max_new_tokens)."""
    return bool(gen_config.min_new_tokens) and gen_config.min_new_tokens == gen_config.max_new_tokens


def banned_eos(gen_config) -> list[int]:
    """EOS ids to ban at every step: all of them for fixed-length continuations, none otherwise (the caller
    then cuts at the first EOS). generate() bans them for min_new_tokens steps, which is the same thing here."""
    return eos_ids(gen_config) if fixed_length(gen_config) else []


def cut_at_eos(row: list[int], gen_config) -> list[int]:
    """`row` up to and including its first EOS; fixed-length rows are returned whole (EOS was banned).

    >>> from types import SimpleNamespace as C
    >>> cut_at_eos([5, 2, 6], C(eos_token_id=2, min_new_tokens=None, max_new_tokens=3))
    [5, 2]
    """
    if fixed_length(gen_config):
        return row
    eos = set(eos_ids(gen_config))
    for i, t in enumerate(row):
        if t in eos:
            return row[: i + 1]
    return row


def batches(contexts: Sequence[Sequence[int]], batch_size: int) -> list[list[list[int]]]:
    """Consecutive batches of `batch_size` contexts (the last one may be short).

    >>> batches([[1], [2], [3]], 2)
    [[[1], [2]], [[3]]]
    """
    return [[list(c) for c in contexts[s : s + batch_size]] for s in range(0, len(contexts), batch_size)]


def left_pad(batch: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of a batch padded on the left, so every row's last token is its newest.

    >>> ids, mask = left_pad([[5, 6], [7]], 0, "cpu")
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max(len(c) for c in batch)
    ids = torch.tensor([[pad] * (width - len(c)) + list(c) for c in batch], device=device)
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in batch], device=device)
    return ids, mask
