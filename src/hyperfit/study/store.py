"""The study directory: `study.sqlite` (design, tokens, judgements) and `study.json` (a readable summary).

SQLite in WAL mode lets the web server's threads read while one writes; every judgement is one
`INSERT ... ON CONFLICT DO NOTHING` in its own transaction, and UNIQUE(annotator, item) makes a repeated
POST (double click, resubmitted form, retry after a timeout) a no-op instead of a second vote.

A judgement row holds only what the analysis needs: who (an annotator id chosen by the study owner),
which item, the side clicked, the resulting winner, when, and the time on task. No IP address, user agent
or other personal data is ever written.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path

# Atomic writes come from the run-directory module (stdlib + yaml only: still no torch here).
from hyperfit.runs import write_text
from hyperfit.study import StudyError
from hyperfit.study.assign import Plan, a_on_left

DB_NAME, SUMMARY_NAME = "study.sqlite", "study.json"
CHOICES = ("left", "right", "equal")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('pair', 'check')),
    context_id TEXT NOT NULL, context TEXT NOT NULL,
    text_a TEXT NOT NULL, text_b TEXT NOT NULL,
    system_a TEXT NOT NULL, system_b TEXT            -- NULL: b is an attention check's loop
);
CREATE TABLE annotators (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'judge'))
);
CREATE TABLE assignments (
    annotator TEXT NOT NULL REFERENCES annotators(id),
    pos INTEGER NOT NULL,                              -- 0-based place in this annotator's queue
    item INTEGER NOT NULL REFERENCES items(id),
    a_on_left INTEGER NOT NULL,
    PRIMARY KEY (annotator, pos), UNIQUE (annotator, item)
);
CREATE TABLE judgements (
    id INTEGER PRIMARY KEY,
    annotator TEXT NOT NULL REFERENCES annotators(id),
    item INTEGER NOT NULL REFERENCES items(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'equal')),
    winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'equal')),
    a_on_left INTEGER NOT NULL,
    submitted_at TEXT NOT NULL,
    ms_on_task INTEGER,
    UNIQUE (annotator, item)
);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def connect(study_dir: Path) -> sqlite3.Connection:
    """A connection for one thread or request. Autocommit; transactions are explicit where needed."""
    path = Path(study_dir) / DB_NAME
    if not path.is_file():
        raise StudyError(f"{str(study_dir)!r} is not a study directory (no {DB_NAME}); "
                         "make one with `hyperfit study create STUDY_DIR --from ...`.")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    # Writers queue for up to 30 s instead of failing with "database is locked" under load.
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def check_target(study_dir: Path) -> None:
    """Refuse to create over an existing non-empty directory (it may hold judgements)."""
    if study_dir.exists() and (not study_dir.is_dir() or any(study_dir.iterdir())):
        raise StudyError(f"{str(study_dir)!r} already exists and is not empty; choose a new STUDY_DIR "
                         "(an existing study is never overwritten, it may hold judgements).")


def create_study(study_dir: Path, plan: Plan, annotators: list[str], config: dict) -> None:
    """Write the whole study into a temp folder beside STUDY_DIR, then rename it into place."""
    study_dir = Path(study_dir)
    check_target(study_dir)
    study_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=study_dir.parent, prefix=f".{study_dir.name}.tmp-"))
    try:
        os.chmod(tmp, 0o700)  # the database holds every annotator's access token
        conn = sqlite3.connect(tmp / DB_NAME, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")  # persistent: every later connection uses WAL
        conn.executescript(SCHEMA)
        with conn:
            conn.execute("BEGIN")
            _fill(conn, plan, annotators, config)
        conn.close()
        write_text(tmp / SUMMARY_NAME, json.dumps(config, indent=2) + "\n")
        if study_dir.exists():
            study_dir.rmdir()  # empty, checked above
        os.rename(tmp, study_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fill(conn: sqlite3.Connection, plan: Plan, annotators: list[str], config: dict) -> None:
    secret = secrets.token_bytes(32)
    meta = {"config": json.dumps(config), "secret": secret.hex(), "admin_token": secrets.token_urlsafe(24)}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    conn.executemany(
        "INSERT INTO items (id, kind, context_id, context, text_a, text_b, system_a, system_b) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(i + 1, it.kind, it.context_id, it.context, it.text_a, it.text_b, it.system_a, it.system_b)
         for i, it in enumerate(plan.items)])
    conn.executemany("INSERT INTO annotators (id, token) VALUES (?, ?)",
                     [(a, secrets.token_urlsafe(24)) for a in annotators])
    conn.executemany(
        "INSERT INTO assignments VALUES (?, ?, ?, ?)",
        [(a, pos, idx + 1, a_on_left(secret, a, idx + 1))
         for a in annotators for pos, idx in enumerate(plan.queues[a])])


def meta(conn: sqlite3.Connection, key: str) -> str:
    return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]


def config(conn: sqlite3.Connection) -> dict:
    return json.loads(meta(conn, "config"))


def annotator_for_token(conn: sqlite3.Connection, token: str) -> str | None:
    row = conn.execute("SELECT id FROM annotators WHERE token = ? AND kind = 'human'", (token,)).fetchone()
    return row[0] if row else None


def progress(conn: sqlite3.Connection, annotator: str) -> tuple[int, int]:
    """(judged, total) for one annotator's queue."""
    total = conn.execute("SELECT COUNT(*) FROM assignments WHERE annotator = ?", (annotator,)).fetchone()[0]
    done = conn.execute("SELECT COUNT(*) FROM judgements WHERE annotator = ?", (annotator,)).fetchone()[0]
    return done, total


def next_assignment(conn: sqlite3.Connection, annotator: str) -> sqlite3.Row | None:
    """The first item of the annotator's queue not judged yet (None when done): this is what resumes."""
    return conn.execute(
        "SELECT s.pos, s.a_on_left, i.context, i.text_a, i.text_b FROM assignments s "
        "JOIN items i ON i.id = s.item WHERE s.annotator = ? AND NOT EXISTS "
        "(SELECT 1 FROM judgements j WHERE j.annotator = s.annotator AND j.item = s.item) "
        "ORDER BY s.pos LIMIT 1", (annotator,)).fetchone()


def record(conn: sqlite3.Connection, annotator: str, pos: int, choice: str, ms_on_task: int | None,
           on_screen_only: bool = False) -> bool:
    """Store one judgement; False when it was already stored (or pos is not in the queue).

    The winner is resolved here, server-side, from the stored placement: the browser only ever says
    "left", "right" or "equal". on_screen_only: store it only if pos is the item next_assignment shows
    now (else False), checked in the same statement so that no other request can move the queue between.
    """
    if choice not in CHOICES:
        raise StudyError(f"choice {choice!r} is not one of {CHOICES}")
    cur = conn.execute(
        "INSERT INTO judgements (annotator, item, choice, winner, a_on_left, submitted_at, ms_on_task) "
        "SELECT annotator, item, ?1, CASE WHEN ?1 = 'equal' THEN 'equal' "
        "  WHEN (?1 = 'left') = (a_on_left = 1) THEN 'a' ELSE 'b' END, a_on_left, ?2, ?3 "
        "FROM assignments WHERE annotator = ?4 AND pos = ?5 AND (NOT ?6 OR pos = "
        "  (SELECT MIN(s.pos) FROM assignments s WHERE s.annotator = ?4 AND NOT EXISTS "
        "   (SELECT 1 FROM judgements j WHERE j.annotator = s.annotator AND j.item = s.item))) "
        "ON CONFLICT (annotator, item) DO NOTHING", (choice, now(), ms_on_task, annotator, pos, on_screen_only))
    return cur.rowcount == 1


def is_judged(conn: sqlite3.Connection, annotator: str, pos: int) -> bool | None:
    """Whether the annotator has judged the item at pos of their queue; None when pos is not in it."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM judgements j WHERE j.annotator = s.annotator AND j.item = s.item) "
        "FROM assignments s WHERE s.annotator = ? AND s.pos = ?", (annotator, pos)).fetchone()
    return None if row is None else bool(row[0])


def add_pseudo_annotator(conn: sqlite3.Connection, annotator: str, kind: str = "judge") -> None:
    """An automatic rater (e.g. `judge:gpt-x`); it has no usable link, so its token is random and unused."""
    conn.execute("INSERT OR IGNORE INTO annotators (id, token, kind) VALUES (?, ?, ?)",
                 (annotator, secrets.token_urlsafe(24), kind))


def status(conn: sqlite3.Connection) -> list[dict]:
    """Per annotator: judged / total, attention checks failed so far, last activity."""
    rows = conn.execute(
        "SELECT a.id AS annotator, a.kind, "
        " (SELECT COUNT(*) FROM assignments s WHERE s.annotator = a.id) AS total, "
        " (SELECT COUNT(*) FROM judgements j WHERE j.annotator = a.id) AS judged, "
        " (SELECT COUNT(*) FROM judgements j JOIN items i ON i.id = j.item "
        "   WHERE j.annotator = a.id AND i.kind = 'check' AND j.winner != 'a') AS checks_failed, "
        " (SELECT MAX(submitted_at) FROM judgements j WHERE j.annotator = a.id) AS last_at "
        "FROM annotators a ORDER BY a.kind DESC, a.id").fetchall()
    return [dict(r) for r in rows]


EXPORT_COLUMNS = ("annotator", "annotator_kind", "item", "kind", "context_id", "system_a", "system_b",
                  "system_left", "system_right", "choice", "winner", "preferred", "submitted_at",
                  "ms_on_task")


def export_rows(conn: sqlite3.Connection) -> list[dict]:
    """Every judgement joined with its item and systems (admin only: it names the systems)."""
    rows = conn.execute(
        "SELECT j.annotator, a.kind AS annotator_kind, j.item, i.kind, i.context_id, i.system_a, "
        " i.system_b, j.a_on_left, j.choice, j.winner, j.submitted_at, j.ms_on_task "
        "FROM judgements j JOIN items i ON i.id = j.item JOIN annotators a ON a.id = j.annotator "
        "ORDER BY j.annotator, j.id").fetchall()
    out = []
    for r in rows:
        d = dict(r)
        b = d["system_b"] or "attention-check loop"
        left, right = (d["system_a"], b) if d.pop("a_on_left") else (b, d["system_a"])
        preferred = {"a": d["system_a"], "b": b, "equal": ""}[d["winner"]]
        d.update(system_left=left, system_right=right, preferred=preferred)
        out.append({k: d[k] for k in EXPORT_COLUMNS})
    return out

