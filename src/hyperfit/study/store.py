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
import random
import secrets
import shutil
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path

# Atomic writes come from the run-directory module (stdlib + yaml only: still no torch here).
from hyperfit.runs import write_text
from hyperfit.study import StudyError, assign
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
    kind TEXT NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'judge')),
    source TEXT NOT NULL DEFAULT 'link',             -- link | added | prolific | open | judge
    external_id TEXT UNIQUE,                           -- e.g. 'prolific:<PROLIFIC_PID>'
    session_id TEXT,                                   -- Prolific SESSION_ID of the arrival
    created_at TEXT,
    consented_at TEXT,                                 -- start page accepted
    revoked_at TEXT                                    -- link revoked: 403, work reassignable
);
CREATE TABLE shown (                                   -- first time each item was on the annotator's screen
    annotator TEXT NOT NULL REFERENCES annotators(id),
    item INTEGER NOT NULL REFERENCES items(id),
    shown_at TEXT NOT NULL,
    PRIMARY KEY (annotator, item)
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
    ms_on_task INTEGER,                                -- server clock: answered - first shown (survives reloads)
    shown_at TEXT,
    ms_client INTEGER,                                 -- the page's own count, for this page view only
    UNIQUE (annotator, item)
);
CREATE TABLE retracted (                               -- answers replaced with "Change my last answer"
    annotator TEXT NOT NULL, item INTEGER NOT NULL, choice TEXT NOT NULL, winner TEXT NOT NULL,
    submitted_at TEXT NOT NULL, ms_on_task INTEGER, retracted_at TEXT NOT NULL
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
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'shown'").fetchone() is None:
        conn.close()
        raise StudyError(f"{str(study_dir)!r} was made by an older hyperfit (no per-item showing times, "
                         "no start page); export its judgements with that version, then create the study anew.")
    return conn


def check_target(study_dir: Path) -> None:
    """Refuse to create over an existing non-empty directory (it may hold judgements)."""
    if study_dir.exists() and (not study_dir.is_dir() or any(study_dir.iterdir())):
        raise StudyError(f"{str(study_dir)!r} already exists and is not empty; choose a new STUDY_DIR "
                         "(an existing study is never overwritten, it may hold judgements).")


def create_study(study_dir: Path, plan: Plan, annotators: list[str], config: dict, page: str = "") -> None:
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
            _fill(conn, plan, annotators, config, page)
        conn.close()
        write_text(tmp / SUMMARY_NAME, json.dumps(config, indent=2) + "\n")
        if study_dir.exists():
            study_dir.rmdir()  # empty, checked above
        os.rename(tmp, study_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fill(conn: sqlite3.Connection, plan: Plan, annotators: list[str], config: dict, page: str) -> None:
    secret = secrets.token_bytes(32)
    # entry_token: the crowd link's secret (/p/ENTRY for Prolific, /o/ENTRY for open links), stored like
    # the annotators' tokens, so every link stays valid across restarts and ports.
    meta = {"config": json.dumps(config), "secret": secret.hex(), "admin_token": secrets.token_urlsafe(24),
            "entry_token": secrets.token_urlsafe(18), "page": page}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    conn.executemany(
        "INSERT INTO items (id, kind, context_id, context, text_a, text_b, system_a, system_b) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(i + 1, it.kind, it.context_id, it.context, it.text_a, it.text_b, it.system_a, it.system_b)
         for i, it in enumerate(plan.items)])
    conn.executemany("INSERT INTO annotators (id, token, created_at) VALUES (?, ?, ?)",
                     [(a, secrets.token_urlsafe(24), now()) for a in annotators])
    conn.executemany(
        "INSERT INTO assignments VALUES (?, ?, ?, ?)",
        [(a, pos, idx + 1, a_on_left(secret, a, idx + 1))
         for a in annotators for pos, idx in enumerate(plan.queues[a])])


def meta(conn: sqlite3.Connection, key: str) -> str:
    return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]


def config(conn: sqlite3.Connection) -> dict:
    return json.loads(meta(conn, "config"))


def annotator_for_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    """The human annotator holding this link (id, revoked_at, consented_at, source), or None."""
    return conn.execute("SELECT id, revoked_at, consented_at, source FROM annotators "
                        "WHERE token = ? AND kind = 'human'", (token,)).fetchone()


def consent(conn: sqlite3.Connection, annotator: str) -> None:
    conn.execute("UPDATE annotators SET consented_at = ? WHERE id = ? AND consented_at IS NULL", (now(), annotator))


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


def mark_shown(conn: sqlite3.Connection, annotator: str, pos: int) -> str:
    """Remember when the item at pos was first on the annotator's screen (a reload keeps the first time);
    returns that time. Time on task is measured from it by the server's clock."""
    conn.execute("INSERT OR IGNORE INTO shown (annotator, item, shown_at) SELECT annotator, item, ? "
                 "FROM assignments WHERE annotator = ? AND pos = ?", (now(), annotator, pos))
    row = conn.execute("SELECT h.shown_at FROM shown h JOIN assignments s ON s.annotator = h.annotator AND "
                       "s.item = h.item WHERE s.annotator = ? AND s.pos = ?", (annotator, pos)).fetchone()
    return row[0] if row else now()


def ms_since_shown(conn: sqlite3.Connection, annotator: str, pos: int) -> int | None:
    """Milliseconds since the item at pos was first shown (None: never shown, e.g. an automatic judge)."""
    row = conn.execute("SELECT h.shown_at FROM shown h JOIN assignments s ON s.annotator = h.annotator AND "
                       "s.item = h.item WHERE s.annotator = ? AND s.pos = ?", (annotator, pos)).fetchone()
    if row is None:
        return None
    return int((datetime.now(timezone.utc) - datetime.fromisoformat(row[0])).total_seconds() * 1000)


def record(conn: sqlite3.Connection, annotator: str, pos: int, choice: str, ms_client: int | None = None,
           on_screen_only: bool = False) -> bool:
    """Store one judgement; False when it was already stored (or pos is not in the queue).

    The winner is resolved here, server-side, from the stored placement: the browser only ever says
    "left", "right" or "equal". Time on task is the server's: from the item's first showing (mark_shown)
    to now, so a reload does not restart it; the page's own count is kept as ms_client.
    on_screen_only: store it only if pos is the item next_assignment shows now (else False), checked in
    the same statement so that no other request can move the queue between.
    """
    if choice not in CHOICES:
        raise StudyError(f"choice {choice!r} is not one of {CHOICES}")
    at = now()
    cur = conn.execute(
        "INSERT INTO judgements (annotator, item, choice, winner, a_on_left, submitted_at, ms_on_task, "
        " shown_at, ms_client) "
        "SELECT s.annotator, s.item, ?1, CASE WHEN ?1 = 'equal' THEN 'equal' "
        "  WHEN (?1 = 'left') = (s.a_on_left = 1) THEN 'a' ELSE 'b' END, s.a_on_left, ?2, "
        "  CAST(ROUND((julianday(?2) - julianday(h.shown_at)) * 86400000) AS INTEGER), h.shown_at, ?3 "
        "FROM assignments s LEFT JOIN shown h ON h.annotator = s.annotator AND h.item = s.item "
        "WHERE s.annotator = ?4 AND s.pos = ?5 AND (NOT ?6 OR s.pos = "
        "  (SELECT MIN(q.pos) FROM assignments q WHERE q.annotator = ?4 AND NOT EXISTS "
        "   (SELECT 1 FROM judgements j WHERE j.annotator = q.annotator AND j.item = q.item))) "
        "ON CONFLICT (annotator, item) DO NOTHING", (choice, at, ms_client, annotator, pos, on_screen_only))
    return cur.rowcount == 1


def stored_choice(conn: sqlite3.Connection, annotator: str, pos: int) -> str | None:
    """The choice already stored for the item at pos of the annotator's queue (None: not judged)."""
    row = conn.execute("SELECT j.choice FROM judgements j JOIN assignments s ON s.annotator = j.annotator "
                       "AND s.item = j.item WHERE s.annotator = ? AND s.pos = ?", (annotator, pos)).fetchone()
    return row[0] if row else None


def retract_last(conn: sqlite3.Connection, annotator: str) -> int | None:
    """"Change my last answer": move the annotator's most recent judgement to `retracted`, so its item is
    the next one shown again (it has the lowest unjudged position: later items are not judged yet).
    Returns the item's queue position, or None when there is nothing to change."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT j.id, j.item, s.pos FROM judgements j JOIN assignments s ON s.annotator = "
                           "j.annotator AND s.item = j.item WHERE j.annotator = ? ORDER BY j.id DESC LIMIT 1",
                           (annotator,)).fetchone()
        if row is None:
            conn.execute("COMMIT")
            return None
        conn.execute("INSERT INTO retracted SELECT annotator, item, choice, winner, submitted_at, ms_on_task, ? "
                     "FROM judgements WHERE id = ?", (now(), row["id"]))
        conn.execute("DELETE FROM judgements WHERE id = ?", (row["id"],))
        conn.execute("COMMIT")
        return row["pos"]
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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
        "SELECT a.id AS annotator, a.kind, a.source, a.revoked_at, "
        " (SELECT COUNT(*) FROM assignments s WHERE s.annotator = a.id) AS total, "
        " (SELECT COUNT(*) FROM judgements j WHERE j.annotator = a.id) AS judged, "
        " (SELECT COUNT(*) FROM judgements j JOIN items i ON i.id = j.item "
        "   WHERE j.annotator = a.id AND i.kind = 'check' AND j.winner != 'a') AS checks_failed, "
        " (SELECT MAX(submitted_at) FROM judgements j WHERE j.annotator = a.id) AS last_at "
        "FROM annotators a ORDER BY a.kind DESC, a.id").fetchall()
    out = [dict(r) for r in rows]
    for r in out:  # median time on task (server clock): a speeder shows here before `results`
        ms = sorted(m for (m,) in conn.execute("SELECT ms_on_task FROM judgements WHERE annotator = ? AND "
                                               "ms_on_task IS NOT NULL", (r["annotator"],)))
        r["median_ms"] = (ms[(len(ms) - 1) // 2] + ms[len(ms) // 2]) / 2 if ms else None
    return out


EXPORT_COLUMNS = ("annotator", "annotator_kind", "item", "kind", "context_id", "system_a", "system_b",
                  "system_left", "system_right", "choice", "winner", "preferred", "queue_position",
                  "shown_at", "submitted_at", "ms_on_task", "ms_client", "context", "text_left", "text_right")


def export_rows(conn: sqlite3.Connection) -> list[dict]:
    """Every judgement joined with its item and systems (admin only: it names the systems), with the
    annotator's queue position (1-based), the exact texts shown on each side, and when the item was first
    shown and answered."""
    rows = conn.execute(
        "SELECT j.annotator, a.kind AS annotator_kind, j.item, i.kind, i.context_id, i.system_a, "
        " i.system_b, j.a_on_left, j.choice, j.winner, j.shown_at, j.submitted_at, j.ms_on_task, j.ms_client, "
        " s.pos + 1 AS queue_position, i.context, i.text_a, i.text_b "
        "FROM judgements j JOIN items i ON i.id = j.item JOIN annotators a ON a.id = j.annotator "
        "LEFT JOIN assignments s ON s.annotator = j.annotator AND s.item = j.item "
        "ORDER BY j.annotator, j.id").fetchall()
    out = []
    for r in rows:
        d = dict(r)
        b = d["system_b"] or "attention-check loop"
        on_left = d.pop("a_on_left")
        left, right = (d["system_a"], b) if on_left else (b, d["system_a"])
        text_left, text_right = (d["text_a"], d["text_b"]) if on_left else (d["text_b"], d["text_a"])
        preferred = {"a": d["system_a"], "b": b, "equal": ""}[d["winner"]]
        d.update(system_left=left, system_right=right, preferred=preferred, text_left=text_left,
                 text_right=text_right)
        out.append({k: d[k] for k in EXPORT_COLUMNS})
    return out


def coverage(conn: sqlite3.Connection) -> dict[int, int]:
    """item id -> raters it has or will have: human judgements, plus queued items of unrevoked humans."""
    rows = conn.execute(
        "SELECT i.id, "
        " (SELECT COUNT(*) FROM judgements j JOIN annotators a ON a.id = j.annotator "
        "   WHERE j.item = i.id AND a.kind = 'human') + "
        " (SELECT COUNT(*) FROM assignments s JOIN annotators a ON a.id = s.annotator "
        "   WHERE s.item = i.id AND a.kind = 'human' AND a.revoked_at IS NULL AND NOT EXISTS "
        "   (SELECT 1 FROM judgements j WHERE j.annotator = s.annotator AND j.item = s.item)) "
        "FROM items i WHERE i.kind = 'pair'").fetchall()
    return {r[0]: r[1] for r in rows}


def extend_queue(conn: sqlite3.Connection, annotator: str, want: int, k: int, check_rate: float,
                 seed: str) -> int:
    """Append to the annotator's queue up to `want` pair items that still lack raters (fewest raters
    first), at most one per context the annotator has not seen, plus their attention checks from other
    unseen contexts; returns how many pair items were added. The caller holds a write transaction, so two
    arrivals cannot both take the last open place."""
    rng = random.Random(seed)
    secret = bytes.fromhex(meta(conn, "secret"))
    seen = {r[0] for r in conn.execute("SELECT i.context_id FROM assignments s JOIN items i ON i.id = s.item "
                                       "WHERE s.annotator = ?", (annotator,))}
    cover = coverage(conn)
    items = {r["id"]: r for r in conn.execute("SELECT * FROM items")}
    best: dict[str, tuple[int, float, int]] = {}
    for item_id, n in cover.items():
        cid = items[item_id]["context_id"]
        if cid in seen or n >= k:
            continue
        key = (n, rng.random(), item_id)
        if cid not in best or key < best[cid]:
            best[cid] = key
    picked = [key[2] for key in sorted(best.values())[:want]]
    taken = seen | {items[i]["context_id"] for i in picked}
    sources = {}
    for row in items.values():  # a check needs a real side: a pair's b (or a) side, or a check's a side
        if row["context_id"] not in taken:
            sources.setdefault(row["context_id"], row)
    checks = []
    for cid in rng.sample(sorted(sources), min(assign.n_checks(len(picked), check_rate), len(sources))):
        row = sources[cid]
        real, system = ((row["text_b"], row["system_b"]) if row["kind"] == "pair"
                        else (row["text_a"], row["system_a"]))
        item = assign.Item(assign.CHECK, cid, row["context"], real, "", system, None)
        check = assign.build_check(item, side="a")
        cur = conn.execute("INSERT INTO items (kind, context_id, context, text_a, text_b, system_a, system_b) "
                           "VALUES (?, ?, ?, ?, ?, ?, NULL)", (check.kind, check.context_id, check.context,
                                                              check.text_a, check.text_b, check.system_a))
        checks.append(cur.lastrowid)
    new = picked + checks
    rng.shuffle(new)
    start = conn.execute("SELECT COALESCE(MAX(pos) + 1, 0) FROM assignments WHERE annotator = ?",
                         (annotator,)).fetchone()[0]
    conn.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?)",
                     [(annotator, start + n, item, a_on_left(secret, annotator, item)) for n, item in enumerate(new)])
    return len(picked)


def add_annotator(conn: sqlite3.Connection, annotator: str, source: str, external_id: str | None = None,
                  session_id: str | None = None) -> str:
    """A new human annotator with a fresh private token (its queue is empty: see extend_queue)."""
    token = secrets.token_urlsafe(24)
    conn.execute("INSERT INTO annotators (id, token, source, external_id, session_id, created_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (annotator, token, source, external_id, session_id, now()))
    return token


def revoke(conn: sqlite3.Connection, annotator: str) -> None:
    cur = conn.execute("UPDATE annotators SET revoked_at = ? WHERE id = ? AND kind = 'human'", (now(), annotator))
    if cur.rowcount != 1:
        raise StudyError(f"no human annotator {annotator!r} in this study; `hyperfit study status` lists them.")
