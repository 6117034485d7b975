"""Typed configuration: YAML + dotted overrides → a frozen, validated `RunConfig`, resolved once.

    hyperfit run configs/paper.yaml train.lr=1e-4 data.num_train=64
    cfg = load_config("configs/paper.yaml", ["train.lr=1e-4", "data.num_train=64"])
    train(cfg.train, cfg.model, run_dir)           # each stage takes its own section

Rooms: `schema` (the dataclasses, each field's help under it: what a newcomer reads), `load` (YAML, overrides,
building), `checks` (ranges and contradictions), `helptext` (`--help` from the schema's docstrings). Imports
neither torch nor transformers.
"""

from hyperfit.config.checks import DECODER_RANGES, RANGES, validate
from hyperfit.config.helptext import field_docs, help_text
from hyperfit.config.load import from_dict, load_config, read_config_file, replace, to_dict
from hyperfit.config.schema import DataConfig, EvaluateConfig, GenerateConfig, ModelConfig, RunConfig, TrainConfig
from hyperfit.errors import ConfigError
from hyperfit.values import Range

__all__ = [
    "ConfigError", "DECODER_RANGES", "DataConfig", "EvaluateConfig", "GenerateConfig", "ModelConfig", "RANGES",
    "Range", "RunConfig", "TrainConfig", "field_docs", "from_dict", "help_text", "load_config", "read_config_file",
    "replace", "to_dict", "validate",
]
