"""hyperfit: the Hyperfitting Phenomenon (Carlsson et al., ICLR 2025) as a toolkit.

Stages read and write a run directory (see `hyperfit.runs`); the public API mirrors the CLI:

    import hyperfit
    cfg = hyperfit.load_config("configs/paper.yaml", ["train.epochs=5"])
    run_dir = hyperfit.run(cfg)

The stage functions are re-exported lazily, so `import hyperfit` stays free of torch and the
human-evaluation server never loads it.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "hyperfit.config",
    "RunConfig": "hyperfit.config",
    "RunDir": "hyperfit.runs",
    "HyperfitError": "hyperfit.errors",
    "run": "hyperfit.stages.pipeline",
    "prepare_data": "hyperfit.stages.data",
    "train": "hyperfit.training",
    "generate": "hyperfit.stages.generate",
    "evaluate": "hyperfit.stages.evaluate",
    "report": "hyperfit.stages.report",
    "compare": "hyperfit.stages.compare",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hyperfit' has no attribute {name!r}")
