"""The annotation web app (Flask, served by waitress).

    hyperfit study serve STUDY_DIR --host 127.0.0.1 --port 8000

Routes (TOKEN is unguessable, minted at `create`; a wrong or missing one gets 403):

    GET  /a/TOKEN                    the annotator's next item (or "all done"); reload resumes
    POST /a/TOKEN                    one judgement of the item on screen: csrf, pos, choice (left|right|equal),
                                     ms; -> 303 to GET (409 for any other item, or another answer to one
                                     judged; 425 sooner than MIN_ANSWER_MS after the item appeared)
    POST /a/TOKEN/change             "Change my last answer": the last judgement is withdrawn and shown again
    GET  /admin/TOKEN/status         progress per annotator (JSON)
    GET  /admin/TOKEN/export.jsonl   every judgement with system names (also export.csv)

Blinding: an annotator's page holds the context, the two truncated continuations, the queue position
and a CSRF token, nothing else; system names, file names and decoder settings stay in the database.
The browser says "left" / "right" / "equal" and the server turns that into a winner.

Every request must name an allowed host (see allowed_hosts) or it gets 400: a DNS-rebinding page would
otherwise reach a server on 127.0.0.1 under its own name, with the browser treating it as same-origin.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import hmac
import io
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

try:
    import resource  # POSIX only
except ImportError:
    resource = None

from flask import Flask, Response, abort, g, redirect, render_template, request

from hyperfit.runs import atomic_path
from hyperfit.study import StudyError, page, store

MAX_BODY = 8 * 1024  # a judgement is ~200 bytes; anything bigger is not ours (-> 413)
MAX_MS = 24 * 3600 * 1000  # time on task above a day is a forgotten tab, not a measurement
# After an item appears the page ignores input for INPUT_GUARD_MS (a key pressed twice answered the next
# item 178 ms after it appeared); the server refuses an answer sooner than MIN_ANSWER_MS after the first
# showing, for clients without the script.
INPUT_GUARD_MS, MIN_ANSWER_MS = 700, 500
PARTICIPANT_ID = re.compile(r"[A-Za-z0-9]{1,64}")  # Prolific ids are 24 hex digits; others similar
PROLIFIC_COMPLETE = "https://app.prolific.com/submissions/complete?cc={code}"
CHOICE_WORDS = {"left": "A better", "right": "B better", "equal": "equally good"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")

# waitress's defaults (100 connections, idle ones closed after 120 s, checked every 30 s) let ~100 idle
# sockets lock everyone out for two minutes. poll() instead of select(): select fails on descriptors past 1023.
WAITRESS_LIMITS = {"channel_timeout": 30, "cleanup_interval": 5, "asyncore_use_poll": True}
MAX_CONNECTIONS = 1000

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# Sent with every response. The CSP allows only this server's own CSS/JS (no inline script, no CDN),
# same-origin keeps the token in the URL from leaking to any other site (not no-referrer: with it, Chrome
# sends `Origin: null` on our own form posts, which the Origin check must refuse); no-store: no caching.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def csrf_token(secret: bytes, annotator: str) -> str:
    """Per-annotator CSRF token: an HMAC, so nothing extra is stored and it survives server restarts."""
    return hmac.new(secret, b"csrf\0" + annotator.encode(), hashlib.sha256).hexdigest()[:32]


def small_int(text: str) -> int | None:
    """`"42"` -> 42; anything but 1-12 ASCII digits -> None (`"²".isdigit()` is True, int("²") fails)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def same_origin() -> bool:
    """Origin (else Referer) must name this host. Neither header: a non-browser client; the CSRF token
    still has to match. `Origin: null` (sandboxed frames, file://) fails."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    return source is None or urlsplit(source).netloc == request.host


def host_port(text: str) -> tuple[str, int | None] | None:
    """`"Study.LAN:8000"` -> ("study.lan", 8000), `"[::1]"` -> ("::1", None); None when not a host[:port]."""
    try:
        parts = urlsplit("//" + text)
        name, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    ok = name and parts.netloc == text and not parts.username and not any(c.isspace() for c in name)
    return (name, port) if ok else None


def allowed_hosts(host: str, extra: Iterable[str]) -> set[tuple[str, int | None]]:
    """The (name, port) pairs requests may name in Host: the served address, with localhost and 127.0.0.1
    when it is loopback, and the extra entries (port None: any port). Listening on every interface, only
    the study owner knows the names annotators use, so they must be given."""
    entries = set()
    for text in extra:
        entry = host_port(text.strip())
        if entry is None:
            raise StudyError(f"--allowed-hosts: {text!r} is not a host name or address with an optional "
                             "port; pass e.g. --allowed-hosts study.example.org,192.168.1.20:8000")
        entries.add(entry)
    if host in WILDCARD_HOSTS:
        if not entries:
            raise StudyError(f"--host {host or repr(host)} listens on every interface, so the names annotators "
                             "use are unknown; list them, e.g. --allowed-hosts 192.168.1.20,study.lan "
                             "(or pass --base-url), or serve on one address with --host 192.168.1.20.")
        return entries
    names = LOOPBACK_NAMES if is_loopback(host) else (host.strip("[]").lower(),)
    return entries | {(name, None) for name in names}


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def host_allowed(header: str, allowed: set[tuple[str, int | None]]) -> bool:
    entry = host_port(header)
    return entry is not None and (entry in allowed or (entry[0], None) in allowed)


def create_app(study_dir: Path, hosts: set[tuple[str, int | None]] | None = None,
               min_answer_ms: int = MIN_ANSWER_MS) -> Flask:
    """The app for one study directory. Secrets are read once; each request opens its own connection.
    hosts: what allowed_hosts() returns (default: the loopback names, for a server on 127.0.0.1)."""
    allowed = {(name, None) for name in LOOPBACK_NAMES} if hosts is None else set(hosts)
    study_dir = Path(study_dir)
    conn = store.connect(study_dir)
    secret = bytes.fromhex(store.meta(conn, "secret"))
    admin_token = store.meta(conn, "admin_token")
    entry_token = store.meta(conn, "entry_token")
    wording = page.parse_page(store.meta(conn, "page") or page.DEFAULT_PAGE.read_text(encoding="utf-8"))
    config = store.config(conn)
    conn.close()

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, MAX_FORM_MEMORY_SIZE=MAX_BODY)

    def db():
        if "conn" not in g:
            g.conn = store.connect(study_dir)
        return g.conn

    @app.teardown_appcontext
    def close_db(_exc):
        conn = g.pop("conn", None)
        if conn is not None:
            conn.close()

    @app.before_request
    def check_host():
        if not host_allowed(request.host, allowed):
            abort(400, f"This study is not served under the name {request.host!r}. If that is the address "
                       "annotators use, the study owner adds it with `hyperfit study serve --allowed-hosts`.")

    @app.after_request
    def harden(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    app.config["MIN_ANSWER_MS"] = min_answer_ms
    add_annotator_routes(app, db, secret, wording, config)
    add_crowd_routes(app, db, entry_token, config)
    add_admin_routes(app, db, admin_token)
    return app


def annotator_row(db, token: str):
    """The link's annotator row; 403 for an unknown or revoked link."""
    row = store.annotator_for_token(db(), token)
    if row is None:
        abort(403, "This link is not valid. Ask the study owner for your personal link.")
    if row["revoked_at"]:
        abort(403, "This link has been withdrawn by the study owner. Thank you for your help so far.")
    return row


def checked_annotator_form(db, secret: bytes, token: str) -> tuple[str, dict]:
    """(annotator, form) of a POST that passed the origin and CSRF checks."""
    annotator = annotator_row(db, token)["id"]
    form = request.form  # parsing enforces MAX_CONTENT_LENGTH -> 413 before any other check
    if not same_origin():
        abort(403, "Cross-site request refused.")
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(secret, annotator)):
        abort(403, "This form has expired or is not yours; reload the page.")
    return annotator, form


def render_start(wording: page.Page, secret: bytes, token: str, annotator: str, feedback: str = "",
                 error: str = "", code: int = 200):
    return render_template("start.html", page=wording, csrf=csrf_token(secret, annotator), feedback=feedback,
                           error=error, action=f"/a/{token}"), code


def add_start_routes(app: Flask, db, checked_form, start_page, wording: page.Page) -> None:
    """POST /a/TOKEN/start (consent) and /a/TOKEN/practice (the worked item, never stored)."""

    @app.post("/a/<token>/start")
    def start(token: str):
        annotator, form = checked_form(token)
        if wording.consent and form.get("consent") != "yes":
            return start_page(token, annotator, error="Please tick the consent box to take part.", code=400)
        store.consent(db(), annotator)
        return redirect(f"/a/{token}", code=303)

    @app.post("/a/<token>/practice")
    def practice(token: str):
        """The start page's worked item: the answer is explained, never stored."""
        annotator, form = checked_form(token)
        if wording.practice is None:
            abort(404)
        answer = {"left": "a", "right": "b", "equal": "equal"}.get(form.get("choice", ""))
        right = answer == wording.practice["answer"]
        text = ("Right. " if right else "Not quite. ") + str(wording.practice.get("explanation", ""))
        return start_page(token, annotator, feedback=text)


def add_annotator_routes(app: Flask, db, secret: bytes, wording: page.Page, config: dict) -> None:
    """GET / POST /a/TOKEN: the only routes an annotator uses; they never name a system."""

    annotator_or_403 = partial(annotator_row, db)
    checked_form = partial(checked_annotator_form, db, secret)
    start_page = partial(render_start, wording, secret)
    add_start_routes(app, db, checked_form, start_page, wording)

    @app.get("/a/<token>")
    def item_page(token: str):
        row = annotator_or_403(token)
        annotator = row["id"]
        if row["consented_at"] is None:
            return start_page(token, annotator)
        done, total = store.progress(db(), annotator)
        item = store.next_assignment(db(), annotator)
        if item is None:
            return render_template("done.html", total=total, page=wording, csrf=csrf_token(secret, annotator),
                                   **completion(config))
        store.mark_shown(db(), annotator, item["pos"])
        left, right = (item["text_a"], item["text_b"]) if item["a_on_left"] else (item["text_b"], item["text_a"])
        return render_template("item.html", context=item["context"], left=left, right=right,
                               pos=item["pos"], number=done + 1, total=total, can_change=done > 0,
                               guard_ms=INPUT_GUARD_MS, csrf=csrf_token(secret, annotator),
                               question=wording.question, labels=wording.choices, instructions=wording.body_html)

    @app.post("/a/<token>")
    def judge(token: str):
        annotator, form = checked_form(token)
        pos, choice = small_int(form.get("pos", "")), form.get("choice", "")
        if pos is None or choice not in store.CHOICES:
            abort(400, f"Expected pos (a number) and choice in {store.CHOICES}.")
        ms = small_int(form.get("ms", ""))
        elapsed = store.ms_since_shown(db(), annotator, pos)
        too_soon = elapsed is not None and elapsed < app.config["MIN_ANSWER_MS"]
        if too_soon and store.stored_choice(db(), annotator, pos) is None:
            return refuse(token, 425, "Too fast", f"This answer came {elapsed} ms after the item appeared, before "
                          "anyone could read it (a key pressed twice?). It was not saved: read both "
                          "continuations, then answer.")
        if not store.record(db(), annotator, pos, choice, None if ms is None else min(ms, MAX_MS),
                            on_screen_only=True):
            return refuse_unless_repeat(db, token, annotator, pos, choice)
        return redirect(f"/a/{token}", code=303)

    @app.post("/a/<token>/change")
    def change_last(token: str):
        annotator, _form = checked_form(token)
        store.retract_last(db(), annotator)
        return redirect(f"/a/{token}", code=303)


def refuse_unless_repeat(db, token: str, annotator: str, pos: int, choice: str):
    """Nothing was stored. The same answer to an item judged already is a repeat (double click, resent
    form): same redirect. A different answer to it (a stale tab) and any other item are refused with a
    message (409): never silently dropped."""
    judged = store.is_judged(db(), annotator, pos)
    if judged is None:
        abort(400, f"Item {pos} is not in your queue; reload the page.")
    if judged:
        stored = store.stored_choice(db(), annotator, pos)
        if stored == choice:
            return redirect(f"/a/{token}", code=303)
        return refuse(token, 409, "Already answered",
                      f"You already answered this item ({CHOICE_WORDS[stored]}), perhaps in another tab, "
                      f"so this answer ({CHOICE_WORDS[choice]}) was not saved. To change an answer, use "
                      "\"Change my last answer\" right after giving it.")
    return refuse(token, 409, "Not the current item",
                  "This answer is for an item that is not on your screen now (another tab may have moved "
                  "on), so it was not saved.")

def refuse(token: str, code: int, title: str, text: str):
    return render_template("message.html", title=title, text=text, back=f"/a/{token}"), code


def completion(config: dict) -> dict:
    """What the "all done" page shows a crowd worker: Prolific's completion code and its return link."""
    crowd = config.get("crowd") or {}
    code = crowd.get("completion_code")
    url = crowd.get("completion_url") or (PROLIFIC_COMPLETE.format(code=code) if code else None)
    return {"completion_code": code, "completion_url": url}


def add_crowd_routes(app: Flask, db, entry_token: str, config: dict) -> None:
    """GET /p/ENTRY?PROLIFIC_PID=...: a Prolific participant's queue (the same one when they come back);
    GET /o/ENTRY: an open link, a fresh queue for each arrival. Both redirect to the private /a/TOKEN link."""
    crowd = config.get("crowd") or {"mode": "links"}

    def entry_or_404(token: str, mode: str) -> None:
        if crowd.get("mode") != mode or not hmac.compare_digest(token.encode(), entry_token.encode()):
            abort(404)

    def arrive(annotator: str, source: str, external: str | None = None, session: str | None = None):
        conn = db()
        conn.execute("BEGIN IMMEDIATE")  # arrivals take places one at a time: no item gets k + 1 raters
        try:
            if external is not None:
                row = conn.execute("SELECT token FROM annotators WHERE external_id = ?", (external,)).fetchone()
                if row is not None:
                    conn.execute("COMMIT")
                    return redirect(f"/a/{row[0]}", code=303)
            token = store.add_annotator(conn, annotator, source, external, session)
            added = store.extend_queue(conn, annotator, crowd["queue_length"], config["raters_per_item"],
                                       config["attention_checks"], f"{config['seed']}:{annotator}")
            if added == 0:
                conn.execute("ROLLBACK")
                return render_template("message.html", title="This study is full",
                                       text="Every item has all the judgements it needs. Thank you for your "
                                            "interest; please return the study.", back=None), 410
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return redirect(f"/a/{token}", code=303)

    @app.get("/p/<token>")
    def prolific(token: str):
        entry_or_404(token, "prolific")
        pid = request.args.get("PROLIFIC_PID", "")
        if not PARTICIPANT_ID.fullmatch(pid):
            abort(400, "This link needs your Prolific ID (PROLIFIC_PID in the address); open the study from "
                       "Prolific.")
        session = request.args.get("SESSION_ID", "")[:64] or None
        return arrive(f"prolific-{pid}", "prolific", f"prolific:{pid}", session)

    @app.get("/o/<token>")
    def open_link(token: str):
        entry_or_404(token, "open")
        return arrive(f"open-{secrets.token_hex(4)}", "open")


def add_admin_routes(app: Flask, db, admin_token: str) -> None:
    """Status and exports, behind the admin token (these do name the systems)."""

    def admin_or_403(token: str) -> None:
        if not hmac.compare_digest(token.encode(), admin_token.encode()):
            abort(403, "Admin token required.")

    @app.get("/admin/<token>/status")
    def admin_status(token: str):
        admin_or_403(token)
        return {"annotators": store.status(db())}

    @app.get("/admin/<token>/export.<fmt>")
    def admin_export(token: str, fmt: str):
        admin_or_403(token)
        if fmt not in ("jsonl", "csv"):
            abort(404)
        text = export_text(store.export_rows(db()), fmt)
        mimetype = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
        return Response(text, mimetype=mimetype,
                        headers={"Content-Disposition": f"attachment; filename=judgements.{fmt}"})


def export_text(rows: list[dict], fmt: str) -> str:
    """Judgements as JSON lines or CSV (columns: store.EXPORT_COLUMNS). JSON keeps every value exact;
    CSV cells are made formula-safe, as a CSV is meant to be opened in a spreadsheet."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buf = io.StringIO()
    # CRLF row ends (RFC 4180) also make the writer quote a cell holding a lone CR, which a spreadsheet
    # would otherwise read as a row break: the rest of the cell would start a new row, maybe a formula.
    writer = csv.DictWriter(buf, fieldnames=store.EXPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({k: sheet_safe(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def sheet_safe(value):
    """A text cell a spreadsheet would run as a formula (context ids and system names come from input
    files) gets a leading apostrophe, which shows it as text; numbers and other text stay as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) else value


def make_server(study_dir: Path, host: str = "127.0.0.1", port: int = 8000, threads: int = 8,
                allowed: Iterable[str] = (), trusted_proxy: str | None = None, min_answer_ms: int = MIN_ANSWER_MS):
    """A waitress server (call .run(); .close() stops it). Port 0 picks a free one: see .effective_port.
    allowed: extra host names (see allowed_hosts). trusted_proxy: the reverse proxy's address, whose
    X-Forwarded-Proto / X-Forwarded-Host waitress then applies (and nobody else's)."""
    from waitress.server import create_server

    app = create_app(study_dir, allowed_hosts(host, allowed), min_answer_ms)
    proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_headers": "x-forwarded-proto x-forwarded-host"}
    try:
        return create_server(app, host=host, port=port, threads=threads, max_request_body_size=64 * 1024,
                             ident="hyperfit-study", connection_limit=connection_limit(), **WAITRESS_LIMITS,
                             **(proxy if trusted_proxy else {}))
    except OSError as e:
        raise StudyError(f"cannot listen on {host} port {port}: {e.strerror or e}. "
                         + BIND_FIXES.get(e.errno, "Check --host and --port")) from None


BIND_FIXES = {
    errno.EADDRINUSE: "Another server uses that port: pass a free one with --port N (--port 0 picks one)",
    errno.EACCES: "Ports below 1024 need root: pass --port 8000, and put a reverse proxy in front (docs/study.md)",
    errno.EADDRNOTAVAIL: "That address is not one of this machine's: pass --host 127.0.0.1 or 0.0.0.0",
}


def connection_limit() -> int:
    """MAX_CONNECTIONS, or fewer where the process may open fewer files: each connection is one, and
    the request threads' SQLite connections need some more."""
    if resource is None:
        return MAX_CONNECTIONS
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return MAX_CONNECTIONS
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(100, min(MAX_CONNECTIONS, soft - 100))


def links(study_dir: Path, base_url: str) -> tuple[list[tuple[str, str]], str]:
    """([(annotator, private link)], admin status link) for printing at `serve`."""
    conn = store.connect(study_dir)
    try:
        rows = conn.execute("SELECT id, token FROM annotators WHERE kind = 'human' ORDER BY id").fetchall()
        admin = store.meta(conn, "admin_token")
    finally:
        conn.close()
    base = base_url.rstrip("/")
    return [(r["id"], f"{base}/a/{r['token']}") for r in rows], f"{base}/admin/{admin}/status"


LINK_COLUMNS = ("annotator", "kind", "source", "status", "link")


def link_rows(study_dir: Path, base_url: str) -> list[dict]:
    """Every private link, revoked ones marked, plus the crowd entry link when the study has one. A link is
    base URL + a stored token, so it stays the same across restarts (and ports: pass the new base)."""
    conn = store.connect(study_dir)
    try:
        rows = conn.execute("SELECT id, token, source, revoked_at FROM annotators WHERE kind = 'human' "
                            "ORDER BY created_at, id").fetchall()
        entry, crowd = store.meta(conn, "entry_token"), (store.config(conn).get("crowd") or {})
    finally:
        conn.close()
    base = base_url.rstrip("/")
    out = [{"annotator": r["id"], "kind": "annotator", "source": r["source"],
            "status": "revoked" if r["revoked_at"] else "active", "link": f"{base}/a/{r['token']}"} for r in rows]
    if crowd.get("mode") == "prolific":
        out.append({"annotator": "", "kind": "entry", "source": "prolific", "status": "active",
                    "link": f"{base}/p/{entry}?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID={{{{%STUDY_ID%}}}}"
                            "&SESSION_ID={{%SESSION_ID%}}"})
    elif crowd.get("mode") == "open":
        out.append({"annotator": "", "kind": "entry", "source": "open", "status": "active",
                    "link": f"{base}/o/{entry}"})
    return out


def write_links(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LINK_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.chmod(path, 0o600)  # every link is a password (inside the study directory, itself 0700, from the start)
