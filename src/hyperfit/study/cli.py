"""`hyperfit study ...`: create, serve, watch and analyse a blind pairwise human evaluation.

    hyperfit study create STUDY_DIR --from runs/NAME/generations/greedy.jsonl --vs original \
        --annotators 6 --raters-per-item 3 --attention-checks 5% --max-words 100 --seed 0
    hyperfit study serve STUDY_DIR --host 127.0.0.1 --port 8000 [--allowed-hosts study.lan,192.168.1.20]
    hyperfit study status STUDY_DIR
    hyperfit study results STUDY_DIR
    hyperfit study export STUDY_DIR --format csv --out judgements.csv
    hyperfit study judge STUDY_DIR --endpoint http://127.0.0.1:8001/v1 --model NAME

(`python -m hyperfit.study ...` is the same.) Thin: parse, call one function, print where things went.
Imports happen inside each command so `status` does not load Flask and `create` does not load scipy.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

# Atomic writes come from the run-directory module (stdlib + yaml only: still no torch here).
from hyperfit.runs import atomic_path
from hyperfit.study import StudyError, assign, judge, page, results, sources, store

_ANNOTATOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_annotators(text: str) -> list[str]:
    """`"3"` -> ann-1..ann-3; `"alice,bob"` -> those ids (letters, digits, `_.-`, unique)."""
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise StudyError(f"--annotators {text}: need at least one annotator; pass e.g. --annotators 6.")
        return [f"ann-{i:0{len(str(n))}d}" for i in range(1, n + 1)]
    ids = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in ids if not _ANNOTATOR_ID.fullmatch(a)]
    dupes = sorted({a for a in ids if ids.count(a) > 1})
    if bad or dupes or not ids:
        raise StudyError(f"--annotators {text!r}: invalid ids {bad}, repeated ids {dupes}; pass a count "
                         "(--annotators 6) or comma-separated ids of letters, digits, _ . - "
                         "(--annotators alice,bob,carol).")
    return ids


def check_create_args(args) -> None:
    """Option errors that need no file read: reported before anything large is loaded."""
    if args.annotators is None and args.crowd == "links":
        raise StudyError("--annotators is needed for private links (e.g. --annotators 6); with --crowd prolific "
                         "or --crowd open, queues are made as people arrive and it may be left out.")
    if args.crowd == "prolific" and not (args.completion_code or args.completion_url):
        raise StudyError("--crowd prolific needs --completion-code CODE (from the study's Prolific page) or "
                         "--completion-url URL, shown when a participant finishes.")
    if args.contexts is not None and args.contexts < 1:
        raise StudyError(f"--contexts {args.contexts}: must be at least 1, or left out to use all contexts.")
    if args.max_words is not None and args.max_words < 1:
        raise StudyError(f"--max-words {args.max_words}: must be at least 1, e.g. --max-words 100.")


def choose_k(requested: int | None, annotators: list[str], per_context: int) -> tuple[int, int]:
    """(raters per item, the most the design allows). Default: 3, as in the paper, where the annotators
    allow it (each sees a context only once); crowd arrivals are unlimited, so 3."""
    most = assign.max_raters(len(annotators), per_context) if annotators else 3
    k = min(3, most) if requested is None else requested
    if k < 1:
        raise StudyError(f"{len(annotators)} annotator(s) for {per_context} items per context: each "
                         f"annotator sees a context once, so pass --annotators {per_context} or more.")
    return k, most


def cmd_create(args) -> int:
    study_dir = Path(args.study_dir)
    store.check_target(study_dir)  # before reading anything large: fail fast, write nothing
    check_create_args(args)
    annotators = parse_annotators(args.annotators) if args.annotators else []
    rate = assign.parse_rate(args.attention_checks)
    page_text = page.read_page_file(args.page)
    systems, opponent = sources.load_systems([Path(p) for p in args.from_], args.vs)
    ids = sources.shared_context_ids(systems + ([opponent] if opponent else []), args.common_only)
    if args.contexts is not None and args.contexts < len(ids):
        ids = sorted(random.Random(args.seed).sample(ids, args.contexts), key=ids.index)
    pairs = assign.build_pairs(systems, opponent, ids, args.pairs, args.max_words)
    per_context = max(len(g) for g in assign.context_groups(pairs).values())
    k, most = choose_k(args.raters_per_item, annotators, per_context)
    # Crowd arrivals get their queues as they come (store.extend_queue); private links get theirs now.
    plan = (assign.plan_study(pairs, annotators, k, rate, args.seed) if annotators
            else assign.Plan(pairs, {}))
    everyone = systems + ([opponent] if opponent else [])
    n_pairs = sum(item.kind == assign.PAIR for item in plan.items)  # without contexts held back for checks
    config = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "hyperfit study " + " ".join(args.argv),
        "systems": [{"name": s.name, "source": s.source, **s.info} for s in everyone],
        "run_dirs": sorted({str(s.run_dir.resolve()) for s in everyone if s.run_dir}),
        "design": args.pairs if opponent else "all",
        "contexts": len(ids), "n_pair_items": n_pairs, "n_check_items": len(plan.items) - n_pairs,
        "raters_per_item": k, "attention_checks": rate, "max_words": args.max_words,
        "seed": args.seed, "annotators": annotators,
        "queue_lengths": {a: len(q) for a, q in plan.queues.items()},
        "items_per_context": per_context, "held_back_for_checks": plan.held_back,
        "crowd": {"mode": args.crowd, "completion_code": args.completion_code, "completion_url": args.completion_url,
                  "queue_length": args.queue_length or min(40, len(ids))},
    }
    store.create_study(study_dir, plan, annotators, config, page_text)
    report_created(args, config, plan, ids, pairs, most)
    return 0


def report_created(args, config: dict, plan, ids: list[str], pairs: list, most: int) -> None:
    study_dir, n_pairs, annotators = args.study_dir, config["n_pair_items"], config["annotators"]
    k, per_context = config["raters_per_item"], config["items_per_context"]
    lengths = sorted(set(config["queue_lengths"].values())) or [config["crowd"]["queue_length"]]
    print(f"created {study_dir}: {n_pairs} items from {len(ids) - len(plan.held_back)} contexts "
          f"({', '.join(s['name'] for s in config['systems'])}), {config['n_check_items']} attention checks, "
          f"{len(annotators)} annotators with {'-'.join(map(str, lengths))} items each")
    dropped = [cid for cid in ids if cid not in {p.context_id for p in pairs}]
    if dropped:  # build_pairs skips a pair with an empty side: nothing to judge, but say which
        print(f"note: {len(dropped)} context(s) had an empty continuation on a side and are not in the study "
              f"(e.g. {', '.join(dropped[:5])})")
    if args.raters_per_item is None:
        print(f"raters per item: {k} (each annotator sees each context once; with {per_context} item(s) per "
              f"context, {len(annotators) or 'arriving'} annotators allow at most {most})")
    if plan.held_back:
        print(f"note: {len(plan.held_back)} context(s) are not judged but kept for attention checks, since "
              "annotators judge nearly every context and a check must show a context they do not judge")
    print(f"next: hyperfit study serve {study_dir}")


def served_names(args) -> list[str]:
    """--allowed-hosts, plus the host of --base-url: the links printed are the names annotators use."""
    names = [h for h in (args.allowed_hosts or "").split(",") if h.strip()]
    if args.base_url is not None:
        url = urlsplit(args.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise StudyError(f"--base-url {args.base_url!r}: expected the public address with its scheme, "
                             "e.g. --base-url https://study.example.org")
        names.append(url.netloc)
    return names


def cmd_serve(args) -> int:
    from hyperfit.study import server

    srv = server.make_server(Path(args.study_dir), args.host, args.port, args.threads,
                             allowed=served_names(args), trusted_proxy=args.trusted_proxy)
    base = args.base_url or f"http://{args.host}:{srv.effective_port}"
    people, admin = server.links(Path(args.study_dir), base)
    rows = server.link_rows(Path(args.study_dir), base)
    server.write_links(Path(args.study_dir) / "links.csv", rows)
    print(f"Private links (send each annotator only their own; also in {Path(args.study_dir) / 'links.csv'}):")
    for annotator, link in people:
        print(f"  {annotator}\t{link}")
    for row in rows:
        if row["kind"] == "entry":
            print(f"Crowd entry link ({row['source']}): {row['link']}")
    print(f"Admin status: {admin}  (exports: replace 'status' by export.jsonl or export.csv)")
    if args.base_url is None and args.host in ("0.0.0.0", "::"):
        print("note: listening on all interfaces; pass --base-url with the address annotators reach.")
    print(f"Listening on {args.host} port {srv.effective_port}. Ctrl+C stops the server; judgements are "
          "saved as they arrive.", flush=True)
    try:
        srv.run()
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
    return 0


def cmd_status(args) -> int:

    conn = store.connect(Path(args.study_dir))
    try:
        rows = store.status(conn)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'annotator':<24} {'judged':>12} {'checks failed':>14} {'median s':>9}  last judgement")
    for r in rows:
        median = "-" if r["median_ms"] is None else f"{r['median_ms'] / 1000:.1f}"
        note = "  (revoked)" if r["revoked_at"] else ""
        print(f"{r['annotator']:<24} {r['judged']:>5} / {r['total']:<4} {r['checks_failed']:>14} {median:>9}  "
              f"{r['last_at'] or '-'}{note}")
    judged, total = sum(r["judged"] for r in rows), sum(r["total"] for r in rows if r["kind"] == "human")
    print(f"total: {judged} judgements ({total} assigned to humans)")
    return 0


def cmd_results(args) -> int:

    for path in results.write_results(Path(args.study_dir), seed=args.seed, drop_failed=args.drop_failed_checks,
                                      speeder_seconds=args.speeder_seconds):
        print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    from hyperfit.study import server

    conn = store.connect(Path(args.study_dir))
    try:
        text = server.export_text(store.export_rows(conn), args.format)
    finally:
        conn.close()
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_path(Path(args.out)) as tmp:  # bytes: the CSV's CRLF row ends stay CRLF on Windows too
            tmp.write_bytes(text.encode("utf-8"))
        print(f"wrote {args.out}")
    return 0


def cmd_judge(args) -> int:
    if args.endpoint is None:  # a local model through transformers (imports torch: only here)
        from hyperfit.study import judge_local

        n = judge_local.run_local_judge(Path(args.study_dir), args.model, args.limit)
    else:
        key = judge.api_key_from_env(args.api_key_env)
        n = judge.run_judge(Path(args.study_dir), args.endpoint, args.model, key, args.limit)
    print(f"judge:{args.model} judged {n} items; run `hyperfit study results {args.study_dir}`")
    return 0


def cmd_links(args) -> int:
    from hyperfit.study import server

    out = Path(args.out) if args.out else Path(args.study_dir) / "links.csv"
    rows = server.link_rows(Path(args.study_dir), args.base_url)
    server.write_links(out, rows)
    print(f"wrote {out}: {sum(r['kind'] == 'annotator' for r in rows)} private links"
          + ("" if len(rows) == sum(r['kind'] == 'annotator' for r in rows) else " and the crowd entry link"))
    return 0


def _write(study_dir: Path, fn):
    """Run fn(conn) in one write transaction."""
    conn = store.connect(study_dir)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result
    finally:
        conn.close()


def cmd_revoke(args) -> int:
    ids = [a.strip() for a in args.annotators.split(",") if a.strip()]
    _write(Path(args.study_dir), lambda conn: [store.revoke(conn, a) for a in ids])
    print(f"revoked {', '.join(ids)}: their links now get 403; their judgements so far are kept. "
          f"`hyperfit study reassign {args.study_dir}` gives their unfinished items to others.")
    return 0


def cmd_add_annotators(args) -> int:
    study_dir = Path(args.study_dir)

    def add(conn):
        config = store.config(conn)
        existing = {r[0] for r in conn.execute("SELECT id FROM annotators")}
        if args.annotators.isdigit():
            n, start, ids = int(args.annotators), len(existing) + 1, []
            while len(ids) < n:
                if f"ann-{start}" not in existing:
                    ids.append(f"ann-{start}")
                start += 1
        else:
            ids = parse_annotators(args.annotators)
        taken = sorted(set(ids) & existing)
        if taken:
            raise StudyError(f"annotator id(s) {taken} already exist; pick new ids or pass a count.")
        length = args.items or config["crowd"]["queue_length"] if config.get("crowd") else args.items or 40
        added = {}
        for a in ids:
            store.add_annotator(conn, a, "added")
            added[a] = store.extend_queue(conn, a, length, config["raters_per_item"], config["attention_checks"],
                                          f"{config['seed']}:{a}")
        return added

    added = _write(study_dir, add)
    for a, n in added.items():
        print(f"added {a}: {n} items that still lacked raters (plus attention checks)")
    print(f"their links: hyperfit study links {study_dir} --base-url URL")
    return 0


def cmd_reassign(args) -> int:
    study_dir = Path(args.study_dir)

    def reassign(conn):
        config = store.config(conn)
        k = config["raters_per_item"]
        if args.to:
            targets = [a.strip() for a in args.to.split(",") if a.strip()]
        else:
            targets = [r[0] for r in conn.execute(
                "SELECT a.id FROM annotators a WHERE a.kind = 'human' AND a.revoked_at IS NULL ORDER BY "
                "(SELECT COUNT(*) FROM assignments s WHERE s.annotator = a.id AND NOT EXISTS (SELECT 1 FROM "
                "judgements j WHERE j.annotator = s.annotator AND j.item = s.item)), a.id")]
        active = {r[0] for r in conn.execute("SELECT id FROM annotators WHERE kind = 'human' AND revoked_at IS NULL")}
        bad = [a for a in targets if a not in active]
        if bad:
            raise StudyError(f"--to {bad}: not active human annotators of this study (revoked or unknown).")
        # Rounds of one item each, least-loaded first, until nobody can take an item still short of k.
        given = dict.fromkeys(targets, 0)
        while True:
            moved = 0
            for a in targets:
                n = store.extend_queue(conn, a, 1, k, 0.0, f"{config['seed']}:{a}:{given[a]}")
                given[a] += n
                moved += n
            if not moved:
                break
        short = sum(max(0, k - n) for n in store.coverage(conn).values())
        return given, short

    given, short = _write(study_dir, reassign)
    for a, n in given.items():
        if n:
            print(f"{a}: +{n} items")
    print(f"{sum(given.values())} places given out; {short} still missing "
          + ("(nobody left who has not seen those contexts: `hyperfit study add-annotators`)" if short else ""))
    return 0


def add_create_parser(sub) -> None:
    c = sub.add_parser("create", help="make a study directory from generation files")
    c.add_argument("study_dir", metavar="STUDY_DIR")
    c.add_argument("--from", dest="from_", action="append", required=True, metavar="GENERATIONS.jsonl",
                   help="a system's generations (RUN_DIR/generations/TAG.jsonl); repeat for several systems")
    c.add_argument("--vs", default="original", metavar="original|OTHER.jsonl|none",
                   help="what each --from system is compared with: the run's human continuations "
                        "(original, the paper's study), another generations file, or none (--from files "
                        "against each other)")
    c.add_argument("--pairs", choices=("vs", "all"), default="vs",
                   help="vs: each --from against --vs; all: every pair of systems (for Bradley-Terry)")
    c.add_argument("--annotators", default=None, metavar="N|ID,ID,...",
                   help="how many annotators (ids ann-1..ann-N), or their ids; each gets a private link "
                        "(optional with --crowd prolific|open)")
    c.add_argument("--crowd", choices=("links", "prolific", "open"), default="links",
                   help="links: private links only (default); prolific: /p/ENTRY?PROLIFIC_PID=..., a "
                        "queue per participant and a completion code at the end; open: /o/ENTRY, a fresh "
                        "queue for each arrival. `hyperfit study links` prints the entry link")
    c.add_argument("--completion-code", default=None, help="Prolific completion code shown at the end")
    c.add_argument("--completion-url", default=None,
                   help="where the end page sends a crowd worker (default for Prolific: "
                        "https://app.prolific.com/submissions/complete?cc=CODE)")
    c.add_argument("--queue-length", type=int, default=None, metavar="N",
                   help="items per crowd arrival or added annotator (default: min(40, contexts))")
    c.add_argument("--raters-per-item", type=int, default=None, metavar="K",
                   help="distinct annotators who judge each item (default 3, or the most the annotators "
                        "allow: each sees a context once, so K x items per context <= annotators)")
    c.add_argument("--attention-checks", default="5%", metavar="RATE",
                   help="share of each queue that is attention checks (default 5%%)")
    c.add_argument("--max-words", type=int, default=None,
                   help="cut both continuations to the same number of whole words, at most this many "
                        "(default: no cap, the generations' full length, equal on both sides)")
    c.add_argument("--contexts", type=int, default=None, metavar="N",
                   help="use N contexts sampled with --seed (default: all)")
    c.add_argument("--common-only", action="store_true",
                   help="use the context ids shared by all files instead of failing on a mismatch")
    c.add_argument("--seed", type=int, default=0, help="assignment, order and context sample (default 0)")
    c.add_argument("--page", default=None, metavar="PAGE.md",
                   help="the start page and wording: instructions, consent, a practice item, the question "
                        "(Markdown with a YAML header; default: a copy of configs/study-page.md)")
    c.set_defaults(fn=cmd_create)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hyperfit study", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    add_create_parser(sub)
    add_serve_parser(sub)
    add_analysis_parsers(sub)
    add_manage_parsers(sub)
    return p


def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="run the annotation web app and print the private links")
    s.add_argument("study_dir", metavar="STUDY_DIR")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--threads", type=int, default=8)
    s.add_argument("--base-url", default=None,
                   help="public URL to print in links, e.g. behind a reverse proxy (https://study.example.org); "
                        "its host is allowed in the Host header")
    s.add_argument("--allowed-hosts", default=None, metavar="NAME[:PORT],...",
                   help="other names requests may use in their Host header (default: the --host address, "
                        "and localhost / 127.0.0.1 when it is loopback); needed with --host 0.0.0.0")
    s.add_argument("--trusted-proxy", default=None, metavar="ADDRESS",
                   help="the reverse proxy's address (e.g. 127.0.0.1): its X-Forwarded-Proto and "
                        "X-Forwarded-Host are applied; nobody else's are")
    s.set_defaults(fn=cmd_serve)


def add_analysis_parsers(sub) -> None:
    st = sub.add_parser("status", help="progress per annotator")
    st.add_argument("study_dir", metavar="STUDY_DIR")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)

    r = sub.add_parser("results", help="write results.md, results.csv (and RUN_DIR/metrics/human_study-STUDY.json)")
    r.add_argument("study_dir", metavar="STUDY_DIR")
    r.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    r.add_argument("--drop-failed-checks", action="store_true",
                   help="exclude every judgement of annotators who failed an attention check (written to "
                        "results-drop-failed-checks.md/.csv and its own metrics file)")
    r.add_argument("--speeder-seconds", type=float, default=4.0, metavar="S",
                   help="flag annotators whose median time on task is under S seconds (default 4)")
    r.set_defaults(fn=cmd_results)

    e = sub.add_parser("export", help="every judgement with system names, as JSONL or CSV")
    e.add_argument("study_dir", metavar="STUDY_DIR")
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    e.add_argument("--out", default=None, help="file to write (default: stdout)")
    e.set_defaults(fn=cmd_export)

    j = sub.add_parser("judge", help="an LLM judges the items (both orders): a local model through "
                       "transformers, or an OpenAI-compatible endpoint")
    j.add_argument("study_dir", metavar="STUDY_DIR")
    j.add_argument("--endpoint", default=None,
                   help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8001/v1 (default: run "
                        "--model locally through transformers)")
    j.add_argument("--model", required=True, metavar="PATH_OR_HUB_ID|NAME")
    j.add_argument("--api-key-env", default=None, metavar="VAR", help="environment variable with the API key")
    j.add_argument("--limit", type=int, default=None, help="judge at most this many items (a trial run)")
    j.set_defaults(fn=cmd_judge)


def add_manage_parsers(sub) -> None:
    li = sub.add_parser("links", help="write a CSV of every private link (and the crowd entry link)")
    li.add_argument("study_dir", metavar="STUDY_DIR")
    li.add_argument("--base-url", default="http://127.0.0.1:8000",
                    help="the address annotators use (default http://127.0.0.1:8000); links carry only a "
                         "token after it, so they stay valid across restarts")
    li.add_argument("--out", default=None, help="CSV to write (default STUDY_DIR/links.csv)")
    li.set_defaults(fn=cmd_links)

    rv = sub.add_parser("revoke", help="withdraw annotators' links (their judgements are kept)")
    rv.add_argument("study_dir", metavar="STUDY_DIR")
    rv.add_argument("annotators", metavar="ID[,ID...]")
    rv.set_defaults(fn=cmd_revoke)

    ad = sub.add_parser("add-annotators", help="new annotators, with queues of the items that still lack raters")
    ad.add_argument("study_dir", metavar="STUDY_DIR")
    ad.add_argument("annotators", metavar="N|ID,ID,...")
    ad.add_argument("--items", type=int, default=None, help="pair items per new annotator (default: the "
                    "study's queue length)")
    ad.set_defaults(fn=cmd_add_annotators)

    ra = sub.add_parser("reassign", help="give unfinished work (revoked links, items short of k raters) to "
                        "active annotators who have not seen those contexts")
    ra.add_argument("study_dir", metavar="STUDY_DIR")
    ra.add_argument("--to", default=None, metavar="ID,ID", help="only these annotators (default: all active)")
    ra.set_defaults(fn=cmd_reassign)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.fn(args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
