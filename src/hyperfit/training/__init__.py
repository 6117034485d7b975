"""Training: the hyperfitting loop (`hyperfit train`), its engine policy, checkpoints, probes and export."""

from hyperfit.training.loop import train

__all__ = ["train"]
