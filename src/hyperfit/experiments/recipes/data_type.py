"""Table 4 of the paper from an experiment's cells: hyperfit on one domain, evaluate on each: a matrix.

    axes: {data.source: [stories.jsonl, wiki.txt, news.jsonl]}   # one training domain per cell
    recipe: data-type                                            # configs/experiments/data-type.yaml

Every cell continues one evaluation set (data.contexts: drawn by text alone, so it is the same whatever the
training source; training leaves out what overlaps it). A row is a training domain (the data.contexts entry
with that source names it, else the file's stem); a column, an evaluated domain. Values: greedy TTR of the
hyperfitted model, then of the original model (one row: every cell continues the same set with the same
weights) and the teacher-forced perplexity of the hyperfitted model on that domain's documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hyperfit.experiments.recipes.common import done, save_table
from hyperfit.experiments.recipes.measured import measured
from hyperfit.runs import RunDir
from hyperfit.stages.report import markdown_table

COLUMNS = ("trained_on", "evaluated_on", "ttr", "base_ttr", "human_ttr", "perplexity", "base_perplexity", "n", "cell")
PAPER = ("Paper (Table 4): hyperfitting on any of the domains raises greedy TTR on every evaluated domain, not only "
         "on the one trained on; the pattern to look for is a whole row above the original model's row.")


def trained_on(config: dict) -> str:
    """The training domain's name: the data.contexts entry drawn from the same source names it, else its stem."""
    source = str(config["data"]["source"])
    for entry in config["data"].get("contexts") or ():
        if str(entry.get("source")) == source:
            return str(entry.get("domain") or Path(source).stem)
    return Path(source).stem


def cell_rows(cell) -> list[dict]:
    """One row per evaluated domain: the cell's own greedy generations (its generate.max_new_tokens)."""
    gen = cell.config["generate"]
    found = {}
    for g in measured(RunDir(cell.path)):
        if g.block is None and g.length == gen["max_new_tokens"] and g.decoder in (gen["decoder"], "human"):
            found.setdefault(g.checkpoint or "human", g)
    final, base, human = found.get("final"), found.get("base"), found.get("human")
    if final is None:
        return []
    value = lambda g, d: g.value("ttr", d) if g else None  # noqa: E731
    return [{"trained_on": trained_on(cell.config), "evaluated_on": d, "ttr": value(final, d),
             "base_ttr": value(base, d), "human_ttr": value(human, d), "perplexity": final.perplexity(d),
             "base_perplexity": base.perplexity(d) if base else None,
             "n": final.metrics["domains"][d]["n"], "cell": cell.name} for d in final.domains]


def summarize(spec, cells: Sequence, rows: Sequence[dict], root: Path) -> list[str]:
    """The recipe's report section; writes <root>/data-type.csv."""
    rows = [r for c in done(cells) for r in cell_rows(c)]
    save_table(root, "data-type", COLUMNS, rows)
    lines = ["## Table 4: trained on one domain, evaluated on each", ""]
    if not rows:
        return lines + ["No finished cell with per-domain metrics yet (the cells need data.contexts).", ""]
    evaluated = list(dict.fromkeys(r["evaluated_on"] for r in rows))
    trained = list(dict.fromkeys(r["trained_on"] for r in rows))
    get = {(r["trained_on"], r["evaluated_on"]): r for r in rows}
    first = {r["evaluated_on"]: r for r in reversed(rows)}  # the original model's numbers: the same in every cell

    def matrix(key: str, base_key: str, human_key: str | None) -> list[str]:
        body = [[f"hyperfitted on {t}", *(get.get((t, e), {}).get(key) for e in evaluated)] for t in trained]
        body.append(["original model", *(first[e][base_key] for e in evaluated)])
        if human_key:
            body.append(["human text", *(first[e][human_key] for e in evaluated)])
        return markdown_table(["", *(f"on {e}" for e in evaluated)], body)

    return lines + ["Greedy TTR (rows: training domain; columns: evaluated domain):", "",
                    *matrix("ttr", "base_ttr", "human_ttr"), "",
                    "Perplexity on each domain's context documents:", "",
                    *matrix("perplexity", "base_perplexity", None), "", f"Every number: data-type.csv. {PAPER}", ""]
