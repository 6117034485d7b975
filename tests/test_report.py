"""The report says when a row is not comparable with the rows beside it: human text shorter than the
generations, generations of other contexts (another run's, or this run's before `hyperfit data` rewrote them)."""

import json
import shutil
import statistics

import pytest

from hyperfit.cli import main
from hyperfit.runs import read_jsonl
from tinymodels import tiny_overrides


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_llama, corpus_file):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", *tiny_overrides(tiny_llama, corpus_file, out, "r"), "train.epochs=1",
                 "generate.with_base=false"]) == 0
    return out / "r"


def section(report: str, title: str) -> str:
    return report.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def table_row(report: str, run: str, tag: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {run} | {tag} |"))


def test_human_text_shorter_than_the_generations_is_recorded_and_marked(tiny_run, tmp_path):
    # The human continuations were cut to the generations' length without a check: a reference of 110
    # tokens stood as "tokens": 256 beside 256-token generations, its length-dependent metrics unmarked.
    run = shutil.copytree(tiny_run, tmp_path / "r")
    asked = 120  # the tiny model's context is 128; 8 context tokens + 120
    assert main(["generate", str(run), f"generate.max_new_tokens={asked}", "generate.tag=long"]) == 0
    assert main(["evaluate", str(run), "--tag", "long"]) == 0
    lengths = [min(len(c["reference_ids"]), asked) for c in read_jsonl(run / "data/contexts.jsonl")]
    shorter = sum(n < asked for n in lengths)
    assert shorter > 0  # the premise: some human continuations end before 120 tokens

    ref = json.loads((run / f"metrics/reference-L{asked}.json").read_text())
    assert ref["tokens_asked"] == asked and ref["shorter_than_asked"] == shorter
    assert ref["reference_tokens"] == {"min": min(lengths), "median": statistics.median(lengths),
                                       "max": max(lengths)}
    own = json.loads((run / "metrics/reference.json").read_text())  # 24 tokens: every human text is longer
    assert own["tokens_asked"] == 24 and own["shorter_than_asked"] == 0

    assert main(["report", str(run)]) == 0
    report = (run / "report.md").read_text()
    marked = f"human (reference; {shorter} of {len(lengths)} shorter than {asked} tokens, median "
    assert marked in table_row(report, "r", f"reference-L{asked}")
    assert "| r | reference | human (reference) |" in report  # the run's own human row is unmarked
    assert "not comparable" in report and "distinct" in report  # the one-line note says which metrics


def test_generations_of_contexts_that_data_rewrote_are_stale(tiny_run, tmp_path):
    # `hyperfit data RUN data.seed=7` replaced the contexts; the old generations were reported as current
    # and the examples paired each new context with a continuation of the old one of the same id.
    run = shutil.copytree(tiny_run, tmp_path / "r")
    old = read_jsonl(run / "data/contexts.jsonl")
    assert main(["data", str(run), "data.seed=7"]) == 0
    new = read_jsonl(run / "data/contexts.jsonl")
    assert old[0]["id"] == new[0]["id"] and old[0]["context"] != new[0]["context"]  # same ids, other texts

    assert main(["report", str(run)]) == 0
    report = (run / "report.md").read_text()
    assert "STALE: the run's contexts changed since; rerun hyperfit generate" in table_row(report, "r", "greedy")
    assert "STALE: the run's contexts changed since" in table_row(report, "r", "reference")  # human row: old texts
    examples = section(report, "Examples: r")
    old_continuations = [r["continuation"] for r in read_jsonl(run / "generations/greedy.jsonl")]
    assert repr(new[0]["context"]) in examples
    assert not [c for c in old_continuations if repr(c[:400]) in examples]


def test_generations_of_another_runs_contexts_are_labelled_and_not_paired(tiny_run, tmp_path):
    # After `compare a b --contexts-from-first`, b/generations/ holds continuations of a's contexts; the
    # report listed them as ordinary b rows, and its examples put b's ctx-00000 beside a's continuation.
    a = shutil.copytree(tiny_run, tmp_path / "a")
    b = shutil.copytree(tiny_run, tmp_path / "b")
    assert main(["data", str(b), "data.seed=7"]) == 0
    assert main(["compare", str(a), str(b), "--decoders", "greedy", "--lengths", "8", "--contexts-from-first"]) == 0
    foreign = read_jsonl(b / "generations/final-greedy-L8.jsonl")
    assert foreign[0]["context"] == read_jsonl(a / "data/contexts.jsonl")[0]["context"]

    assert main(["report", str(b)]) == 0  # alone: the other run is found beside it
    report = (b / "report.md").read_text()
    row = table_row(report, "b", "final-greedy-L8")
    assert f"contexts of {a}" in row and "STALE" not in row
    assert "STALE" not in table_row(report, "b", "reference-L8")  # compare measured b's own human text
    examples = section(report, "Examples: b")
    assert not [r for r in foreign if repr(r["continuation"][:400]) in examples]
    assert "*final-greedy-L8*: not shown" in examples

    assert main(["report", str(a), str(b), "--out", str(tmp_path / "ab")]) == 0  # together: a's label
    together = (tmp_path / "ab" / "report.md").read_text()
    assert "contexts of a)" in table_row(together, "b", "final-greedy-L8")
    assert "contexts of" not in table_row(together, "a", "final-greedy-L8")
    assert main(["report", str(a)]) == 0
    report_a = (a / "report.md").read_text()
    assert "contexts of" not in report_a and "STALE" not in report_a  # a's rows are its own


def test_generations_of_a_model_trained_further_are_stale_and_the_advice_is_to_generate(tiny_run, tmp_path):
    # Evaluating again would measure the same old generations: the advice said "rerun hyperfit evaluate".
    run = shutil.copytree(tiny_run, tmp_path / "r")
    assert main(["train", str(run), "--resume", "train.epochs=2"]) == 0
    assert main(["report", str(run)]) == 0
    row = table_row((run / "report.md").read_text(), "r", "greedy")
    assert "STALE: the final model was trained further after these generations; rerun hyperfit generate, then " \
           "hyperfit evaluate" in row


def test_a_ttr_window_longer_than_the_continuations_is_reported_as_the_tokens_measured(tiny_run, tmp_path):
    # The report said "TTR over the last 500 tokens" for 24-token continuations; TTR covered the whole text.
    run = shutil.copytree(tiny_run, tmp_path / "r")
    assert main(["evaluate", str(run), "evaluate.window=500"]) == 0
    measured = json.loads((run / "metrics/greedy.json").read_text())
    assert measured["window"] == 500 and measured["ttr_tokens"] == 24
    assert main(["report", str(run)]) == 0
    report = (run / "report.md").read_text()
    # 16: the run's own files, measured with its evaluate.window=16 before
    assert "TTR over the last 16 / 24 generated tokens" in report and "last 500" not in report


def test_evaluating_generations_without_rows_is_refused(tiny_run, tmp_path):
    # data.num_contexts=0 made empty generation files, reported as rows of 0.000 labelled "None / None".
    run = shutil.copytree(tiny_run, tmp_path / "r")
    (run / "generations/empty.jsonl").write_text("")
    assert main(["evaluate", str(run), "--tag", "empty"]) == 2
    assert not (run / "metrics/empty.json").exists()


def test_temp_files_of_writes_a_kill_cut_short_are_swept_by_the_next_stage(tiny_run, tmp_path):
    # Kills during evaluate or report left hidden temp files in metrics/ and plots/ for good.
    run = shutil.copytree(tiny_run, tmp_path / "r")
    left = [run / "metrics/.greedy.json.k1l2.tmp", run / "plots/.training_curves.png.x9.tmp", run / ".report.md.q.tmp",
            run / "generations/.greedy.jsonl.z.tmp"]
    for p in left:
        p.write_text("half")
    (run / "metrics/.old-folder.old").mkdir()
    kept = {p: p.read_bytes() for p in (run / "metrics").glob("*.json")}
    assert main(["report", str(run)]) == 0
    assert not any(p.exists() for p in left) and not (run / "metrics/.old-folder.old").exists()
    assert all(p.read_bytes() == b for p, b in kept.items())
