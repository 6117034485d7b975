"""An automatic judge: an OpenAI-compatible chat model rates the same blinded items as the humans.

    hyperfit study judge STUDY_DIR --endpoint http://127.0.0.1:8001/v1 --model NAME [--api-key-env VAR]
    hyperfit study judge STUDY_DIR --model PATH_OR_HUB_ID      # a local model through transformers (judge_local)

Each item is asked twice, once per order of the two continuations; a preference counts only if it
survives the swap, otherwise the verdict is "equal". This removes the judge's own position bias, which
for LLM judges is large. Verdicts are stored as the pseudo-annotator `judge:NAME` and analysed separately
from the humans by `results`; the raw answers go to STUDY_DIR/judge-NAME.jsonl. Re-running resumes.
Only the standard library talks HTTP, so the judge adds no dependency.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from hyperfit.study import StudyError, store

PROMPT = """Below is the beginning of a text and two possible continuations of it.

Beginning:
<<<{context}>>>

Continuation A:
<<<{a}>>>

Continuation B:
<<<{b}>>>

Which continuation is the better continuation of the text: fluent, coherent, consistent with the
beginning and interesting to read? Both are cut to the same length. Answer with exactly one word:
A, B, or EQUAL."""


def chat_url(endpoint: str) -> str:
    """`http://h/v1` -> `http://h/v1/chat/completions`; a full chat-completions URL is kept as is."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def ask(url: str, model: str, prompt: str, api_key: str | None, timeout: float = 120) -> str:
    """One chat completion at temperature 0; returns the message text."""
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": 5,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.load(response)
        return str(reply["choices"][0]["message"]["content"])
    except urllib.error.HTTPError as e:
        detail = e.read(300).decode(errors="replace")
        raise StudyError(f"judge endpoint {url} answered HTTP {e.code}: {detail!r}; check --endpoint, "
                         "--model and the API key.") from None
    except (urllib.error.URLError, TimeoutError) as e:
        raise StudyError(f"cannot reach judge endpoint {url} ({e}); is the server running?") from None
    except (KeyError, IndexError, TypeError, json.JSONDecodeError):
        raise StudyError(f"judge endpoint {url} did not answer in the chat-completions format "
                         "({'choices': [{'message': {'content': ...}}]}).") from None


def parse_answer(text: str) -> str | None:
    """First A / B / EQUAL word of the reply: `"B."` -> "B", `"Equal"` -> "EQUAL", `"maybe"` -> None."""
    match = re.search(r"\b(EQUAL|A|B)\b", text.upper())
    return match.group(1) if match else None


def verdict(a_first: str | None, b_first: str | None) -> str:
    """Winner from the two orders. a_first: the answer with side a shown as "A"; b_first: with b as "A".

    `verdict("A", "B")` -> "a" (a preferred both times); `verdict("A", "A")` -> "equal" (position won).
    """
    if a_first == "A" and b_first == "B":
        return "a"
    if a_first == "B" and b_first == "A":
        return "b"
    return "equal"


def run_judge(study_dir: Path, endpoint: str, model: str, api_key: str | None = None,
              limit: int | None = None, log=print) -> int:
    """Judge every item (pairs and attention checks) not judged yet by `judge:MODEL` through an
    OpenAI-compatible endpoint; returns how many."""
    url = chat_url(endpoint)
    return judge_items(study_dir, model, lambda prompt: ask(url, model, prompt, api_key), limit, log)


def judge_items(study_dir: Path, model: str, answer, limit: int | None = None, log=print) -> int:
    """Ask `answer(prompt) -> reply text` about every item not judged yet by `judge:MODEL`, in both orders,
    and store the verdicts as that pseudo-annotator; returns how many items were judged. The prompt holds
    exactly the blinded texts annotators see (context, the two cut continuations), nothing else."""
    study_dir, annotator = Path(study_dir), f"judge:{model}"
    conn = store.connect(study_dir)
    log_path = study_dir / f"judge-{re.sub(r'[^A-Za-z0-9_.-]+', '_', model)}.jsonl"
    try:
        store.add_pseudo_annotator(conn, annotator)
        # The judge's "queue" is every item with side a as the first shown; it sees both orders anyway.
        conn.execute("INSERT OR IGNORE INTO assignments (annotator, pos, item, a_on_left) "
                     "SELECT ?, id - 1, id, 1 FROM items", (annotator,))
        todo = conn.execute(
            "SELECT s.pos, i.id, i.context, i.text_a, i.text_b FROM assignments s JOIN items i ON i.id = s.item "
            "WHERE s.annotator = ? AND NOT EXISTS (SELECT 1 FROM judgements j "
            "WHERE j.annotator = s.annotator AND j.item = s.item) ORDER BY s.pos", (annotator,)).fetchall()
        todo = todo[:limit] if limit is not None else todo
        for n, row in enumerate(todo, 1):
            a_first = answer(PROMPT.format(context=row["context"], a=row["text_a"], b=row["text_b"]))
            b_first = answer(PROMPT.format(context=row["context"], a=row["text_b"], b=row["text_a"]))
            winner = verdict(parse_answer(a_first), parse_answer(b_first))
            store.record(conn, annotator, row["pos"], {"a": "left", "b": "right"}.get(winner, "equal"), None)
            with log_path.open("a", encoding="utf-8") as f:  # append-only audit log of raw answers
                f.write(json.dumps({"item": row["id"], "a_first": a_first, "b_first": b_first,
                                    "winner": winner}) + "\n")
            if n % 50 == 0:
                log(f"judged {n} / {len(todo)}")
        return len(todo)
    finally:
        conn.close()


def api_key_from_env(name: str | None) -> str | None:
    """The API key from the environment variable the user named (never from a file, never logged)."""
    if not name:
        return None
    if name not in os.environ:
        raise StudyError(f"--api-key-env {name}: that environment variable is not set; export it first.")
    return os.environ[name]
