"""Table 1 of the paper from an experiment's cells: per model and length, the original model's greedy and top-p
continuations, the hyperfitted model's greedy ones, with and without the citation blocker, and the human text:
TTR per domain and averaged over domains, perplexity, and the preference rate where a study or a judge has one.

    recipe: table1       # in a spec whose cells set generate.extra (configs/experiments/table1.yaml)

Preference: a human study's results in the cell (metrics/human_study-*.json, `hyperfit study results`) give,
for the system named <run>/<tag>, the share of its pairings in which it was preferred or judged equal; without
human judgements, the first automatic judge's (`hyperfit study judge`). Blank where neither exists.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hyperfit.experiments.recipes.common import done, save_table
from hyperfit.experiments.recipes.measured import Measured, measured, model_label
from hyperfit.runs import RunDir
from hyperfit.stages.report import markdown_table

VARIANTS = ("original greedy", "original top-p", "hyperfitted greedy", "hyperfitted greedy + blocker", "human")
COLUMNS = ("model", "length", "variant", "domain", "n", "ttr", "perplexity", "preference", "tag", "cell")
# The paper's Table 1 (TinyLlama 1.1B, 256 tokens, averaged over the three domains), for the report's side-by-side.
PAPER = ("Paper (Table 1, TinyLlama 1.1B, 256 tokens, TTR averaged over domains): original greedy 0.24 → "
         "hyperfitted 0.65.")


def variant(g: Measured) -> str | None:
    """Which row of Table 1 a measured generation is, or None (a decoder the table does not show)."""
    if g.decoder == "human":
        return "human"
    if g.checkpoint == "base" and g.block is None:
        return {"greedy": "original greedy", "top_p": "original top-p"}.get(g.decoder)
    if g.checkpoint == "final" and g.decoder == "greedy":
        return "hyperfitted greedy + blocker" if g.block else "hyperfitted greedy"
    return None


def preference(run: RunDir, tag: str) -> float | None:
    """Preferred-or-equal rate of <run>/<tag> in the run's studies: humans first, else the first judge."""
    for path in sorted(run.metrics.glob("human_study*.json")):
        results = json.loads(path.read_text()).get("results", {})
        sources = [results.get("matchups", [])] + [j.get("matchups", []) for j in results.get("judges", {}).values()]
        for matchups in sources:
            rates = [m.get("preferred_or_equal") for m in matchups if str(m.get("system", "")).endswith(f"/{tag}")]
            rates = [r for r in rates if r is not None]
            if rates:
                return sum(rates) / len(rates)
    return None


def cell_rows(cell) -> list[dict]:
    """One row per (variant, length, domain) of a done cell; domain "average" is the mean over domains, "all"
    every context of a run without domains."""
    run, rows = RunDir(cell.path), []
    for g in measured(run):
        name = variant(g)
        if name is None:
            continue
        pref = None if name == "human" else preference(run, g.tag)
        for domain in [*g.domains, "average"] if g.domains else ["all"]:
            key = None if domain == "all" else domain
            n = g.metrics.get("domains", {}).get(domain, {}).get("n") if g.domains else g.metrics.get("n")
            rows.append({"model": model_label(cell.config), "length": g.length, "variant": name, "domain": domain,
                         "n": n, "ttr": g.value("ttr", key),
                         "perplexity": None if name == "human" else g.perplexity(key),
                         "preference": pref if domain in ("average", "all") else None, "tag": g.tag,
                         "cell": cell.name})
    return rows


def summarize(spec, cells: Sequence, rows: Sequence[dict], root: Path) -> list[str]:
    """The recipe's report section; writes <root>/table1.csv."""
    rows = [r for c in done(cells) for r in cell_rows(c)]
    rows.sort(key=lambda r: (r["length"] or 0, r["model"], VARIANTS.index(r["variant"])))
    save_table(root, "table1", COLUMNS, rows)
    lines = ["## Table 1", ""]
    if not rows:
        return lines + ["No finished cell has the table's generations yet.", ""]
    domains = list(dict.fromkeys(r["domain"] for r in rows if r["domain"] not in ("average", "all")))
    avg = "average" if domains else "all"
    for length in sorted({r["length"] for r in rows}, key=lambda x: x or 0):
        at = [r for r in rows if r["length"] == length]
        keys = list(dict.fromkeys((r["model"], r["variant"]) for r in at))
        get = {(r["model"], r["variant"], r["domain"]): r for r in at}
        header = ["model", "variant", *(f"TTR {d}" for d in domains), f"TTR {avg}", f"PPL {avg}", "preference"]
        table = [[m, v, *(get.get((m, v, d), {}).get("ttr") for d in domains), get.get((m, v, avg), {}).get("ttr"),
                  get.get((m, v, avg), {}).get("perplexity"), get.get((m, v, avg), {}).get("preference")]
                 for m, v in keys]
        lines += [f"### {length} tokens", "", *markdown_table(header, table), ""]
    return lines + [f"TTR over the last evaluate.window tokens; PPL: teacher-forced perplexity of those weights on the "
                    f"domain's context documents (the validation text without domains); preference: preferred or "
                    f"equal in a study's pairings. Every row per domain: table1.csv. {PAPER}", ""]
