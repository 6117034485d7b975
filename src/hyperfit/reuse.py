"""Reuse across the runs of a sweep: what does not change between cells is computed once, keyed by content.

    with sharing(Path("runs/quantity/cache")):     # hyperfit experiment does this around every cell
        run(cfg)                                   # the stages below look here first

Three things are the same in most cells of a sweep and cost real time: the tokenized source (`data`), the base
model's continuations of the held-out contexts (`generations`; data.num_train does not change the contexts,
which are drawn first) and its teacher-forced metrics on the validation text (`predictive`). Each is stored as
<folder>/<kind>/<key>.json, where the key is the sha256 of everything its value depends on (the weights' content,
the texts, the settings), so a store can only hand back what would have been computed. The citation blocker's
index is remembered in this process (`remember`), keyed by the training ids. Without `sharing`, nothing is
stored and every lookup misses: `hyperfit run` computes everything itself, as before.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyperfit.runs import write_json

_folder: Path | None = None
_memory: OrderedDict = OrderedDict()
MEMORY_ITEMS = 4  # in-process values kept (blocker indexes, tokenized sources): a sweep needs one or two
stats: Counter = Counter()  # "<kind> hit" / "<kind> miss", for benchmarks and progress lines


@contextmanager
def sharing(folder: str | Path | None) -> Iterator[None]:
    """Within the block, stages look up and store their reusable results in `folder` (None: no store)."""
    global _folder
    before, _folder = _folder, Path(folder) if folder is not None else None
    try:
        yield
    finally:
        _folder = before


def active() -> bool:
    return _folder is not None


def load(kind: str, key: str) -> Any | None:
    """The stored value, or None (no store, not stored yet, or a damaged file: then it is computed again)."""
    if _folder is None:
        return None
    try:
        value = json.loads((_folder / kind / f"{key}.json").read_text())
    except (OSError, ValueError):
        stats[f"{kind} miss"] += 1
        return None
    stats[f"{kind} hit"] += 1
    return value


def save(kind: str, key: str, value: Any) -> None:
    if _folder is not None:
        write_json(_folder / kind / f"{key}.json", value)  # atomic: a concurrent reader sees all of it or nothing


def forget() -> None:
    """Drop the in-process values and the counts (a benchmark's fresh start)."""
    _memory.clear()
    stats.clear()


def remember(kind: str, key: str, make: Callable[[], Any]) -> Any:
    """`make()` once per (kind, key) in this process, while sharing; the last MEMORY_ITEMS values are kept."""
    if _folder is None:
        return make()
    if (kind, key) in _memory:
        stats[f"{kind} hit"] += 1
        _memory.move_to_end((kind, key))
        return _memory[(kind, key)]
    stats[f"{kind} miss"] += 1
    value = _memory[(kind, key)] = make()
    while len(_memory) > MEMORY_ITEMS:
        _memory.popitem(last=False)
    return value
