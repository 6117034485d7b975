"""Metrics as small pure functions in a registry (see `registry.py`).

Families: `lexical` (TTR, distinct-n, rep-n, non-word rate), `predictive` (teacher-forced perplexity,
entropy, top-k mass on held-out text; these need a model and are computed by `evaluate`/the training
probes rather than from generations), and further families registered by their own modules.
"""

from hyperfit.metrics.registry import GenerationSet, available_metrics, compute, get_metric, register

__all__ = ["GenerationSet", "available_metrics", "compute", "get_metric", "register"]
