"""The entropy-matched temperature control: is hyperfitting just a lower temperature?

    hyperfit generate runs/demo generate.checkpoint=base generate.decoder=entropy_matched_temperature
    hyperfit compare runs/demo --decoders greedy,entropy_matched_temperature

Hyperfitting collapses next-token entropy. The control decodes the *original* model at the temperature T
whose mean teacher-forced entropy on the validation text equals the hyperfitted model's (the `target`
checkpoint, default final); if the hyperfitted model's quality came from sharpness alone, this would match
it. Entropy of softmax(z / T) never decreases as T grows, so T is found by bisection on log T.

With do_sample=false the decoder is plain greedy whatever T is (argmax ignores temperature); the option
exists for completeness and as a check, the meaningful control samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from hyperfit.errors import EntropyMatchError

T_RANGE = (1e-2, 1e2)  # a target outside entropy(T_RANGE) is an error, not a silently clamped T


def mean_entropy(model, sequences: Sequence[Sequence[int]], temperature: float = 1.0, batch_size: int = 16) -> float:
    """Mean teacher-forced entropy (nats/token) of `model` at `temperature` on `sequences`."""
    from hyperfit.metrics.predictive import predictive_metrics

    return predictive_metrics(model, sequences, batch_size, temperature=temperature)["entropy"]


def bisect_temperature(entropy_at: Callable[[float], float], target: float, tolerance: float = 1e-3,
                       max_steps: int = 60) -> tuple[float, float]:
    """(T, entropy_at(T)) with |entropy_at(T) − target| ≤ tolerance, for a non-decreasing entropy_at.

    >>> t, e = bisect_temperature(lambda t: math.log(1 + t), target=math.log(3))   # T = 2
    >>> round(t, 2), abs(e - math.log(3)) <= 1e-3
    (2.0, True)
    """
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    e_lo, e_hi = entropy_at(T_RANGE[0]), entropy_at(T_RANGE[1])
    if not e_lo - tolerance <= target <= e_hi + tolerance:
        raise EntropyMatchError(
            f"target entropy {target:.4f} nats is outside what temperatures {T_RANGE[0]}–{T_RANGE[1]} give "
            f"({e_lo:.4f}–{e_hi:.4f}); the two models are too different to match by temperature")
    t, e = math.exp((lo + hi) / 2), None
    for _ in range(max_steps):
        t = math.exp((lo + hi) / 2)
        e = entropy_at(t)
        if abs(e - target) <= tolerance:
            break
        lo, hi = (math.log(t), hi) if e < target else (lo, math.log(t))
    return t, e


def match_temperature(model, target_model, sequences: Sequence[Sequence[int]], tolerance: float = 1e-3,
                      batch_size: int = 16) -> dict:
    """The temperature at which `model`'s mean entropy on `sequences` equals `target_model`'s at T = 1."""
    target = mean_entropy(target_model, sequences, 1.0, batch_size)
    t, achieved = bisect_temperature(lambda t: mean_entropy(model, sequences, t, batch_size), target, tolerance)
    return {"temperature": t, "target_entropy": target, "matched_entropy": achieved,
            "original_entropy": mean_entropy(model, sequences, 1.0, batch_size)}


def prepare(decoder, model, run, load: Callable, batch_size: int = 16):
    """`decoder` (a resolved presets.Decoder; not imported here, since presets calls this) with its
    temperature found against run's `target` checkpoint (loaded by `load(name)`) on data/val.jsonl."""
    val = [r["input_ids"] for r in run.read_samples("val")][: decoder.params["max_sequences"]]
    if not val:
        raise EntropyMatchError(f"{run.data_file('val')} holds no sequences; entropy matching measures on the "
                                "validation text, so prepare the run with data.num_val > 0")
    target_model = load(decoder.params["target"])
    found = match_temperature(model, target_model, val, decoder.params["tolerance"], batch_size)
    del target_model
    return replace(decoder, found={**found, "matched_on": f"{len(val)} val sequences"})
