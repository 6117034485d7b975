"""Helpers for the study tests: hand-written run directories in the core pipeline's file formats.

Provenance strings carry the marker SECRET so the blinding tests can look for any of them in what the
server sends to annotators.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hyperfit.study import store
from hyperfit.study.cli import main

WORDS = ("river garden lantern pebble quiet morning silver thunder meadow castle window basket candle "
         "forest whisper button puzzle harbor ribbon kettle").split()

# Everything that describes a system and must never reach an annotator's browser.
RUN_NAME, MODEL, DECODER = "runSECRETalpha", "hub/SECRET-llama-260k", "greedySECRET"
DECODER_CONFIG = {"SECRET_max_new_tokens": 128, "SECRET_temperature": 0.0}


def sentence(seed: int, n: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n)) + "."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_run(root: Path, name: str = RUN_NAME, n: int = 12, tag: str = "greedy", tag_seed: int = 1,
             decoder: str = DECODER) -> Path:
    """runs/NAME with data/contexts.jsonl and generations/TAG.jsonl; returns the generations file."""
    run = root / "runs" / name
    contexts = [{"id": f"ctx-{i:05d}", "doc_id": i, "context_ids": [1, 2, 3],
                 "context": f"Once upon a time {sentence(i, 6)} The {WORDS[i % 20]} was very old and tired.",
                 "reference_ids": [4, 5], "reference": f"{sentence(i + 3, 9)} {sentence(i + 5, 8)}"}
                for i in range(n)]
    if not (run / "data" / "contexts.jsonl").exists():
        write_jsonl(run / "data" / "contexts.jsonl", contexts)
    gens = [{"context_id": c["id"], "context": c["context"], "continuation_ids": [9, 9],
             "continuation": f"{sentence(i * tag_seed + 11, 10)}\n\n{sentence(i + 2, 7)}",
             "decoder": decoder, "decoder_config": DECODER_CONFIG, "checkpoint": "final",
             "model": MODEL, "sample": 0} for i, c in enumerate(contexts)]
    return write_jsonl(run / "generations" / f"{tag}.jsonl", gens)


def create(study_dir: Path, gen: Path, *extra: str) -> Path:
    argv = ["create", str(study_dir), "--from", str(gen), *extra]
    assert main(argv) == 0
    return study_dir


def tokens(study_dir: Path) -> dict[str, str]:
    conn = store.connect(study_dir)
    try:
        return {r["id"]: r["token"] for r in conn.execute("SELECT id, token FROM annotators WHERE kind='human'")}
    finally:
        conn.close()


def admin_token(study_dir: Path) -> str:
    conn = store.connect(study_dir)
    try:
        return store.meta(conn, "admin_token")
    finally:
        conn.close()


def form_fields(html: str) -> dict[str, str]:
    """The hidden inputs of the judgement form (csrf, pos)."""
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


def count_judgements(study_dir: Path) -> int:
    conn = store.connect(study_dir)
    try:
        return conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    finally:
        conn.close()


def consent_all(study_dir: Path) -> Path:
    """Every annotator past the start page (tests that are not about it go straight to the items)."""
    conn = store.connect(study_dir)
    try:
        conn.execute("UPDATE annotators SET consented_at = '2026-01-01T00:00:00+00:00'")
    finally:
        conn.close()
    return study_dir
