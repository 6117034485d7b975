"""Start page, crowd platforms (Prolific, open link), study management (links, revoke, add, reassign),
"Change my last answer", the too-fast floor, time on task across reloads, exports and the run's report."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from hyperfit.study import StudyError, page, store
from hyperfit.study.cli import main
from hyperfit.study.server import create_app, link_rows
from study_fixtures import admin_token, create, form_fields, tokens


def client_for(study, min_answer_ms=0):
    app = create_app(study, min_answer_ms=min_answer_ms)
    app.testing = True
    return app.test_client()


def answer(client, url: str, choice: str = "left"):
    fields = form_fields(client.get(url).text)
    return client.post(url, data={**fields, "choice": choice, "ms": "900"})


def test_start_page_from_markdown_consent_practice_and_question_wording(tmp_path, gen_file):
    md = tmp_path / "page.md"
    md.write_text(page.DEFAULT_PAGE.read_text().replace("question: Which continuation is better?",
                                                        "question: Which one reads better?")
                  + "\n<script>alert(1)</script>\n")
    study = create(tmp_path / "study", gen_file, "--annotators", "3", "--page", str(md))
    client, url = client_for(study), f"/a/{tokens(study)['ann-1']}"
    start = client.get(url)
    assert "What you will do" in start.text and 'id="consent"' in start.text and "Practice item" in start.text
    assert "<script>alert" not in start.text  # raw HTML in the Markdown is shown as text, never run
    csrf = form_fields(start.text)["csrf"]
    practice = client.post(f"{url}/practice", data={"csrf": csrf, "choice": "right"})
    assert "Not quite." in practice.text and store.progress(store.connect(study), "ann-1")[0] == 0
    assert client.post(f"{url}/start", data={"csrf": csrf}).status_code == 400  # consent box not ticked
    assert client.post(f"{url}/start", data={"csrf": csrf, "consent": "yes"}).status_code == 303
    item = client.get(url)
    assert "Which one reads better?" in item.text and "1 / " in item.text


def test_page_file_errors_name_the_fix(tmp_path):
    bad = tmp_path / "p.md"
    bad.write_text("---\nquestoin: x\n---\nhi\n")
    with pytest.raises(StudyError, match=r"unknown key\(s\) \['questoin'\]"):
        page.read_page_file(bad)
    bad.write_text("---\npractice: {context: c, a: x, b: y, answer: maybe}\n---\n")
    with pytest.raises(StudyError, match="practice needs"):
        page.read_page_file(bad)


def test_configs_study_page_is_the_packaged_default():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    assert (repo / "configs" / "study-page.md").read_text() == page.DEFAULT_PAGE.read_text()


def test_prolific_arrival_gets_a_queue_returns_to_it_and_ends_with_the_completion_code(tmp_path, gen_file):
    study = create(tmp_path / "study", gen_file, "--crowd", "prolific", "--completion-code", "C0DE42",
                   "--raters-per-item", "2", "--queue-length", "5", "--attention-checks", "20%")
    entry = [r for r in link_rows(study, "http://x") if r["kind"] == "entry"][0]["link"]
    assert "PROLIFIC_PID={{%PROLIFIC_PID%}}" in entry
    path = entry.removeprefix("http://x").split("?")[0]
    client = client_for(study)
    assert client.get(f"{path}?PROLIFIC_PID=bad id!").status_code == 400
    first = client.get(f"{path}?PROLIFIC_PID=5f1a2b&STUDY_ID=s1&SESSION_ID=abc")
    assert first.status_code == 303
    again = client.get(f"{path}?PROLIFIC_PID=5f1a2b&STUDY_ID=s1&SESSION_ID=abc")
    assert again.headers["Location"] == first.headers["Location"]  # same participant, same queue
    url = first.headers["Location"]
    csrf = form_fields(client.get(url).text)["csrf"]
    client.post(f"{url}/start", data={"csrf": csrf, "consent": "yes"})
    for _ in range(6):  # 5 items + 1 check
        assert answer(client, url).status_code == 303
    done = client.get(url)
    assert "C0DE42" in done.text and "app.prolific.com/submissions/complete?cc=C0DE42" in done.text
    client.post(f"{url}/change", data={"csrf": csrf})  # the last answer can still be changed from the end page
    assert "6 / 6" in client.get(url).text
    answer(client, url)
    assert "C0DE42" in client.get(url).text
    conn = store.connect(study)
    row = conn.execute("SELECT source, external_id, session_id FROM annotators").fetchone()
    assert tuple(row) == ("prolific", "prolific:5f1a2b", "abc")
    assert client.get(url.replace("/a/", "/p/")).status_code == 404  # an annotator token is not an entry


def test_open_link_gives_each_arrival_a_fresh_queue_until_every_item_has_k(tmp_path, gen_file):
    study = create(tmp_path / "study", gen_file, "--crowd", "open", "--raters-per-item", "1",
                   "--queue-length", "5", "--attention-checks", "0")
    path = [r for r in link_rows(study, "") if r["kind"] == "entry"][0]["link"]
    client = client_for(study)
    arrivals = [client.get(path) for _ in range(4)]
    assert [a.status_code for a in arrivals] == [303, 303, 303, 410]  # 12 items, k = 1: 5 + 5 + 2, then full
    assert len({a.headers.get("Location") for a in arrivals[:3]}) == 3
    assert set(store.coverage(store.connect(study)).values()) == {1}


def test_links_csv_is_stable_across_restarts_and_ports(tmp_path, study, capsys):
    assert main(["links", str(study), "--base-url", "http://127.0.0.1:41234"]) == 0
    first = (study / "links.csv").read_text()
    assert main(["links", str(study), "--base-url", "http://127.0.0.1:41234"]) == 0
    assert (study / "links.csv").read_text() == first  # the tokens are stored, not minted per run
    rows = list(csv.DictReader(io.StringIO(first)))
    assert len(rows) == 4 and all(r["link"].endswith(tokens(study)[r["annotator"]]) for r in rows)
    assert oct((study / "links.csv").stat().st_mode & 0o777) == "0o600"


def test_revoke_add_annotators_and_reassign_keep_every_item_at_k(tmp_path, gen_file, capsys):
    study = create(tmp_path / "study", gen_file, "--annotators", "4", "--raters-per-item", "2",
                   "--attention-checks", "0")
    client = client_for(study)
    from study_fixtures import consent_all

    consent_all(study)
    url = f"/a/{tokens(study)['ann-1']}"
    answer(client, url)
    answer(client, url)
    assert main(["revoke", str(study), "ann-1"]) == 0
    assert client.get(url).status_code == 403
    conn = store.connect(study)
    assert sorted(store.coverage(conn).values()).count(1) == 4  # ann-1's 4 unfinished items lost a rater
    assert main(["reassign", str(study)]) == 0
    assert set(store.coverage(conn).values()) == {2}  # others took them (each still sees a context once)
    per = conn.execute("SELECT s.annotator, i.context_id, COUNT(*) FROM assignments s JOIN items i "
                       "ON i.id = s.item GROUP BY 1, 2 HAVING COUNT(*) > 1").fetchall()
    assert per == []
    assert main(["revoke", str(study), "ann-2,ann-3"]) == 0
    assert main(["add-annotators", str(study), "2"]) == 0
    out = capsys.readouterr().out
    assert "added ann-5" in out and "added ann-6" in out
    assert min(store.coverage(conn).values()) == 2
    with pytest.raises(SystemExit):
        main(["revoke", str(study)])
    assert main(["revoke", str(study), "nobody"]) == 2


def test_results_report_real_coverage_when_an_annotator_stops(tmp_path, gen_file):
    study = create(tmp_path / "study", gen_file, "--annotators", "4", "--raters-per-item", "3",
                   "--attention-checks", "0")
    conn = store.connect(study)
    for r in conn.execute("SELECT annotator, pos FROM assignments WHERE annotator != 'ann-1'").fetchall():
        store.record(conn, r["annotator"], r["pos"], "left")
    assert main(["results", str(study)]) == 0
    md = (study / "results.md").read_text()
    assert "3 of 12 items have at least 3 judgements" in md and "2: 9 items" in md


def test_change_my_last_answer(study):
    client = client_for(study)
    url = f"/a/{tokens(study)['ann-1']}"
    first = form_fields(client.get(url).text)["pos"]
    answer(client, url, "left")
    page_two = client.get(url).text
    assert "Change my last answer" in page_two
    client.post(f"{url}/change", data={"csrf": form_fields(page_two)["csrf"]})
    assert form_fields(client.get(url).text)["pos"] == first and "1 / 10" in client.get(url).text
    answer(client, url, "right")
    conn = store.connect(study)
    assert [r[0] for r in conn.execute("SELECT choice FROM judgements")] == ["right"]
    assert [r[0] for r in conn.execute("SELECT choice FROM retracted")] == ["left"]


def test_an_answer_sooner_than_the_floor_is_refused_and_time_on_task_survives_a_reload(study):
    client = client_for(study, min_answer_ms=300)
    url = f"/a/{tokens(study)['ann-2']}"
    fields = form_fields(client.get(url).text)
    fast = client.post(url, data={**fields, "choice": "left"})
    assert fast.status_code == 425 and "was not saved" in fast.text
    time.sleep(0.35)
    client.get(url)  # a reload: the item was first shown before it, and time on task counts from then
    time.sleep(0.1)
    assert client.post(url, data={**fields, "choice": "left", "ms": "100"}).status_code == 303
    conn = store.connect(study)
    ms_on_task, ms_client = conn.execute("SELECT ms_on_task, ms_client FROM judgements").fetchone()
    assert ms_on_task >= 450 and ms_client == 100


def test_exports_carry_position_texts_and_times(study):
    client = client_for(study)
    url = f"/a/{tokens(study)['ann-3']}"
    shown = client.get(url).text
    answer(client, url, "right")
    row = json.loads(client.get(f"/admin/{admin_token(study)}/export.jsonl").text.splitlines()[0])
    assert row["queue_position"] == 1 and row["shown_at"] < row["submitted_at"]
    assert row["text_left"] in shown.replace("&#39;", "'") and row["text_right"] in shown.replace("&#39;", "'")
    assert row["context"] and row["ms_on_task"] is not None


def test_drop_failed_checks_writes_its_own_files_and_the_report_shows_a_table(tmp_path, study, gen_file):
    run_dir = gen_file.parent.parent
    (run_dir / "report.md").write_text("# Report\n\nmetrics...\n")
    conn = store.connect(study)
    for r in conn.execute("SELECT annotator, pos FROM assignments").fetchall():
        store.record(conn, r["annotator"], r["pos"], "right" if r["annotator"] == "ann-1" else "left")
    assert main(["results", str(study)]) == 0
    assert main(["results", str(study), "--drop-failed-checks"]) == 0
    assert (study / "results.md").exists() and (study / "results-drop-failed-checks.md").exists()
    assert {p.name for p in (run_dir / "metrics").iterdir()} == {"human_study-study.json",
                                                                  "human_study-study-drop-failed-checks.json"}
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# Report") and report.count("<!-- human-study:study -->") == 1
    assert "| humans | runSECRETalpha/greedy |" in report and "Preferred or equal" in report
    assert main(["results", str(study)]) == 0  # rerun: the section is replaced, not appended again
    assert (run_dir / "report.md").read_text().count("## Human study study\n") == 1


def test_cohen_kappa_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    from hyperfit.study.analysis import cohen_kappa

    x = ["a", "b", "equal", "a", "a", "b", "equal", "b"]
    y = ["a", "b", "a", "a", "b", "b", "equal", "equal"]
    assert cohen_kappa(x, y) == pytest.approx(sklearn.cohen_kappa_score(x, y))


def test_hyperfit_report_renders_the_study_as_a_table(study, gen_file):
    from hyperfit.stages.report import human_study_lines

    conn = store.connect(study)
    for r in conn.execute("SELECT annotator, pos FROM assignments").fetchall():
        store.record(conn, r["annotator"], r["pos"], "left")
    assert main(["results", str(study)]) == 0
    path = gen_file.parent.parent / "metrics" / "human_study-study.json"
    lines = human_study_lines(path, "study", "run")
    text = "\n".join(lines)
    assert "| Raters | System | vs | Preferred or equal |" in text and "```json" not in text
    assert "12 / 12 items with 3" in text and lines[0] == "<!-- human-study:study -->"
    path.write_text("{}")  # a file it cannot read as a study is shown as it is
    assert "```json" in "\n".join(human_study_lines(path, "study", "run"))
