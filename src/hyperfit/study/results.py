"""Write a study's results: STUDY_DIR/results.md, results.csv, and RUN_DIR/metrics/human_study-STUDY.json.

    hyperfit study results STUDY_DIR [--drop-failed-checks]

The JSON beside the run's other metrics is what `hyperfit report` picks up, so the human study appears
in the run's report next to the automatic metrics.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

# Atomic writes come from the run-directory module (stdlib + yaml only: still no torch here).
from hyperfit.runs import write_text
from hyperfit.study import analysis, store

CSV_COLUMNS = ("raters", "system", "opponent", "items", "judgements", "preferred_or_equal", "ci_low",
               "ci_high", "win", "tie", "loss", "win_rate", "tie_rate", "loss_rate")


def _finite(value):
    """NaN -> None, recursively: JSON has no NaN, and a reader should see "undefined", not a number."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f} %"


def _num(x: float, spec: str) -> str:
    return "n/a" if x is None or math.isnan(x) else format(x, spec)


def _label(name: str) -> str:
    return f"{name} (human reference)" if name.endswith("/original") else name


def matchup_table(rows: list[dict]) -> list[str]:
    lines = ["| System | vs | Items | Judgements | Preferred or equal | 95 % CI | Win | Tie | Loss |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for m in rows:
        ci = f"[{_pct(m['ci_low'])}, {_pct(m['ci_high'])}]"
        lines.append(f"| {m['system']} | {_label(m['opponent'])} | {m['items']} | {m['judgements']} | "
                     f"**{_pct(m['preferred_or_equal'])}** | {ci} | {_pct(m['win_rate'])} | "
                     f"{_pct(m['tie_rate'])} | {_pct(m['loss_rate'])} |")
    return lines


def markdown(summary: dict, config: dict, study_dir: Path) -> str:
    pb, ag = summary["position_bias"], summary["agreement"]
    out = [f"# Human study: {study_dir.name}", "",
           f"Design: {config['n_pair_items']} items, {config['raters_per_item']} annotators per item, "
           f"{len(config['annotators'])} annotators, attention checks {100 * config['attention_checks']:g} %, "
           f"continuations cut to {'at most ' + str(config['max_words']) if config.get('max_words') else 'the full'} "
           "length in whole words (same count on both sides), "
           f"seed {config['seed']}.",
           f"Collected: {summary['judgements']} judgements from {summary['annotators']} annotators "
           f"(median {_num(summary['median_seconds_per_judgement'], '.1f')} s per judgement).", "",
           "## Preferred or equal (humans)", "",
           "Share of judgements where the system's continuation was preferred or rated equally good; "
           "95 % CI by bootstrap over items.", "", *matchup_table(summary["matchups"]), "",
           "## Position bias", "",
           f"Left chosen {pb['left']}, right {pb['right']}, equal {pb['equal']}: left share of decided "
           f"judgements {_pct(pb['left_share'])}, two-sided binomial test p = {_num(pb['p_value'], '.3g')}.", "",
           "## Agreement", "",
           f"Krippendorff's alpha (nominal: a / b / equal) = {_num(ag['krippendorff_alpha'], '.3f')} over "
           f"{ag['items_rated_twice_or_more']} items rated by two or more of {ag['raters']} annotators.", ""]
    if summary["bradley_terry"]:
        out += ["## Bradley-Terry scores", "", "| Rank | System | Score (log strength) |", "|---:|---|---:|"]
        out += [f"| {i} | {_label(b['system'])} | {b['score']:+.3f} |"
                for i, b in enumerate(summary["bradley_terry"], 1)]
        out.append("")
    out += ["## Attention checks", ""]
    checks = summary["attention_checks"]
    if checks:
        out += ["| Annotator | Checks | Failed |", "|---|---:|---:|"]
        out += [f"| {a} | {c['checks']} | {c['failed']} |" for a, c in sorted(checks.items())]
    failed = summary["failed_attention_checks"]
    out += ["", f"Failed at least one check: {', '.join(failed) if failed else 'nobody'}."]
    if summary["dropped_annotators"]:
        out.append("Their judgements are excluded above (--drop-failed-checks).")
    for judge, js in summary["judges"].items():
        out += ["", f"## Automatic judge `{judge}`", "",
                "A preference counts only if it survives swapping the sides; otherwise it is \"equal\".", "",
                *matchup_table(js["matchups"])]
    return "\n".join(out) + "\n"


def csv_text(summary: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for raters, rows in [("humans", summary["matchups"])] + [
            (j, s["matchups"]) for j, s in summary["judges"].items()]:
        for m in rows:
            writer.writerow({**_finite(m), "raters": raters})
    return buf.getvalue()


def write_results(study_dir: Path, seed: int = 0, drop_failed: bool = False) -> list[Path]:
    """Analyse the study and write every output file; returns their paths."""
    study_dir = Path(study_dir)
    conn = store.connect(study_dir)
    try:
        rows, config = store.export_rows(conn), store.config(conn)
    finally:
        conn.close()
    summary = analysis.summarise(rows, seed=seed, drop_failed=drop_failed)
    written = [study_dir / "results.md", study_dir / "results.csv"]
    write_text(written[0], markdown(summary, config, study_dir))
    write_text(written[1], csv_text(summary))
    payload = json.dumps(_finite({"study_dir": str(study_dir.resolve()), "design": config,
                                  "results": summary}), indent=2) + "\n"
    for run_dir in map(Path, config["run_dirs"]):
        if not run_dir.is_dir():  # moved or deleted since `create`: never recreate a run directory
            continue
        # One file per study: a second study of the same run (top-p after greedy) replaced the first's.
        path = run_dir / "metrics" / f"human_study-{study_dir.resolve().name}.json"
        write_text(path, payload)
        written.append(path)
    return written
