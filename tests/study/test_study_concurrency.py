"""50 annotators x 20 judgements at once through the real waitress server on 127.0.0.1.

Every fifth judgement is also sent a second time from another thread at the same moment (a double
click racing itself). Expect exactly 1,000 rows, none duplicated, every request answered without a
server error. Loopback only; every request has a timeout and every loop a fixed length.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hyperfit.study import store
from hyperfit.study.server import make_server
from study_fixtures import consent_all, create, form_fields, make_run, tokens

ANNOTATORS, PER_ANNOTATOR = 50, 20
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never route loopback via a proxy


def post(url: str, fields: dict) -> str:
    """POST the form; urllib follows the 303 to the next page, whose HTML is returned."""
    data = urllib.parse.urlencode(fields).encode()
    with OPENER.open(urllib.request.Request(url, data=data, method="POST"), timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


def annotate(url: str) -> int:
    twin_errors: list[BaseException] = []

    def twin_post(fields):
        try:
            post(url, fields)
        except BaseException as e:  # noqa: BLE001 - deliberate: a thread's exception would otherwise vanish
            twin_errors.append(e)

    with OPENER.open(url, timeout=30) as response:
        page = response.read().decode()
    for n in range(PER_ANNOTATOR):
        fields = {**form_fields(page), "choice": ("left", "right", "equal")[n % 3], "ms": "900"}
        twin = None
        if n % 5 == 0:
            twin = threading.Thread(target=twin_post, args=(fields,))
            twin.start()
        page = post(url, fields)
        if twin:
            twin.join(timeout=30)
    assert "All done" in page and not twin_errors, twin_errors
    return PER_ANNOTATOR


def test_1000_concurrent_judgements_are_stored_exactly_once(tmp_path):
    gen = make_run(tmp_path, n=200)
    study = consent_all(create(tmp_path / "study", gen, "--annotators", str(ANNOTATORS), "--raters-per-item", "5",
                               "--attention-checks", "0"))  # 200 items x 5 / 50 annotators = 20 each
    server = make_server(study, "127.0.0.1", 0, threads=8, min_answer_ms=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.effective_port}"
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=ANNOTATORS) as pool:
            done = list(pool.map(annotate, [f"{base}/a/{t}" for t in tokens(study).values()], timeout=300))
        elapsed = time.perf_counter() - start
    finally:
        server.close()
        thread.join(timeout=10)
    conn = store.connect(study)
    total, distinct = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT annotator || '/' || item) FROM judgements").fetchone()
    per_annotator = {r[0] for r in conn.execute("SELECT COUNT(*) FROM judgements GROUP BY annotator")}
    unassigned = conn.execute("SELECT COUNT(*) FROM judgements j LEFT JOIN assignments s ON "
                              "s.annotator = j.annotator AND s.item = j.item WHERE s.item IS NULL").fetchone()[0]
    conn.close()
    assert sum(done) == ANNOTATORS * PER_ANNOTATOR
    assert (total, distinct, per_annotator, unassigned) == (1000, 1000, {20}, 0)
    ARTIFACTS.mkdir(exist_ok=True)
    record = {"annotators": ANNOTATORS, "judgements_stored": total, "duplicate_posts": ANNOTATORS * 4,
              "elapsed_s": round(elapsed, 2), "judgements_per_s": round(total / elapsed, 1)}
    (ARTIFACTS / "concurrency.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nconcurrency: {record}")
