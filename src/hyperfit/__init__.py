"""hyperfit: the Hyperfitting Phenomenon (Carlsson et al., ICLR 2025) as a toolkit.

Stages read and write a run directory (see `hyperfit.runs`); the public API mirrors the CLI:

    import hyperfit
    cfg = hyperfit.load_config("configs/paper.yaml", ["train.epochs=5"])
    run_dir = hyperfit.run(cfg)

Heavy imports (torch, transformers) happen inside the stage functions, so `import hyperfit` is cheap
and the human-evaluation server never pulls in torch.
"""

import sys
import types

__version__ = "0.1.0"


class CallableStage(types.ModuleType):
    """A stage module that is also its stage function: `hyperfit.train(...)` calls hyperfit.train.train.

    Once a submodule is imported, Python binds it over the package attribute of the same name, so the
    flat API below (`hyperfit.train`, `generate`, `evaluate`, `report`, `compare`) would turn from functions
    into modules after the first `hyperfit.run(...)`. Each of those modules sets this class on itself."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def callable_stage(name: str) -> None:
    sys.modules[name].__class__ = CallableStage


def __getattr__(name):
    # Lazy re-exports: keeps `import hyperfit` free of torch while giving notebooks a flat API.
    from importlib import import_module

    exports = {
        "load_config": "hyperfit.config",
        "RunConfig": "hyperfit.config",
        "RunDir": "hyperfit.runs",
        "run": "hyperfit.pipeline",
        "prepare_data": "hyperfit.data",
        "train": "hyperfit.train",
        "generate": "hyperfit.generate",
        "evaluate": "hyperfit.evaluate",
        "report": "hyperfit.report",
        "compare": "hyperfit.compare",
    }
    if name in exports:
        return getattr(import_module(exports[name]), name)
    raise AttributeError(f"module 'hyperfit' has no attribute {name!r}")
