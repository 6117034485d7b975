"""The metric registry: every metric that `hyperfit evaluate` can compute, by name.

A registered metric takes a `GenerationSet` (all continuations of one decoder on one run, plus what some
metrics compare against) and returns a float, or a `(mean, per_item)` pair when a per-continuation value is
useful for plots. The arithmetic lives in small pure functions beside each registration (`lexical.ttr`,
...), which are what the golden tests check; the registered wrapper only maps a GenerationSet onto them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from hyperfit.errors import MetricError, did_you_mean

MetricValue = Union[float, tuple[float, list[float]]]


@dataclass(frozen=True)
class GenerationSet:
    """What a metric may look at. Optional fields are None when the run does not have them."""

    token_ids: Sequence[Sequence[int]]
    """Generated continuations as token ids (context excluded), one list per context."""
    texts: Sequence[str]
    """The same continuations detokenised."""
    window: int = 96
    """Window for windowed metrics: the last `window` tokens (paper: TTR over the last 96 tokens)."""
    train_ids: Sequence[Sequence[int]] | None = None
    """The hyperfitting training samples (token ids), for overlap / Dataset BLEU."""
    train_texts: Sequence[str] | None = None
    """The training samples detokenised."""
    vocabulary: frozenset[str] | None = None
    """Lower-cased word types of the evaluation corpus, for the non-word rate."""


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[GenerationSet], MetricValue]
    help: str
    needs: tuple[str, ...] = field(default=())  # GenerationSet fields that must not be None


METRICS: dict[str, Metric] = {}


def register(name: str, help: str, needs: tuple[str, ...] = ()):
    """Decorator: `@register("ttr", "type-token ratio ...")` adds the function to METRICS."""

    def wrap(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, fn, help, needs)
        return fn

    return wrap


def get_metric(name: str) -> Metric:
    _load_builtin_metrics()
    if name not in METRICS:
        raise MetricError(f"unknown metric {name!r}.{did_you_mean(name, METRICS)} Known metrics: "
                          f"{', '.join(sorted(METRICS))}.")
    return METRICS[name]


def available_metrics() -> dict[str, Metric]:
    _load_builtin_metrics()
    return dict(METRICS)


def compute(names: Sequence[str], gens: GenerationSet) -> dict[str, dict]:
    """Compute the named metrics; skip (with the reason) those whose inputs this set lacks.

    Returns {name: {"value": float, "per_item": [...]?}} or {name: {"skipped": reason}}.
    All names are checked before any work starts, so a typo fails fast.
    """
    metrics = [get_metric(n) for n in names]
    out: dict[str, dict] = {}
    for m in metrics:
        missing = [f for f in m.needs if getattr(gens, f) is None]
        if missing:
            out[m.name] = {"skipped": f"needs {', '.join(missing)}"}
            continue
        value = m.fn(gens)
        if isinstance(value, tuple):
            out[m.name] = {"value": float(value[0]), "per_item": [float(v) for v in value[1]]}
        else:
            out[m.name] = {"value": float(value)}
    return out


def _load_builtin_metrics() -> None:
    # Importing the modules runs their @register decorators. Optional modules that are missing (a metric
    # family not installed in this checkout) are simply not registered.

    for module in ("lexical", "repetition", "bleu", "overlap"):
        try:
            importlib.import_module(f"hyperfit.metrics.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"hyperfit.metrics.{module}":
                raise
