"""Report stage: runs → report.md (metrics table, training probes, examples) + plots/training_curves.png.

    hyperfit report runs/demo                         # one run: before (epoch 0 / base) vs after
    hyperfit report runs/a runs/b --out reports/ab    # several runs side by side

Every number in the table says where it came from: run, generations tag, checkpoint and decoder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hyperfit.bench.results import bench_lines
from hyperfit.dist import world
from hyperfit.images import image_report_lines, image_run
from hyperfit.metrics.repetition import ttr_by_position
from hyperfit.runs import RunDir, RunError, atomic_path, file_sha256, load_run_config, read_jsonl, write_text
from hyperfit.stages.convergence import final_train_loss, not_near_zero
from hyperfit.stages.evaluate import reference_lengths
from hyperfit.study import results as study_results

TABLE_METRICS = ("ttr", "ttr_words", "distinct_4", "rep_4", "nonword_rate", "self_bleu", "longest_overlap")
PREDICTIVE = ("loss", "perplexity", "entropy", "top1_mass")
PROBE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_entropy", "val_top1_mass", "greedy_ttr", "weights_changed")


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return out


def staleness(run: RunDir, m: dict) -> str | None:
    """Why a metrics file no longer describes what is on disk, and what to rerun, or None: its generations
    were rewritten since (another decoder setting under the same tag), the final model was trained further
    after them, or `hyperfit data` rewrote the contexts they continue (or, for the human row, measured)."""
    contexts = run.data_file("contexts")
    if m.get("decoder") == "human":
        # Run-directory format 1 files written before contexts_sha256 was recorded have none: not flagged.
        recorded = m.get("contexts_sha256")
        if recorded and contexts.is_file() and recorded != file_sha256(contexts):
            return "the run's contexts changed since; rerun hyperfit evaluate"
        return None
    if "tag" not in m:
        return None
    generations = run.generation_file(m["tag"])
    if not generations.is_file():
        return "its generations file is gone; rerun hyperfit evaluate"
    if m.get("generations_sha256") not in (None, file_sha256(generations)):
        return "the generations changed after it was computed; rerun hyperfit evaluate"
    if (contexts.is_file() and contexts.stat().st_mtime > generations.stat().st_mtime
            and not context_pairs(read_jsonl(generations)) <= own_contexts(run)):
        # Other contexts written after the generations: `hyperfit data` replaced the ones they continue.
        # (Older ones are another run's: see contexts_origin.)
        return "the run's contexts changed since; rerun hyperfit generate"
    weights = run.final / "model.safetensors"
    if m.get("checkpoint") == "final" and weights.is_file() and weights.stat().st_mtime > generations.stat().st_mtime:
        return ("the final model was trained further after these generations; rerun hyperfit generate, then "
                "hyperfit evaluate")
    return None


def context_pairs(rows: Sequence[dict], id_key: str = "context_id") -> set[tuple[str, str]]:
    """(context id, context text) of generation rows (or of data/contexts.jsonl rows, id_key="id"). Every run
    numbers its contexts ctx-00000..., so the id alone does not say which text was continued."""
    return {(r[id_key], r["context"]) for r in rows}


def own_contexts(run: RunDir) -> set[tuple[str, str]]:
    contexts = run.data_file("contexts")
    return context_pairs(read_jsonl(contexts), "id") if contexts.is_file() else set()


def contexts_origin(run: RunDir, m: dict, others: dict[Path, str]) -> str | None:
    """None when the generations behind a metrics file continue this run's own contexts; otherwise whose
    they are: `hyperfit compare A B --contexts-from-first` writes continuations of A's contexts into B.
    Looked for among `others` (resolved run path → report label), then the run's sibling folders."""
    generations = run.generation_file(m.get("tag", ""))
    if m.get("decoder") == "human" or not generations.is_file():
        return None
    pairs = context_pairs(read_jsonl(generations))
    if pairs <= own_contexts(run):
        return None
    here = run.path.resolve()
    siblings = {p.resolve(): str(p) for p in sorted(run.path.parent.iterdir()) if (p / "data/contexts.jsonl").is_file()}
    candidates = {**others, **{p: label for p, label in siblings.items() if p not in others}}
    for path, label in candidates.items():  # the report's own runs first, by their labels
        if path != here and pairs <= own_contexts(RunDir(path)):
            return f"contexts of {label}"
    return "contexts of another run, not this run's data/contexts.jsonl"


SHORT_HUMAN = "shorter than"  # in a human row's label: its texts end before the generations' length


def human_label(run: RunDir, m: dict) -> str:
    """The human row's label; when some of its texts end before the length the generations were cut to (a
    story may be over first), it says how many, since distinct-n, Self-BLEU and whole-text TTR then differ."""
    asked, shorter, spread = m.get("tokens_asked"), m.get("shorter_than_asked"), m.get("reference_tokens")
    # Run-directory format 1 reference files written before tokens_asked was recorded have only "tokens" and
    # no lengths: measured here from the contexts.
    if asked is None and m.get("tokens") and run.data_file("contexts").is_file():
        asked = m["tokens"]
        ids = [c["reference_ids"][:asked] for c in read_jsonl(run.data_file("contexts"))]
        recorded = reference_lengths(ids, asked, m.get("window") or 0)
        shorter, spread = recorded["shorter_than_asked"], recorded["reference_tokens"]
    if not shorter:
        return "human (reference)"
    return f"human (reference; {shorter} of {m['n']} {SHORT_HUMAN} {asked} tokens, median {spread['median']:g})"


def run_labels(runs: Sequence[RunDir]) -> list[str]:
    """Each run's folder name, or as many trailing path parts as it takes to tell runs apart
    (two runs named `a` in different folders must not share a row label, a plot series or a plot file)."""
    parts = [Path(r.path).resolve().parts for r in runs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(r.path) for r in runs]  # the same folder twice


def metrics_rows(runs: Sequence[RunDir]) -> tuple[list[str], list[list]]:
    """One row per (run, generations tag), human reference last per run."""
    rows = []
    labels = run_labels(runs)
    others = {r.path.resolve(): label for r, label in zip(runs, labels)}
    for run, run_label in zip(runs, labels):
        files = sorted(run.metrics.glob("*.json"), key=lambda p: (p.stem.startswith("reference"), p.stem))
        for f in files:
            m = json.loads(f.read_text())
            if "metrics" not in m:
                continue  # e.g. human_study-<study>.json, reported in its own section
            metric = lambda k, m=m: m["metrics"].get(k, {}).get("value")  # noqa: E731
            pred = m.get("predictive", {})
            label = human_label(run, m) if m.get("decoder") == "human" else f"{m['checkpoint']} / {m['decoder']}"
            why = staleness(run, m)
            origin = None if why else contexts_origin(run, m, others)
            label += f" (STALE: {why})" if why else f" ({origin})" if origin else ""
            rows.append([run_label, m["tag"], label] + [metric(k) for k in TABLE_METRICS] +
                        [pred.get(k) for k in PREDICTIVE])
    header = ["run", "tag", "weights / decoder"] + list(TABLE_METRICS) + [f"val {k}" for k in PREDICTIVE]
    return header, rows


DOMAIN_METRICS = ("ttr", "distinct_4", "rep_4", "nonword_rate", "self_bleu")


def domain_lines(runs: Sequence[RunDir]) -> list[str]:
    """The "Per domain" section: each metrics file of a text evaluation set (data.contexts) by domain, then the
    mean over domains; perplexity on each domain's documents. Nothing when no file has domains."""
    rows = []
    for run, run_label in zip(runs, run_labels(runs)):
        for f in sorted(run.metrics.glob("*.json"), key=lambda p: (p.stem.startswith("reference"), p.stem)):
            m = json.loads(f.read_text())
            for domain, d in {**m.get("domains", {}), "average": {"metrics": m.get("domain_mean", {})}}.items():
                if not m.get("domains"):
                    break
                pred = m.get("predictive_domains", {}).get(domain, {})
                rows.append([run_label, m["tag"], domain, d.get("n")] + [d["metrics"].get(k) for k in DOMAIN_METRICS]
                            + [pred.get("perplexity")])
    if not rows:
        return []
    header = ["run", "tag", "domain", "n", *DOMAIN_METRICS, "perplexity"]
    return ["## Per domain", "", *markdown_table(header, rows), "",
            "average: the mean over domains, each weighing once (the paper's Table 1 layout); perplexity: "
            "teacher-forced on the domain's context documents.", ""]


def ttr_windows(runs: Sequence[RunDir]) -> str:
    """The number of final tokens TTR was measured over ("96", or e.g. "16 / 96" when files differ): the
    window, or the continuation's length where that is shorter (TTR then covers the whole text). Run-directory
    format 1 files written before ttr_tokens was recorded count as their window, and those written before the
    window was recorded as their run's evaluate.window."""
    counts = set()
    for run in runs:
        default = load_run_config(run).evaluate.window
        for f in run.metrics.glob("*.json"):
            m = json.loads(f.read_text())
            counts.add(m.get("ttr_tokens", m.get("window", default)))
        counts = counts or {default}
    return " / ".join(str(w) for w in sorted(counts))


def probes(run: RunDir) -> list[dict]:
    if not run.train_log.is_file():
        return []
    return [r for r in read_jsonl(run.train_log, tolerate_tail=True) if r.get("type") == "probe"]


def trained_rows(runs: Sequence[RunDir], labels: Sequence[str]) -> list[list]:
    """Which parameters each run trained (train_log's "trained" row): method, count, share of the base, where."""
    rows = []
    for run, label in zip(runs, labels):
        logged = [r for r in read_jsonl(run.train_log, tolerate_tail=True) if r.get("type") == "trained"] \
            if run.train_log.is_file() else []
        for r in logged[:1]:
            where = "every weight" if r["method"] == "full" else \
                f"{', '.join(r.get('targets', []))} in blocks {r.get('layers', 'all')}"
            rows.append([label, r["method"], f"{r['trainable']:,}", f"{r['share']:.2%}", where])
    return rows


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (reports are written on headless machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> Path:
    """Write the figure atomically as PNG and free it."""
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")  # the temp name ends in .tmp: say the format
    pyplot().close(fig)
    return out


def plot_training(runs: Sequence[RunDir], out: Path) -> Path | None:
    """The paper's Figure 2 for these runs: train loss, validation loss and greedy TTR against epoch."""
    plt = pyplot()

    series = {label: probes(run) for run, label in zip(runs, run_labels(runs))}
    if not any(series.values()):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, rows in series.items():
        epochs = [r["epoch"] for r in rows]
        for ax, key in zip(axes, ("train_loss", "val_loss", "greedy_ttr")):
            ax.plot(epochs, [r.get(key) for r in rows], marker="o", markersize=3, label=name)
    probe_tokens = " / ".join(sorted({str(load_run_config(run).train.probe_new_tokens) for run in runs}))
    for ax, title in zip(axes, ("training loss (log)", "validation loss", f"greedy TTR (last {probe_tokens} tokens)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].legend(fontsize=8)
    return save_figure(fig, out)


def plot_ttr_by_position(run: RunDir, out: Path, window: int = 96, label: str | None = None) -> Path | None:
    """The paper's Figure 9: TTR of the `window`-token window ending at each generated position, per
    generations file, with the human continuations as reference."""
    plt = pyplot()

    own, curves = own_contexts(run), {}
    for path in sorted(run.generations.glob("*.jsonl")):
        rows = read_jsonl(path)
        mine = not own or context_pairs(rows) <= own  # the human curve beside it is of this run's contexts
        curves[path.stem if mine else f"{path.stem} (other contexts)"] = ttr_by_position(
            [r["continuation_ids"] for r in rows], window)
    if own:
        longest = max((len(c) for c in curves.values()), default=0) + window - 1
        refs = [c["reference_ids"][:longest] for c in read_jsonl(run.data_file("contexts"))]
        curves["human"] = ttr_by_position(refs, window)
    curves = {k: v for k, v in curves.items() if len(v)}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, curve in curves.items():
        ax.plot(range(window, window + len(curve)), curve, label=name, linestyle="--" if name == "human" else "-")
    ax.set(title=f"TTR of the {window} tokens ending at each position ({label or run.path.name})",
           xlabel="generated tokens", ylabel="TTR")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)


def examples(run: RunDir, n: int = 2, chars: int = 400) -> list[str]:
    """The first contexts continued by each generations file, side by side with the human text; a row
    is shown only beside the context it continues (same id and text)."""
    lines = []
    gens = {p.stem: read_jsonl(p) for p in sorted(run.generations.glob("*.jsonl"))}
    if not gens or not run.data_file("contexts").is_file():
        return lines
    contexts = read_jsonl(run.data_file("contexts"))
    for c in contexts[:n]:
        lines += ["", f"**Context** ({c['id']}): {c['context']!r}", ""]
        for tag, rows in gens.items():
            row = next((r for r in rows if r["context_id"] == c["id"]), None)
            if row and row["context"] != c["context"]:  # same id, another text: another run's, or old contexts
                lines.append(f"- *{tag}*: not shown: generated from another text under this id (see the table)")
            elif row:
                lines.append(f"- *{tag}*: {row['continuation'][:chars]!r}")
        lines.append(f"- *human*: {c['reference'][:chars]!r}")
    return lines


def report(runs: Sequence[RunDir], out: Path | None = None) -> Path:
    """Write report.md (+ plots) into `out` (default: the first run's directory); returns its path."""
    runs = [RunDir.of(r) for r in runs]
    if world()[1] == 1:  # under a launch every rank writes the same files: none may sweep another's temp
        for r in runs:
            r.sweep_interrupted_writes()
    not_runs = [str(r.path) for r in runs if not r.config.is_file()]
    if not_runs:  # a mistyped folder must not be reported on as an empty run (or created)
        raise RunError(f"not a run directory (no config.yaml): {', '.join(not_runs)}; pass folders that "
                       "`hyperfit run` made")
    out = Path(out) if out is not None else runs[0].path
    lines = ["# hyperfit report", "", "Runs: " + ", ".join(f"`{r.path}`" for r in runs), "", "## Generations", ""]
    header, rows = metrics_rows(runs)
    lines += markdown_table(header, rows) if rows else ["(no metrics yet: run `hyperfit evaluate RUN_DIR`)"]
    lines += ["", f"TTR over the last {ttr_windows(runs)} generated tokens (evaluate.window; the paper's measure is "
              "96); nonword_rate: share of generated words absent from the source text's vocabulary — at small "
              "scale part of the new diversity is broken words. val columns: teacher-forced on held-out text.", ""]
    if any(str(r[2]).startswith("human") and SHORT_HUMAN in str(r[2]) for r in rows):
        lines[-1:-1] = [f"Human rows marked \"{SHORT_HUMAN}\": those human stories end before the generations' "
                        "length, so length-dependent metrics (distinct-n, rep-n, Self-BLEU, longest overlap, "
                        "whole-text TTR; windowed TTR for texts under the window) are not comparable with the "
                        "generations' rows; metrics/reference*.json records their lengths."]
    lines += domain_lines(runs)
    plot = plot_training(runs, out / "plots" / "training_curves.png")
    labels = run_labels(runs)
    lines += run_warnings(runs, labels)
    lines += trained_section(runs, labels)
    for run, label in zip(runs, labels):
        rows = probes(run)
        if rows:
            lines += [f"## Training probes: {label}", ""]
            shown = rows if len(rows) <= 12 else rows[:1] + rows[1:-1][:: max(1, len(rows) // 10)] + rows[-1:]
            lines += markdown_table(PROBE_COLUMNS, [[r.get(k) for k in PROBE_COLUMNS] for r in shown])
            lines.append("")
        for study in sorted(run.metrics.glob("human_study*.json")):  # human_study-<study>.json, one per study
            name = study.stem.removeprefix("human_study").lstrip("-")
            lines += human_study_lines(study, name, label)
    if plot:
        lines += ["## Training curves", "", f"![training curves]({plot.relative_to(out)})", ""]
    for run, label in zip(runs, labels):
        window = load_run_config(run).evaluate.window
        plot_file = out / "plots" / f"ttr_by_position-{label.replace('/', '-')}.png"
        by_position = plot_ttr_by_position(run, plot_file, window, label)
        if by_position:
            lines += [f"## TTR by position: {label}", "", f"![TTR by position]({by_position.relative_to(out)})", ""]
    for run, label in zip(runs, labels):
        if image_run(run):  # image runs: completion grids per decoder and the image metrics
            lines += image_report_lines(run, out, label)
        lines += bench_lines(run, label)
    for run, label in zip(runs, labels):
        ex = examples(run)
        if ex:
            lines += [f"## Examples: {label}"] + ex + [""]
    lines += data_sections(runs, labels)
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def trained_section(runs: Sequence[RunDir], labels: Sequence[str]) -> list[str]:
    """Which parameters each run trained (all of them, or LoRA adapters on which blocks)."""
    trained = trained_rows(runs, labels)
    if not trained:
        return []
    header = ["run", "method", "trainable parameters", "of the base model", "where"]
    return ["## Trained parameters", "", *markdown_table(header, trained), ""]


def run_warnings(runs: Sequence[RunDir], labels: Sequence[str]) -> list[str]:
    """A warning per run whose final training loss is not near zero (it did not hyperfit)."""
    out = []
    for run, label in zip(runs, labels):
        warning = not_near_zero(final_train_loss(run), load_run_config(run).train)
        if warning:
            out += [f"**Warning ({label}): {warning}**", ""]
    return out


def data_sections(runs: Sequence[RunDir], labels: Sequence[str]) -> list[str]:
    """Each run's data/report.md (what was read, cleaned, kept and dropped) as a section."""
    out = []
    for run, label in zip(runs, labels):
        data_report = run.data / "report.md"
        if data_report.is_file():
            body = data_report.read_text().split("\n", 1)[1].strip()  # its own "# Data" title dropped
            out += [f"## Data: {label}", "", body, ""]
    return out


def human_study_lines(path: Path, name: str, label: str) -> list[str]:
    """A human study as a table (hyperfit.study.results.report_section), between the markers that
    `hyperfit study results` rewrites; a file it cannot read is shown as JSON, as before."""
    try:
        payload = json.loads(path.read_text())
        section = study_results.report_section(name, payload["results"], payload["design"])
    except (KeyError, TypeError, ValueError):
        return [f"## Human study{' ' + name if name else ''}: {label}", "", "```json", path.read_text().strip(),
                "```", ""]
    mark = study_results.MARK.format(name=name)
    return [mark, *section, mark.replace("<!-- ", "<!-- /"), ""]
