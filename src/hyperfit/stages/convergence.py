"""Did the run hyperfit? The phenomenon needs training loss near zero (paper: ~0.0 after 20 epochs); a run
that stopped at 0.2 changes little, yet its report read like a success. Runs above NEAR_ZERO say so."""

from __future__ import annotations

from hyperfit.runs import RunDir, read_jsonl

NEAR_ZERO = 0.1  # nats/token; measured hyperfitted runs of stories260K end at 0.002-0.05, unfinished ones 0.2+


def final_train_loss(run: RunDir) -> float | None:
    """The last epoch's mean training loss from train_log.jsonl, or None before any epoch ended."""
    if not run.train_log.is_file():
        return None
    rows = [r for r in read_jsonl(run.train_log, tolerate_tail=True) if r.get("train_loss_epoch") is not None]
    return rows[-1]["train_loss_epoch"] if rows else None


def not_near_zero(loss: float | None, train_cfg) -> str | None:
    """The warning for a final training loss above NEAR_ZERO, with remedies; None when it is near zero.

    >>> from hyperfit.config import TrainConfig
    >>> not_near_zero(0.03, TrainConfig()) is None
    True
    >>> print(not_near_zero(0.21, TrainConfig(epochs=20, lr=1e-6))[:61])
    training loss did not reach near zero: 0.21 after training (≤
    """
    if loss is None or loss <= NEAR_ZERO:
        return None
    budget = f"train.updates={train_cfg.updates}" if train_cfg.updates else f"train.epochs={train_cfg.epochs}"
    return (f"training loss did not reach near zero: {loss:.3g} after training (≤ {NEAR_ZERO} is what "
            f"hyperfitting needs), so this run did not hyperfit and its generations say little about the "
            f"phenomenon. Train longer (now {budget}), or raise train.lr (now {train_cfg.lr:g}; small models "
            "need ~1e-4–1e-3, the paper's 1e-6 is for 1B+ models), or use fewer training samples.")
