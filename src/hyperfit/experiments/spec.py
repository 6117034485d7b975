"""An experiment spec: a YAML file in configs/experiments/ that names a base run config and the axes to sweep.

    hyperfit experiment configs/experiments/quantity.yaml [--fast] [data.seed=0] [train.lr=3e-4]

    base:
      config: tiny_stories260k.yaml      # a run config, relative to this file (omit: the defaults)
      overrides: {train.updates: 960}    # dotted keys, as on the command line
    axes:                                # the cells are the cross product, in this order
      data.num_train: [8, 16, 32]
      data.seed: [0, 1, 2]
    plots: [ttr_vs_samples]              # hyperfit.experiments.plots.PLOTS
    fast:                                # --fast: a CI-sized cut, written to <name>-fast
      overrides: {data.seq_len: 64}
      axes: {data.num_train: [8, 16], data.seed: [0]}
    submitit: {timeout_min: 60}          # executor parameters for --launcher submitit
    recipe: diversity                    # optional: a paper table or figure from the cells (experiments.recipes)

Reading a spec is pure: nothing is written and no config is resolved here (cells.py does that, per cell).
Every problem found is collected and raised together, naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hyperfit.config import read_config_file
from hyperfit.errors import ConfigError, did_you_mean
from hyperfit.experiments.plots import plot_problems
from hyperfit.experiments.recipes import recipe_problems

SPEC_KEYS = ("name", "base", "axes", "plots", "fast", "submitit", "recipe")
BASE_KEYS = ("config", "overrides")
FAST_KEYS = ("overrides", "axes")


@dataclass(frozen=True)
class Spec:
    name: str
    """The experiment's folder under --out (the spec file's stem unless it says name:; '-fast' for a fast cut)."""
    path: Path
    base_config: Path | None
    """The run config every cell starts from (None: hyperfit's defaults)."""
    overrides: tuple[str, ...]
    """key=value applied to every cell, after the base config, before the axis values."""
    axes: dict[str, tuple] = field(default_factory=dict)
    """Dotted config key → the values it takes; insertion order is the cells' order and their names'."""
    plots: tuple[str, ...] = ()
    submitit: dict = field(default_factory=dict)
    recipe: str | None = None
    """A paper artefact to build from the cells (hyperfit.experiments.recipes: diversity, entropy, shuffle, ...)."""


def is_spec(path: str | Path) -> bool:
    """Whether a YAML file is an experiment spec (it has axes:) rather than a run config."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return isinstance(doc, dict) and "axes" in doc


def load_spec(path: str | Path, fast: bool = False, overrides: Sequence[str] = ()) -> Spec:
    """Read a spec; `fast` applies its fast: section; `overrides` (key=value) go to every cell, except that
    one naming an axis replaces that axis's values (`data.seed=0`, `data.num_train=[8,16]`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment spec {str(path)!r} does not exist; give a YAML file such as "
                          "configs/experiments/quantity.yaml")
    raw = read_config_file(path)  # the run-config reader: duplicate keys refused, errors name the file
    problems = _shape_problems(raw, path)
    if problems:
        raise ConfigError(f"experiment spec {path}:\n  - " + "\n  - ".join(problems))
    base = raw.get("base") or {}
    axes = _axes(raw["axes"], path)
    spec_overrides = {k: as_text(v) for k, v in (base.get("overrides") or {}).items()}
    name = str(raw.get("name") or path.stem)
    if fast:
        section = raw.get("fast") or {}
        spec_overrides.update({k: as_text(v) for k, v in (section.get("overrides") or {}).items()})
        axes.update(_axes(section.get("axes") or {}, path))
        name += "-fast"
    for item in overrides:
        key, text = _split(item)
        if key in axes:
            value = _yaml_value(text)
            axes[key] = tuple(value) if isinstance(value, list) else (value,)
        else:
            spec_overrides[key] = text  # as typed: load_config reads it as `hyperfit run` would
    problems = [f"{k} is both an override and an axis; an axis sets it per cell, so remove it from "
                "base.overrides / fast.overrides" for k in sorted(set(spec_overrides) & set(axes))]
    problems += plot_problems(raw.get("plots") or (), list(axes))
    problems += recipe_problems(raw.get("recipe"))
    if problems:
        raise ConfigError(f"experiment spec {path}:\n  - " + "\n  - ".join(problems))
    config = base.get("config")
    return Spec(name=name, path=path, base_config=(path.parent / config) if config else None,
                overrides=tuple(f"{k}={v}" for k, v in spec_overrides.items()), axes=axes,
                plots=tuple(raw.get("plots") or ()), submitit=dict(raw.get("submitit") or {}),
                recipe=raw.get("recipe"))


def _shape_problems(raw: dict, path: Path) -> list[str]:
    """Every structural problem of a spec: unknown keys, sections of the wrong kind, a missing base file."""
    if "axes" not in raw:
        return [f"no axes: section, so this is not an experiment spec (a run config? run it with `hyperfit run "
                f"{path}`); an experiment needs axes such as `axes: {{data.num_train: [8, 16]}}`"]
    problems = _unknown(raw, SPEC_KEYS, "")
    for key in ("base", "fast", "submitit"):
        if raw.get(key) is not None and not isinstance(raw[key], Mapping):
            problems.append(f"{key}: must be a mapping, got {raw[key]!r}")
    base, fast = raw.get("base") or {}, raw.get("fast") or {}
    if isinstance(base, Mapping):
        problems += _unknown(base, BASE_KEYS, "base.")
        if base.get("config") and not (path.parent / base["config"]).is_file():
            problems.append(f"base.config: {base['config']!r} does not exist beside the spec "
                            f"({path.parent / base['config']}); give a run config's path relative to the spec")
        problems += _mapping_problem(base.get("overrides"), "base.overrides")
    if isinstance(fast, Mapping):
        problems += _unknown(fast, FAST_KEYS, "fast.")
        problems += _mapping_problem(fast.get("overrides"), "fast.overrides")
        problems += _mapping_problem(fast.get("axes"), "fast.axes")
        extra = sorted(set(fast.get("axes") or {}) - set(raw.get("axes") or {})) if isinstance(
            fast.get("axes"), Mapping) else []
        problems += [f"fast.axes.{k}: not an axis of the spec; a fast cut takes subsets of the axes (axes: "
                     f"{', '.join(raw.get('axes') or {}) or 'none'})" for k in extra]
    problems += _mapping_problem(raw.get("axes"), "axes")
    if not isinstance(raw.get("plots") or [], list):
        problems.append(f"plots: must be a list of plot names, got {raw['plots']!r}")
    return problems


def _unknown(section: Mapping, known: Sequence[str], prefix: str) -> list[str]:
    return [f"unknown key {prefix}{k}; known: {', '.join(known)}.{did_you_mean(k, known)}"
            for k in section if k not in known]


def _mapping_problem(value: Any, where: str) -> list[str]:
    if value is None or isinstance(value, Mapping):
        return []
    return [f"{where}: must be a mapping of dotted config keys (e.g. train.lr: 1.0e-3), got {value!r}"]


def _axes(raw: Mapping, path: Path) -> dict[str, tuple]:
    """Dotted key → values; a single value is an axis of one, an empty list has no cells and is refused."""
    axes = {}
    for key, values in raw.items():
        values = tuple(values) if isinstance(values, list) else (values,)
        if not values:
            raise ConfigError(f"experiment spec {path}: axis {key} has no values; give at least one, "
                              f"e.g. {key}: [8, 16]")
        axes[str(key)] = values
    return axes


def _split(item: str) -> tuple[str, str]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. data.seed=0)")
    return key.strip(), text.strip()


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text  # a str field takes any text, as `hyperfit run` allows


def as_text(value: Any) -> str:
    """A value as the text of a key=value override that reads back as the same value.

    >>> as_text(8), as_text(1e-3), as_text("runs/x"), as_text([1, 2]), as_text(None)
    ('8', '0.001', 'runs/x', '[1, 2]', '')
    """
    if value is None:
        return ""  # `key=` unsets an Optional field
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("\n...").strip()
