"""The CLI through its entry points: create -> status -> results -> export, serve, and bad inputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hyperfit.study import store
from hyperfit.study.cli import main
from study_fixtures import RUN_NAME, create, make_run, tokens, write_jsonl

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def judge_all(study_dir: Path, choice_for=lambda annotator, pos: "left") -> int:
    """Fill in every human queue directly through the store (the server is tested elsewhere)."""
    conn = store.connect(study_dir)
    rows = conn.execute("SELECT annotator, pos FROM assignments").fetchall()
    for r in rows:
        store.record(conn, r["annotator"], r["pos"], choice_for(r["annotator"], r["pos"]), 2000)
    conn.close()
    return len(rows)


def test_create_status_results_export_end_to_end(tmp_path, gen_file, capsys):
    study = create(tmp_path / "study", gen_file, "--annotators", "alice,bob,carol", "--raters-per-item", "2",
                   "--attention-checks", "5%", "--seed", "7")
    assert sorted(p.name for p in study.iterdir()) == ["study.json", "study.sqlite"]
    assert oct(study.stat().st_mode & 0o777) == "0o700"
    summary = json.loads((study / "study.json").read_text())
    assert summary["n_pair_items"] == 12 and summary["n_check_items"] == 3
    assert summary["queue_lengths"] == {"alice": 9, "bob": 9, "carol": 9}  # 8 real + 1 check each
    assert summary["run_dirs"] == [str((tmp_path / "runs" / RUN_NAME).resolve())]

    capsys.readouterr()
    assert main(["status", str(study)]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "0 / 9" in out
    judged = judge_all(study, lambda a, pos: ("left", "right", "equal")[pos % 3])
    assert judged == 27
    assert main(["status", str(study), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [(r["annotator"], r["judged"], r["total"]) for r in status] == [
        ("alice", 9, 9), ("bob", 9, 9), ("carol", 9, 9)]

    assert main(["results", str(study)]) == 0
    out = capsys.readouterr().out
    metrics = tmp_path / "runs" / RUN_NAME / "metrics" / "human_study-study.json"  # named after the study
    assert f"wrote {metrics.resolve()}" in out or f"wrote {metrics}" in out
    md = (study / "results.md").read_text()
    assert "Preferred or equal" in md and f"{RUN_NAME}/original (human reference)" in md
    assert "Krippendorff" in md and "binomial" in md and "Attention checks" in md
    csv_lines = (study / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("raters,system,opponent,items,judgements,preferred_or_equal")
    assert csv_lines[1].startswith(f"humans,{RUN_NAME}/greedy,{RUN_NAME}/original,12,24,")
    report = json.loads(metrics.read_text())
    assert report["results"]["judgements"] == 27 and report["design"]["raters_per_item"] == 2
    # A second study of the same run keeps its own file: it replaced the first study's results.
    second = create(tmp_path / "second", gen_file, "--annotators", "2", "--raters-per-item", "1", "--seed", "8")
    assert main(["results", str(second)]) == 0
    assert json.loads(metrics.read_text())["results"]["judgements"] == 27
    assert (metrics.parent / "human_study-second.json").is_file()
    capsys.readouterr()

    out_file = tmp_path / "judgements.csv"
    assert main(["export", str(study), "--format", "csv", "--out", str(out_file)]) == 0
    assert len(out_file.read_text().splitlines()) == 28
    assert capsys.readouterr().out == f"wrote {out_file}\n"
    assert main(["export", str(study)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 27 and {json.loads(line)["annotator"] for line in lines} == {"alice", "bob", "carol"}


def test_python_m_entry_point_and_no_torch(tmp_path, gen_file):
    study = tmp_path / "study"
    run = subprocess.run([sys.executable, "-m", "hyperfit.study", "create", str(study), "--from", str(gen_file),
                          "--annotators", "3", "--raters-per-item", "3"],
                         env=ENV, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # Everyone judges every context, so one is held back for the attention checks (a check shows a context
    # its annotator does not judge).
    assert "11 items from 11 contexts" in run.stdout and "kept for attention checks" in run.stdout
    code = ("import sys, hyperfit.study.server, hyperfit.study.cli, hyperfit.study.analysis, "
            "hyperfit.study.results, hyperfit.study.judge; import scipy.stats, krippendorff, choix; "
            "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    check = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, f"the study package imported {check.stdout.strip()}"


def test_serve_prints_private_links_that_work(study):
    proc = subprocess.Popen([sys.executable, "-m", "hyperfit.study", "serve", str(study), "--port", "0"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any(line.startswith("Admin status") for line in lines) and len(lines) < 20:
            lines.append(proc.stdout.readline())
        links = [line.split("\t")[1].strip() for line in lines if "\t" in line]
        assert len(links) == 4 and all(f"/a/{t}" in " ".join(links) for t in tokens(study).values())
        with urllib.request.urlopen(links[0], timeout=10) as page:
            assert page.status == 200 and "1 / 10" in page.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def fails(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    return err


def nothing_written(tmp_path: Path, study: Path) -> bool:
    return not study.exists() and not any(p.name.startswith(".study") for p in tmp_path.iterdir())


def test_missing_from_file(tmp_path, capsys):
    study, missing = tmp_path / "study", tmp_path / "runs" / "x" / "generations" / "nope.jsonl"
    fails(capsys, ["create", str(study), "--from", str(missing), "--annotators", "3"],
          "file not found", str(missing), "Pass an existing .jsonl file")
    assert nothing_written(tmp_path, study)


def test_vs_file_with_other_context_ids(tmp_path, gen_file, capsys):
    other = write_jsonl(tmp_path / "other" / "sampled.jsonl",
                        [{"context_id": f"doc-{i}", "context": "x", "continuation": "y z"} for i in range(5)])
    study = tmp_path / "study"
    fails(capsys, ["create", str(study), "--from", str(gen_file), "--vs", str(other), "--annotators", "3"],
          "do not pair up by context_id", "lacks 12 context ids", "ctx-00000", "--common-only")
    assert nothing_written(tmp_path, study)


def test_vs_file_with_different_context_text(tmp_path, gen_file, capsys):
    rows = [json.loads(line) for line in gen_file.read_text().splitlines()]
    rows[3]["context"] = "A completely different story."
    other = write_jsonl(tmp_path / "other" / "greedy.jsonl", rows)
    fails(capsys, ["create", str(tmp_path / "study"), "--from", str(gen_file), "--vs", str(other),
                   "--annotators", "3", "--common-only"], "context 'ctx-00003' differs")
    assert not (tmp_path / "study").exists()


def test_common_only_uses_the_shared_contexts(tmp_path, gen_file, capsys):
    rows = [json.loads(line) for line in gen_file.read_text().splitlines()][:5]
    other = write_jsonl(tmp_path / "other" / "greedy.jsonl", rows)
    study = create(tmp_path / "study", gen_file, "--vs", str(other), "--annotators", "3", "--common-only",
                   "--attention-checks", "0")
    assert json.loads((study / "study.json").read_text())["n_pair_items"] == 5


def test_more_raters_per_item_than_annotators(tmp_path, gen_file, capsys):
    study = tmp_path / "study"
    fails(capsys, ["create", str(study), "--from", str(gen_file), "--annotators", "2", "--raters-per-item", "3"],
          "--raters-per-item 3 with 2 annotators", "allows is --raters-per-item 2", "--annotators 3 (or more)")
    assert nothing_written(tmp_path, study)


@pytest.mark.parametrize("flag, value, message", [
    ("--attention-checks", "lots", "--attention-checks 'lots' is not a rate"),
    ("--attention-checks", "80%", "outside 0%..50%"),
    ("--annotators", "al ice,bob", "invalid ids ['al ice']"),
    ("--annotators", "bob,bob", "repeated ids ['bob']"),
    ("--max-words", "0", "--max-words 0: must be at least 1"),
])
def test_bad_options_are_named(tmp_path, gen_file, capsys, flag, value, message):
    argv = ["create", str(tmp_path / "study"), "--from", str(gen_file), "--annotators", "3", flag, value]
    fails(capsys, argv, message)
    assert not (tmp_path / "study").exists()


def test_vs_original_needs_a_run_directory(tmp_path, capsys):
    loose = write_jsonl(tmp_path / "loose.jsonl", [{"context_id": "c", "context": "x", "continuation": "y"}])
    fails(capsys, ["create", str(tmp_path / "study"), "--from", str(loose), "--annotators", "3"],
          "is not inside RUN_DIR/generations/", "--vs OTHER.jsonl")


def test_existing_study_is_never_overwritten(tmp_path, study, gen_file, capsys):
    before = (study / "study.sqlite").read_bytes()
    fails(capsys, ["create", str(study), "--from", str(gen_file), "--annotators", "3"],
          "already exists and is not empty", "choose a new STUDY_DIR")
    assert (study / "study.sqlite").read_bytes() == before


def test_not_a_study_directory(tmp_path, capsys):
    fails(capsys, ["status", str(tmp_path)], "is not a study directory", "hyperfit study create")


def test_several_systems_get_bradley_terry(tmp_path, capsys):
    a = make_run(tmp_path, tag="greedy", tag_seed=1)
    b = make_run(tmp_path, tag="topk", tag_seed=2, decoder="top_k")
    study = create(tmp_path / "study", a, "--from", str(b), "--pairs", "all", "--annotators", "3",
                   "--raters-per-item", "1", "--attention-checks", "0")
    conn = store.connect(study)
    systems = {r[0]: r[1] for r in conn.execute("SELECT id, system_a || ' vs ' || system_b FROM items")}
    placement = {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(
        "SELECT annotator, pos, item, a_on_left FROM assignments")}
    conn.close()

    # The reference wins everything it is in; greedy beats topk: BT must rank original > greedy > topk.
    def choice(annotator, pos):
        item, left = placement[(annotator, pos)]
        a_wins = not systems[item].endswith("original")
        return "left" if a_wins == bool(left) else "right"

    judge_all(study, choice)
    assert main(["results", str(study)]) == 0
    md = (study / "results.md").read_text()
    assert "Bradley-Terry" in md
    ranks = [line for line in md.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert "original" in ranks[0] and "topk" in ranks[1]


def test_create_names_the_contexts_left_out_for_an_empty_side(tmp_path, capsys):
    gen = make_run(tmp_path, n=6)
    rows = [json.loads(line) for line in gen.read_text().splitlines()]
    rows[4]["continuation"] = ""  # e.g. a model that emitted EOS at once
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    create(tmp_path / "s", gen, "--annotators", "2", "--raters-per-item", "1")
    out = capsys.readouterr().out
    assert "5 items from 6 contexts" in out
    assert "note: 1 context(s) had an empty continuation on a side and are not in the study (e.g. ctx-00004)" in out


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "--allowed-hosts 192.168.1.20,study.lan"),
    (["--allowed-hosts", "study.lan:https"], "is not a host name"),
    (["--base-url", "study.example.org"], "expected the public address with its scheme"),
])
def test_serve_refuses_host_names_it_cannot_check(study, capsys, argv, message):
    fails(capsys, ["serve", str(study), "--port", "0", *argv], message)


def test_serve_allows_the_base_url_host(study):
    proc = subprocess.Popen([sys.executable, "-m", "hyperfit.study", "serve", str(study), "--port", "0",
                             "--base-url", "https://study.example.org/"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any(line.startswith("Listening") for line in lines) and len(lines) < 20:
            lines.append(proc.stdout.readline())
        port = re.search(r"Listening on 127\.0\.0\.1 port (\d+)", "".join(lines))
        link = [line.split("\t")[1].strip() for line in lines if "\t" in line][0]
        assert link.startswith("https://study.example.org/a/")
        local = link.replace("https://study.example.org", f"http://127.0.0.1:{port.group(1)}")
        for host, code in (("study.example.org", 200), ("evil.example", 400)):
            try:
                with urllib.request.urlopen(urllib.request.Request(local, headers={"Host": host}),
                                            timeout=10) as page:
                    assert page.status == code
            except urllib.error.HTTPError as e:
                assert e.code == code
    finally:
        proc.terminate()
        proc.wait(timeout=10)
