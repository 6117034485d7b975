"""hyperfit: the Hyperfitting Phenomenon (Carlsson et al., ICLR 2025) as a toolkit.

Stages read and write a run directory (see `hyperfit.runs`); the public API mirrors the CLI:

    import hyperfit
    cfg = hyperfit.load_config("configs/paper.yaml", ["train.epochs=5"])
    run_dir = hyperfit.run(cfg)

Heavy imports (torch, transformers) happen inside the stage functions, so `import hyperfit` is cheap
and the human-evaluation server never pulls in torch.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy re-exports: keeps `import hyperfit` free of torch while giving notebooks a flat API.
    from importlib import import_module

    exports = {
        "load_config": "hyperfit.config",
        "RunConfig": "hyperfit.config",
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
