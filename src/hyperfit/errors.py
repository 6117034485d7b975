"""Errors a user can fix: each message says what is wrong, the value received, and the fix.

The CLI prints a HyperfitError as one line and exits 2; any other exception is a bug in hyperfit and
keeps its traceback. Each kind also derives from the builtin it refines (ValueError, RuntimeError), so
callers that catch those keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class HyperfitError(Exception):
    """A problem with the user's input, files or machine, not with hyperfit."""


class ConfigError(HyperfitError, ValueError):
    """A config key or value that cannot run the recipe."""


class DataError(HyperfitError, ValueError):
    """A data source that cannot give the samples the config asks for."""


class RunError(HyperfitError, RuntimeError):
    """A run directory missing something a stage needs; the message says which stage makes it."""


class ModelError(HyperfitError, ValueError):
    """A model or tokenizer that cannot be loaded or used as configured."""


class PrecisionError(ModelError):
    """Weights whose dtype would round the configured updates away."""


class DecoderError(HyperfitError, ValueError):
    """An unknown decoder or a parameter outside its range."""


class EntropyMatchError(HyperfitError, ValueError):
    """A temperature that cannot be matched to the target entropy."""


class TrainError(HyperfitError, ValueError):
    """A training setup that would not run the recipe as configured."""


class PlanError(HyperfitError, ValueError):
    """A model or launch `hyperfit plan` cannot size."""


class MetricError(HyperfitError, KeyError):
    """A metric name the registry does not know (a KeyError, as a failed lookup always was)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class LlamaImportError(HyperfitError, ValueError):
    """A llama2.c source that cannot be converted."""


def closest(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.6,
            synonyms: Mapping[str, str] | None = None) -> list[str]:
    """The known names closest to `name`; failing those, the known name a close synonym stands for.

    >>> closest("epoch", ["epochs", "lr"]), closest("learnig_rate", ["epochs", "lr"], synonyms={"learning_rate": "lr"})
    (['epochs'], ['lr'])
    """
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=n, cutoff=cutoff)
    if close or not synonyms:
        return close
    # Stricter than for the names themselves: a synonym's target is one guess removed from what was typed.
    alias = difflib.get_close_matches(str(name), list(synonyms), n=1, cutoff=0.75)
    return [synonyms[alias[0]]] if alias and synonyms[alias[0]] in known else []


def did_you_mean(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.6,
                 synonyms: Mapping[str, str] | None = None) -> str:
    """' Did you mean a, b?' for the known names closest to `name` (see `closest`), else ''.

    >>> did_you_mean("gredy", ["greedy", "top_p"])
    ' Did you mean greedy?'
    >>> did_you_mean("zzz", ["greedy"])
    ''
    """
    close = closest(name, known, n, cutoff, synonyms)
    return f" Did you mean {', '.join(close)}?" if close else ""
