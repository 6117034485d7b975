"""The probe rows of a cell's train_log.jsonl, the training curves the grokking and early-stop recipes read."""

from __future__ import annotations

from pathlib import Path

from hyperfit.runs import RunDir, read_jsonl

NEAR_ZERO = 0.1  # training loss (nats/token) counted as "reached zero": the paper's runs go below ~0.1


def probe_rows(path: Path) -> list[dict]:
    """Probe rows (step, train_loss, val_loss, greedy_ttr, ...), in update order."""
    run = RunDir(path)
    if not run.train_log.is_file():
        return []
    return sorted((r for r in read_jsonl(run.train_log, tolerate_tail=True) if r.get("type") == "probe"),
                  key=lambda r: r["step"])


def first_near_zero(probes: list[dict], threshold: float = NEAR_ZERO) -> dict | None:
    """The first probe whose training loss is at or below `threshold`.

    >>> first_near_zero([{"step": 0, "train_loss": 2.0}, {"step": 5, "train_loss": 0.05}])["step"]
    5
    """
    return next((p for p in probes if p.get("train_loss") is not None and p["train_loss"] <= threshold), None)


def val_minimum(probes: list[dict]) -> dict | None:
    """The probe at the lowest validation loss (the earliest of equals).

    >>> val_minimum([{"step": 0, "val_loss": 2.0}, {"step": 5, "val_loss": 1.5}, {"step": 9, "val_loss": 1.5}])["step"]
    5
    """
    scored = [p for p in probes if p.get("val_loss") is not None]
    return min(scored, key=lambda p: (p["val_loss"], p["step"])) if scored else None
