"""The paper's tables an experiment spec may ask for (`tables: [table1]`), one registry entry each.

Each reads the cells' run directories (metrics/*.json, generations' first rows, a human study's or a judge's
results where present), writes <experiment>/<name>.csv and returns its section of report.md, with the
paper's numbers beside the measured ones. Cells that are not done are left out; missing numbers are blanks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hyperfit.errors import ConfigError, did_you_mean
from hyperfit.experiments import data_type, table1


@dataclass(frozen=True)
class Table:
    build: Callable[[Sequence, Sequence[dict], Path], list[str]]
    """(cells, their cell.json statuses, the experiment folder) → report lines; writes <name>.csv."""
    help: str


TABLES = {
    "table1": Table(table1.build, "models × {original greedy, original top-p, hyperfitted greedy, + citation "
                                  "blocker} × lengths: TTR, perplexity, preference; per domain and average"),
    "data_type": Table(data_type.build, "train on one domain, evaluate on each: the TTR matrix (Table 4)"),
}


def get_table(name: str) -> Table:
    if name not in TABLES:
        raise ConfigError(f"table {name!r} is unknown; known tables: {', '.join(TABLES)}.{did_you_mean(name, TABLES)}")
    return TABLES[name]


def table_problems(names: Sequence[str]) -> list[str]:
    if not isinstance(names, (list, tuple)):
        return [f"tables: must be a list of table names, got {names!r}"]
    return [f"tables: {n!r} is unknown; known: {', '.join(TABLES)}.{did_you_mean(str(n), TABLES)}"
            for n in names if n not in TABLES]
