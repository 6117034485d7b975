"""Recipes: the paper's tables and figures built from an experiment's cells, each beside the paper's numbers.

    recipe: diversity        # in a spec: report.md gets the recipe's section, <root>/<recipe>.csv, plots/

One small module per recipe, each with `summarize(spec, cells, rows, root) -> list[str]` (report.md lines;
it writes its own CSV and plots into root). Loaded by name when a report is written, so a spec is checked
without importing any of them; those that load models (shuffle, early_stop) cross the torch boundary there.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hyperfit.errors import ConfigError, did_you_mean

RECIPES = {
    "diversity": ("diversity", "Table 2: Self-BLEU, Dataset BLEU, longest overlap (tokens, words): avg and max; "
                               "Fig. 3's overlap histogram"),
    "entropy": ("entropy", "Table 3: entropy and top-k mass of next-token distributions, before and after"),
    "shuffle": ("shuffle", "Fig. 5 left: top-1 agreement heatmap of models trained on reshuffled data"),
    "grokking": ("grokking", "long training, weight-decay variants: val loss and TTR long after zero train loss"),
    "early-stop": ("early_stop", "the checkpoint at the validation-loss minimum against the hyperfitted one"),
    "table1": ("table1", "Table 1: models × {original greedy, original top-p, hyperfitted greedy, + citation "
                         "blocker} × lengths: TTR, perplexity, preference; per domain and average"),
    "data-type": ("data_type", "Table 4: train on one domain, evaluate on each: the TTR and perplexity matrices"),
}


def recipe_problems(name) -> list[str]:
    if name is None or name in RECIPES:
        return []
    return [f"recipe: {name!r} is unknown; known: {', '.join(RECIPES)}.{did_you_mean(str(name), RECIPES)}"]


def get_recipe(name: str) -> ModuleType:
    if name not in RECIPES:
        raise ConfigError(recipe_problems(name)[0])
    return importlib.import_module(f"hyperfit.experiments.recipes.{RECIPES[name][0]}")
