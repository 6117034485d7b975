"""What a setting's value may be: its type (`coerce`) and its numeric range (`Range`).

    hyperfit run configs/paper.yaml train.lr=1e-4 "generate.params={top_p: 0.95}"

Config fields (`hyperfit.config`) and decoder parameters (`hyperfit.decoding.presets`) are both read from
YAML and checked by the same two rules, so `top_p: 0.95` and `train.lr: 1e-4` accept and refuse the same
spellings. This module imports nothing of hyperfit: config depends on the decoding presets (to check decoder
parameters), so a shared rule living in either package would make an import cycle.

    >>> coerce("1e-6", float), coerce(3.0, int), coerce(False, str)
    (1e-06, 3, 'no')
    >>> Range(0, 1).problem("top_p", 1.5)
    'top_p=1.5 must be in [0, 1]'
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Union, get_args, get_origin


def coerce(value: Any, typ: Any) -> Any:
    """`value` (as YAML read it) as type `typ`; TypeError or ValueError when it is not one."""
    origin, args = get_origin(typ), get_args(typ)
    if origin is Union:  # Optional[X]
        if value is None or value == "None":  # --help prints unset fields as None; `key=None` means unset
            return None
        return coerce(value, next(a for a in args if a is not type(None)))
    if origin is dict:
        if value is None:  # `params:` with every entry commented out: nothing over the preset's defaults
            return {}
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return tuple(coerce(v, args[0]) for v in value)
    return _scalar(value, typ)


def _scalar(value: Any, typ: Any) -> Any:
    # bool is an int subclass: True must not pass as 1, nor 1 as True.
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        return int(value)
    if typ is float:
        if isinstance(value, bool):
            raise TypeError
        try:
            return float(value)  # YAML 1.1 reads 1e-6 (no dot) as a string; float() accepts it
        except OverflowError:  # an int of 309+ digits: no float holds it
            raise ValueError(f"{value} is too large for a float") from None
    if typ is str:
        if value is None or isinstance(value, (dict, list)):
            raise TypeError
        if isinstance(value, bool):  # YAML 1.1 reads no/off/yes/on as booleans: `precision: no` is "no"
            return "yes" if value else "no"
        return str(value)
    return value


def type_name(typ: Any) -> str:
    """How an error message names a type: "value or null (int)", "list", "mapping (...)"."""
    origin, args = get_origin(typ), get_args(typ)
    if origin is Union:
        return "value or null (" + type_name(next(a for a in args if a is not type(None))) + ")"
    if origin is tuple:
        return "list"
    if origin is dict:
        return "mapping (e.g. {top_p: 0.95})"
    return getattr(typ, "__name__", str(typ))


class Range(NamedTuple):
    """The values a numeric setting may take; a float must also be finite (nan and inf pass `<` tests)."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False  # low itself excluded: lr > 0, not lr ≥ 0
    open_high: bool = False
    why: str = ""  # appended to the message: what the bound protects, or what null means

    def problem(self, key: str, value: Any) -> str | None:
        if value is None or isinstance(value, bool):  # None: an Optional left unset; bools are not numbers
            return None
        # An int past 64 bits: math.isfinite would overflow converting it, and numpy and torch later.
        if isinstance(value, int) and abs(value) >= 2**63:
            return f"{key}={value} must fit in 64 bits" + ("" if self == Range() else f" and {self.bounds()}")
        if not math.isfinite(value):
            return f"{key}={value} must be a finite number" + ("" if self == Range() else f" and {self.bounds()}")
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return None if above and below else f"{key}={value} must {self.bounds()}{self.why}"

    def bounds(self) -> str:
        low, high = self.low, self.high
        if high == math.inf and low == 0:
            return "be positive" if self.open_low else "not be negative"
        if high == math.inf:
            return f"be greater than {low}" if self.open_low else f"be at least {low}"
        return f"be in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


POSITIVE, NON_NEGATIVE, AT_LEAST_1 = Range(0, open_low=True), Range(0), Range(1)
