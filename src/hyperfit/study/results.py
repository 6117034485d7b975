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
    cov = summary.get("coverage")
    if cov:
        out += ["## Coverage", "",
                f"{cov['items_with_k']} of {cov['items']} items have at least {cov['k']} judgements (the design's "
                f"k); judgements per item: "
                + ", ".join(f"{n}: {c} items" for n, c in cov["judgements_per_item"].items()) + ".", ""]
    sp = summary.get("speeders") or {}
    if sp:
        out += ["## Time on task", "",
                "Median seconds per judgement (server clock, from the item's first showing): "
                + ", ".join(f"{a} {m:.1f} s" for a, m in sp["median_seconds"].items()) + ".",
                f"Speeders (median under {sp['threshold_seconds']:g} s): "
                + (", ".join(sp["flagged"]) or "nobody") + ".", ""]
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
        agree = summary.get("judge_agreement", {}).get(judge)
        if agree and agree["items"]:
            out += ["", f"Agreement with the humans on {agree['items']} items both judged: "
                        f"{_pct(agree['raw_agreement'])} same verdict as the human majority, Cohen's kappa "
                        f"{_num(agree['cohen_kappa_vs_majority'], '.3f')}; Krippendorff's alpha with the judge as "
                        f"one more rater {_num(agree['krippendorff_alpha_with_judge'], '.3f')}."]
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


def report_section(name: str, summary: dict, config: dict) -> list[str]:
    """The study as the run's report shows it: one table (preferred-or-equal with CI, win/tie/loss,
    coverage, alpha), not raw JSON. Used by `hyperfit report` and by `study results` to update report.md."""
    cov = summary.get("coverage") or {}
    per = cov.get("matchups", {})
    alpha = summary["agreement"]["krippendorff_alpha"]
    lines = ["| Raters | System | vs | Preferred or equal | 95 % CI | Win / tie / loss | Coverage | α |",
             "|---|---|---|---:|---|---|---|---:|"]
    sets = [("humans", summary["matchups"], alpha)] + [
        (j, s["matchups"], math.nan) for j, s in summary.get("judges", {}).items()]
    for raters, rows, a in sets:
        for m in rows:
            c = per.get(f"{m['system']} vs {m['opponent']}")
            coverage = f"{c['items_with_k']} / {c['items']} items with {cov['k']}" if c and raters == "humans" else \
                f"{m['items']} items"
            lines.append(f"| {raters} | {m['system']} | {_label(m['opponent'])} | **{_pct(m['preferred_or_equal'])}** "
                         f"| [{_pct(m['ci_low'])}, {_pct(m['ci_high'])}] | {m['win']} / {m['tie']} / {m['loss']} "
                         f"| {coverage} | {_num(a, '.2f')} |")
    flagged = (summary.get("speeders") or {}).get("flagged") or []
    notes = [f"{summary['judgements']} judgements from {summary['annotators']} annotators"
             + (f"; failed a check: {', '.join(summary['failed_attention_checks'])}"
                if summary["failed_attention_checks"] else "")
             + (f"; speeders: {', '.join(flagged)}" if flagged else "")
             + (" (their judgements excluded)" if summary["dropped_annotators"] else "") + "."]
    return [f"## Human study {name}", "", *lines, "", *notes, ""]


MARK = "<!-- human-study:{name} -->"


def update_report(run_dir: Path, name: str, section: list[str]) -> Path | None:
    """Replace (or append) this study's section in RUN_DIR/report.md, between markers, so the report shows
    the latest results without rerunning `hyperfit report`. None when the run has no report yet."""
    path = run_dir / "report.md"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    start, end = MARK.format(name=name), MARK.format(name=name).replace("<!-- ", "<!-- /")
    block = "\n".join([start, *section, end]) + "\n"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    write_text(path, text)
    return path


def write_results(study_dir: Path, seed: int = 0, drop_failed: bool = False,
                  speeder_seconds: float = analysis.SPEEDER_SECONDS) -> list[Path]:
    """Analyse the study and write every output file; returns their paths. With drop_failed the files
    get their own names (results-drop-failed-checks.*, human_study-STUDY-drop-failed-checks.json), so the
    main results are never replaced by the filtered ones."""
    study_dir = Path(study_dir)
    conn = store.connect(study_dir)
    try:
        rows, config = store.export_rows(conn), store.config(conn)
        design = [dict(r) for r in conn.execute("SELECT id AS item, system_a, system_b FROM items WHERE kind = 'pair'")]
    finally:
        conn.close()
    summary = analysis.summarise(rows, seed=seed, drop_failed=drop_failed, design=design,
                                 k=config["raters_per_item"], speeder_seconds=speeder_seconds)
    suffix = "-drop-failed-checks" if drop_failed else ""
    written = [study_dir / f"results{suffix}.md", study_dir / f"results{suffix}.csv"]
    write_text(written[0], markdown(summary, config, study_dir))
    write_text(written[1], csv_text(summary))
    payload = json.dumps(_finite({"study_dir": str(study_dir.resolve()), "design": config,
                                  "results": summary}), indent=2) + "\n"
    name = study_dir.resolve().name + suffix
    for run_dir in map(Path, config["run_dirs"]):
        if not run_dir.is_dir():  # moved or deleted since `create`: never recreate a run directory
            continue
        # One file per study: a second study of the same run (top-p after greedy) replaced the first's.
        path = run_dir / "metrics" / f"human_study-{name}.json"
        write_text(path, payload)
        written.append(path)
        report = update_report(run_dir, name, report_section(name, summary, config))
        if report:
            written.append(report)
    return written
