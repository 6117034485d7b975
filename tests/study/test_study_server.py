"""The annotation app through Flask's test client: access, blinding, idempotence, CSRF, limits, resume,
the Host allow-list, the item on screen, and formula-safe CSV."""

from __future__ import annotations

import csv
import io
import json

import pytest

from hyperfit.study import StudyError, store
from hyperfit.study.server import allowed_hosts, create_app
from study_fixtures import DECODER, MODEL, RUN_NAME, admin_token, count_judgements, form_fields, tokens

# Nothing that identifies a system may reach an annotator: names, file names, decoder, model, config.
LEAKS = (RUN_NAME, MODEL, DECODER, "SECRET", "greedy", "original", ".jsonl", "contexts", "decoder",
         "checkpoint", "runs/", "system_a")


@pytest.fixture
def client(study):
    app = create_app(study, min_answer_ms=0)  # the floor has its own tests
    app.testing = True
    return app.test_client()


def judge(client, token: str, choice: str = "left", **override):
    page = client.get(f"/a/{token}")
    fields = {**form_fields(page.text), "choice": choice, "ms": "1234", **override}
    return client.post(f"/a/{token}", data=fields)


def test_page_shows_item_progress_and_three_labelled_buttons(client, study):
    token = tokens(study)["ann-1"]
    page = client.get(f"/a/{token}")
    assert page.status_code == 200
    assert "1 / 10" in page.text  # 9 real items + 1 check
    for label in ("A better", "B better", "Equally good"):
        assert label in page.text
    assert 'aria-keyshortcuts="1 A"' in page.text and 'aria-keyshortcuts="3 E"' in page.text
    assert set(form_fields(page.text)) == {"csrf", "pos", "ms"}


def test_judging_advances_and_reload_resumes(client, study):
    token = tokens(study)["ann-2"]
    first = form_fields(client.get(f"/a/{token}").text)["pos"]
    response = judge(client, token, "right")
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/a/{token}")
    again = client.get(f"/a/{token}")  # a reload: the next item, not the judged one
    assert "2 / 10" in again.text and form_fields(again.text)["pos"] != first
    assert client.get(f"/a/{token}").text == again.text  # stable across reloads


def test_finished_queue_shows_done(client, study):
    token = tokens(study)["ann-3"]
    for _ in range(10):
        assert judge(client, token, "equal").status_code == 303
    done = client.get(f"/a/{token}")
    assert "All done" in done.text and "10 / 10" in done.text
    assert count_judgements(study) == 10


def test_double_post_stores_one_judgement_and_a_different_late_answer_is_refused(client, study):
    token = tokens(study)["ann-1"]
    fields = {**form_fields(client.get(f"/a/{token}").text), "choice": "left", "ms": "500"}
    first = client.post(f"/a/{token}", data=fields)
    repeat = client.post(f"/a/{token}", data=fields)  # a double click: the same answer, ignored
    stale = client.post(f"/a/{token}", data={**fields, "choice": "right"})  # another tab's other answer
    assert first.status_code == repeat.status_code == 303
    assert stale.status_code == 409 and "already answered" in stale.text and "A better" in stale.text
    conn = store.connect(study)
    rows = conn.execute("SELECT choice, ms_client, ms_on_task FROM judgements").fetchall()
    assert [tuple(r)[:2] for r in rows] == [("left", 500)] and rows[0][2] >= 0  # server-measured time


def test_winner_is_resolved_from_the_hidden_placement(client, study):
    token = tokens(study)["ann-4"]
    for choice in ("left", "right", "left", "equal"):
        judge(client, token, choice)
    conn = store.connect(study)
    rows = conn.execute("SELECT choice, a_on_left, winner FROM judgements").fetchall()
    for choice, a_on_left, winner in rows:
        expected = "equal" if choice == "equal" else ("a" if (choice == "left") == bool(a_on_left) else "b")
        assert winner == expected
    placed = conn.execute("SELECT j.a_on_left = s.a_on_left FROM judgements j JOIN assignments s "
                          "ON s.annotator = j.annotator AND s.item = j.item").fetchall()
    assert all(r[0] for r in placed) and len(placed) == 4


def test_wrong_or_missing_tokens_are_403(client, study):
    assert client.get("/a/not-a-token").status_code == 403
    assert client.post("/a/not-a-token", data={"choice": "left"}).status_code == 403
    assert client.get("/a/").status_code == 404
    assert client.get("/admin/nope/status").status_code == 403
    assert client.get("/admin/nope/export.csv").status_code == 403


def test_admin_and_annotator_tokens_are_separate(client, study):
    annotator, admin = tokens(study)["ann-1"], admin_token(study)
    assert client.get(f"/admin/{annotator}/status").status_code == 403
    assert client.get(f"/a/{admin}").status_code == 403
    status = client.get(f"/admin/{admin}/status").json["annotators"]
    assert {r["annotator"] for r in status} == {"ann-1", "ann-2", "ann-3", "ann-4"}


def test_csrf_token_is_required_and_per_annotator(client, study):
    t1, t2 = tokens(study)["ann-1"], tokens(study)["ann-2"]
    other_csrf = form_fields(client.get(f"/a/{t2}").text)["csrf"]
    assert judge(client, t1, csrf="").status_code == 403
    assert judge(client, t1, csrf="0" * 32).status_code == 403
    assert judge(client, t1, csrf=other_csrf).status_code == 403
    assert count_judgements(study) == 0


def test_cross_origin_post_is_refused(client, study):
    token = tokens(study)["ann-1"]
    fields = {**form_fields(client.get(f"/a/{token}").text), "choice": "left"}
    evil = client.post(f"/a/{token}", data=fields, headers={"Origin": "http://evil.example"})
    null = client.post(f"/a/{token}", data=fields, headers={"Origin": "null"})
    assert evil.status_code == null.status_code == 403
    same = client.post(f"/a/{token}", data=fields, headers={"Origin": "http://localhost"})
    assert same.status_code == 303 and count_judgements(study) == 1


def test_bad_fields_are_400(client, study):
    token = tokens(study)["ann-1"]
    assert judge(client, token, choice="model").status_code == 400
    assert judge(client, token, pos="-1").status_code == 400
    assert judge(client, token, pos="²").status_code == 400
    assert judge(client, token, pos="9" * 5000).status_code == 400
    assert count_judgements(study) == 0


def test_oversized_request_is_413(client, study):
    token = tokens(study)["ann-1"]
    response = judge(client, token, comment="x" * 20_000)
    assert response.status_code == 413 and count_judgements(study) == 0


def test_annotator_responses_reveal_no_system(client, study):
    token = tokens(study)["ann-1"]
    bodies = []
    for choice in ("left", "right", "equal", "left", "left", "right", "equal", "left", "right", "left"):
        page = client.get(f"/a/{token}")
        bodies.append((page.text, page.headers))
        post = judge(client, token, choice)
        bodies.append((post.text, post.headers))
    done = client.get(f"/a/{token}")
    bodies += [(done.text, done.headers)]
    for path in ("/static/study.js", "/static/study.css", "/a/bad-token"):
        r = client.get(path)
        bodies.append((r.text, r.headers))
    assert "All done" in done.text
    for body, headers in bodies:
        text = body + json.dumps(dict(headers))
        for leak in LEAKS:
            assert leak.lower() not in text.lower(), f"{leak!r} reached an annotator"


def test_pages_send_security_headers_and_no_inline_script(client, study):
    page = client.get(f"/a/{tokens(study)['ann-1']}")
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert "<script>" not in page.text and "http://" not in page.text and "https://" not in page.text


def test_admin_exports_name_the_systems(client, study):
    admin, token = admin_token(study), tokens(study)["ann-1"]
    judge(client, token, "left")
    jsonl = client.get(f"/admin/{admin}/export.jsonl")
    row = json.loads(jsonl.text.splitlines()[0])
    assert row["annotator"] == "ann-1" and row["choice"] == "left"
    assert {row["system_left"], row["system_right"]} <= {f"{RUN_NAME}/greedy", f"{RUN_NAME}/original",
                                                         "attention-check loop"}
    csv_text = client.get(f"/admin/{admin}/export.csv").text
    assert csv_text.splitlines()[0].startswith("annotator,annotator_kind,item")
    assert len(csv_text.splitlines()) == 2
    assert client.get(f"/admin/{admin}/export.xml").status_code == 404


def test_only_the_item_on_screen_is_accepted(client, study):
    token = tokens(study)["ann-1"]
    fields = {**form_fields(client.get(f"/a/{token}").text), "choice": "left"}
    later = str(int(fields["pos"]) + 1)  # in the queue, never shown: a crafted or stale form
    skipped = client.post(f"/a/{token}", data={**fields, "pos": later})
    assert skipped.status_code == 409 and "not on your screen" in skipped.text
    assert client.post(f"/a/{token}", data={**fields, "pos": "500"}).status_code == 400  # not in the queue
    assert count_judgements(study) == 0
    assert client.post(f"/a/{token}", data=fields).status_code == 303  # the item on screen
    assert client.post(f"/a/{token}", data=fields).status_code == 303  # its repeat: still a silent no-op
    ahead = str(int(later) + 1)  # now `later` is on screen; the one after it is not
    assert client.post(f"/a/{token}", data={**fields, "pos": ahead}).status_code == 409
    conn = store.connect(study)
    assert [r[0] for r in conn.execute("SELECT s.pos FROM judgements j JOIN assignments s "
                                       "ON s.annotator = j.annotator AND s.item = j.item")] == [int(fields["pos"])]


# Crafted context ids (they come from the generation files) -> the cell a spreadsheet must show as text.
FORMULAS = {'=HYPERLINK("http://evil.example","click")': '\'=HYPERLINK("http://evil.example","click")',
            "+1+1": "'+1+1", "-2+3": "'-2+3", "@SUM(A1:A9)": "'@SUM(A1:A9)", "\t=1+1": "'\t=1+1",
            "\r=1+1": "'\r=1+1", "ctx\r=2+2": "ctx\r=2+2", "ctx-00001": "ctx-00001"}


def test_csv_export_neutralises_spreadsheet_formulas(client, study):
    conn = store.connect(study)
    for n, crafted in enumerate(FORMULAS):
        conn.execute("UPDATE items SET context_id = ? WHERE id % ? = ?", (crafted, len(FORMULAS), n))
    conn.execute("UPDATE items SET system_a = ?", ("=cmd|' /C calc'!A0",))
    conn.close()
    token, admin = tokens(study)["ann-1"], admin_token(study)
    for _ in range(10):
        judge(client, token, "left")
    rows = list(csv.DictReader(io.StringIO(client.get(f"/admin/{admin}/export.csv").text, newline="")))
    assert len(rows) == 10 and len({r["context_id"] for r in rows}) > 4
    jsonl = [json.loads(line) for line in client.get(f"/admin/{admin}/export.jsonl").text.splitlines()]
    for row, raw in zip(rows, jsonl):
        assert row["context_id"] == FORMULAS[raw["context_id"]]  # JSON is data, not a sheet: kept exact
        assert row["system_a"] == "'=cmd|' /C calc'!A0" and row["annotator"] == "ann-1"
        assert row["item"] == str(raw["item"]) and row["submitted_at"] == raw["submitted_at"]
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())


def test_requests_for_another_host_name_are_refused(client, study):
    token = tokens(study)["ann-1"]
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000"):
        assert client.get(f"/a/{token}", headers={"Host": host}).status_code == 200, host
    fields = {**form_fields(client.get(f"/a/{token}").text), "choice": "left"}
    # A DNS-rebinding page reaches the loopback server under its own name: refused before any other check.
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost:x"):
        assert client.get(f"/a/{token}", headers={"Host": host}).status_code == 400, host
        refused = client.post(f"/a/{token}", data=fields, headers={"Host": host, "Origin": f"http://{host}"})
        assert refused.status_code == 400 and "--allowed-hosts" in refused.text
    assert count_judgements(study) == 0


def test_allowed_hosts_are_names_with_an_optional_port(study):
    app = create_app(study, hosts=allowed_hosts("0.0.0.0", ["Study.LAN", "192.168.1.20:8000"]))
    client = app.test_client()
    token = tokens(study)["ann-1"]
    codes = {host: client.get(f"/a/{token}", headers={"Host": host}).status_code
             for host in ("study.lan", "study.lan:8443", "192.168.1.20:8000", "192.168.1.20:9000", "localhost",
                          "0.0.0.0:8000")}
    assert codes == {"study.lan": 200, "study.lan:8443": 200, "192.168.1.20:8000": 200,
                     "192.168.1.20:9000": 400, "localhost": 400, "0.0.0.0:8000": 400}


def test_allowed_hosts_for_the_served_address():
    assert allowed_hosts("127.0.0.1", []) == {("127.0.0.1", None), ("localhost", None), ("::1", None)}
    assert ("study.example.org", None) in allowed_hosts("::1", ["study.example.org"])
    assert allowed_hosts("192.168.1.20", []) == {("192.168.1.20", None)}
    with pytest.raises(StudyError, match="--allowed-hosts"):
        allowed_hosts("0.0.0.0", [])  # every interface: only the owner knows the names annotators use
    with pytest.raises(StudyError, match="not a host name"):
        allowed_hosts("127.0.0.1", ["study.lan:port"])
