"""YAML + dotted overrides → a validated, frozen `RunConfig`.

    hyperfit run configs/paper.yaml train.lr=1e-4 data.num_train=64
    cfg = load_config("configs/paper.yaml", ["train.lr=1e-4", "data.num_train=64"])

YAML is 1.1 (PyYAML): an unquoted off/yes reads as a bool, 0755 as octal 493, 2024_01_05 as 20240105. A
field typed str keeps the text as written instead (`name=off` names the run "off", `model.revision: 0755` is
"0755"), in files and overrides alike; every other field gets YAML's value, read by `hyperfit.values.coerce`
(the rule decoder parameters follow too). A key given twice in one mapping is an error (PyYAML would keep the
last silently), and an empty section (`train:` with its keys commented out) is an empty mapping. Every
problem is collected before one ConfigError lists them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional, get_type_hints

import yaml

from hyperfit.config.checks import validate
from hyperfit.config.schema import RunConfig
from hyperfit.errors import ConfigError, closest
from hyperfit.values import coerce, type_name


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML file (or start from the defaults), apply `key.sub=value` overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not is_file(path):
            raise ConfigError(f"config file {str(path)!r} does not exist; "
                              "give the path of a YAML file such as configs/paper.yaml")
        raw = read_config_file(path)
        raw.pop("provenance", None)  # a run's own config.yaml records what made it: a record, not a setting
    for item in overrides:
        _set_dotted(raw, *_parse_override(item, "train.lr=1e-4"))
    return from_dict(raw)


def is_file(path: str | Path) -> bool:
    """Path.is_file, False for a name the OS refuses (ENAMETOOLONG), which is_file would raise as OSError."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def from_dict(raw: dict) -> RunConfig:
    """Build a RunConfig from nested dicts; collect every problem, then raise them together."""
    problems: list[str] = []
    cfg = _build(RunConfig, raw, "", problems)
    if not problems:
        problems += validate(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON."""
    out = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def replace(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """Apply dotted overrides to an existing config (e.g. one read back from a run directory)."""
    raw = to_dict(cfg)
    for item in overrides:
        _set_dotted(raw, *_parse_override(item, "generate.decoder=greedy"))
    return from_dict(raw)


# ---------------------------------------------------------------------------------------------------------
# YAML: duplicate keys refused, str fields kept as written


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last one without a word, so
    a second `train:` section would silently drop the first one's settings."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden key by key, by design
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the SafeLoader below says so
                continue
            if first is not None:
                raise ConfigError(f"{key_node.start_mark.name}: key {key!r} appears twice in the same mapping (lines "
                                  f"{first} and {line}); YAML would keep only the second. Merge them into one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _load_yaml(text: str, name: str, loader=_UniqueKeyLoader) -> Any:
    loader = loader(text)
    loader.name = name  # error marks name the file or override instead of "<unicode string>"
    try:
        return loader.get_single_data()
    except RecursionError:  # PyYAML recurses once per level: a few hundred nested [ or { overflow the stack
        raise ConfigError(f"{name} is nested too deeply for YAML to read (hundreds of levels of [ or {{); "
                          "a config needs a few levels: flatten it") from None
    except ConfigError:  # a duplicate key (a ValueError too): already says what to fix
        raise
    except (ValueError, TypeError, LookupError, AttributeError) as e:
        # PyYAML's constructors raise these, not a YAMLError, for scalars their pattern or tag sends them:
        # the date 2024-13-45, an int of over 4300 digits (Python's limit), !!int xyz, !!bool x, !!set [1].
        raise yaml.constructor.ConstructorError(problem=f"cannot build a value ({str(e).split(';')[0]})",
                                                note="quote it to make it text, or fix it") from None
    finally:
        loader.dispose()


def read_config_file(path: Path) -> dict:
    """The raw sections of a config file (a run's config.yaml too); ConfigError if it cannot be one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({e}); give a readable UTF-8 YAML file") from None
    try:
        raw = _load_yaml(text, str(path)) or {}
        # The same file read without YAML 1.1's typing (every scalar a string), for str fields given unquoted
        # values such as `revision: 0755`. Cheaper than a loader that knows each key's field type. Inside the
        # try: BaseLoader refuses some YAML that SafeLoader reads (a recursive alias such as `a: &a [*a]`).
        as_written = _load_yaml(text, str(path), yaml.BaseLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(raw).__name__}")
    return _str_fields_as_written(raw, as_written, RunConfig)


def _str_fields_as_written(raw: dict, text: Any, cls) -> dict:
    """`raw` with every str field of `cls` (nested sections too) set to its `text` where YAML typed it."""
    hints, out = get_type_hints(cls), dict(raw)
    for name, value in raw.items():
        typ, written = hints.get(name), text.get(name) if isinstance(text, dict) else None
        if typ is not None and dataclasses.is_dataclass(typ) and isinstance(value, dict):
            out[name] = _str_fields_as_written(value, written, typ)
        elif typ is not None and isinstance(written, str):
            out[name] = _as_written(value, written, typ)
    return out


def _as_written(value: Any, text: str, typ: Any) -> Any:
    """For a str field, `text` in place of the bool, number or date YAML 1.1 read from it (off → False,
    0755 → 493, 2024_01_05 → 20240105); quoted strings, lists, mappings and null keep YAML's reading, so
    `key=null` still unsets an Optional[str] and a list is still refused."""
    if value is None or isinstance(value, (str, list, dict)) or typ not in (str, Optional[str]):
        return value
    return text


# ---------------------------------------------------------------------------------------------------------
# Overrides: key.sub=value


def _field_type(key: str) -> Any:
    """Type of the field a dotted key names (None for unknown keys and for keys inside generate.params)."""
    cls: Any = RunConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        cls = get_type_hints(cls).get(part)
    return cls


def _parse_override(item: str, example: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. {example})")
    if not text:
        return key, None  # `key=` unsets an Optional field
    typ = _field_type(key)
    try:
        value = _load_yaml(text, f"override {key}")
    except yaml.YAMLError as e:
        if typ in (str, Optional[str]):
            return key, text  # a str field takes any text, YAML or not (e.g. name=a: b: c)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]  # a ReaderError (e.g. a NUL) has no .problem
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote it or fix it") from None
    return key, _as_written(value, text, typ)


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:  # `train:` with every key commented out reads as None: an empty section
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------------------
# Building the dataclasses

# Names other tools use for the same thing (learning_rate, num_epochs, ...), offered when no field name is close.
SYNONYMS = {"learning_rate": "lr", "num_epochs": "epochs", "num_train_epochs": "epochs", "wd": "weight_decay",
            "train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum", "model_name": "name",
            "max_length": "max_new_tokens", "num_samples": "num_train", "block_size": "seq_len",
            "max_seq_len": "seq_len"}


def _build(cls, raw: Any, prefix: str, problems: list[str]):
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
        return cls()
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    problems += [_unknown_key(key, names, prefix) for key in raw if key not in names]
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, raw[name] if raw[name] is not None else {}, f"{prefix}{name}.", problems)
        else:
            try:
                kwargs[name] = coerce(raw[name], typ)
            except (TypeError, ValueError):
                problems.append(f"{prefix}{name}={raw[name]!r} is not a valid {type_name(typ)}")
    return cls(**kwargs)


def _unknown_key(key: Any, names: list[str], prefix: str) -> str:
    close = closest(key, names, n=1, synonyms=SYNONYMS)
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(names)}"
    return f"unknown key {prefix}{key}{hint}"
