"""The study's start page and wording, from a Markdown file with a YAML header (configs/study-page.md).

The header holds the short strings (title, question, button labels, consent line, a practice item);
the Markdown below it is the instructions: the start page shows it with the practice item and the
consent box, and every item page repeats it under "Instructions". Markdown is rendered by markdown-it-py
with raw HTML off, so a page cannot add scripts or forms. The file's text is stored in the study at
`create`, so a served study never depends on a file that may change later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from markdown_it import MarkdownIt

from hyperfit.study import StudyError

DEFAULT_PAGE = Path(__file__).parent / "templates" / "study-page.md"
ANSWERS = ("a", "b", "equal")


@dataclass(frozen=True)
class Page:
    title: str = "Which continuation is better?"
    question: str = "Which continuation is better?"
    choices: dict = field(default_factory=lambda: {"left": "A better", "right": "B better",
                                                   "equal": "Equally good"})
    consent: str = ""
    """The consent box's label; empty: no consent box (the start page is still shown)."""
    start_button: str = "Start"
    practice: dict | None = None
    """context, a, b, answer (a | b | equal), explanation: a worked item on the start page, never stored."""
    finish: str = "Your judgements are saved. You can close this page."
    body_html: str = ""


def split_front_matter(text: str, source: str) -> tuple[dict, str]:
    """`---\\nyaml\\n---\\nmarkdown` -> (header, markdown); text without a header -> ({}, text)."""
    if not text.startswith("---"):
        return {}, text
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise StudyError(f"{source}: the YAML header opened by '---' is never closed; end it with a line '---'.")
    try:
        header = yaml.safe_load(parts[0][3:]) or {}
    except yaml.YAMLError as e:
        raise StudyError(f"{source}: the YAML header is not valid YAML ({e}).") from None
    if not isinstance(header, dict):
        raise StudyError(f"{source}: the YAML header must be a mapping of keys to values.")
    return header, parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""


def parse_page(text: str, source: str = "study page") -> Page:
    """A Page from the file's text; unknown keys and malformed values are errors that name the fix."""
    header, body = split_front_matter(text, source)
    known = set(Page.__dataclass_fields__) - {"body_html"}
    unknown = sorted(set(header) - known)
    if unknown:
        raise StudyError(f"{source}: unknown key(s) {unknown} in the header; known: {sorted(known)}.")
    choices = {**Page().choices, **(header.get("choices") or {})}
    if set(choices) != {"left", "right", "equal"}:
        raise StudyError(f"{source}: choices has keys {sorted(choices)}; use left, right and equal.")
    practice = header.get("practice")
    if practice is not None:
        missing = [k for k in ("context", "a", "b", "answer") if k not in practice]
        if missing or str(practice.get("answer")).lower() not in ANSWERS:
            raise StudyError(f"{source}: practice needs context, a, b and answer (one of {ANSWERS}); "
                             f"missing {missing}, answer {practice.get('answer')!r}.")
        practice = {**practice, "answer": str(practice["answer"]).lower()}
    html = MarkdownIt("commonmark", {"html": False}).render(body)
    fields = {k: str(v) for k, v in header.items() if k not in ("choices", "practice")}
    return Page(**fields, choices={k: str(v) for k, v in choices.items()}, practice=practice, body_html=html)


def read_page_file(path: Path | None) -> str:
    """The page file's text (the packaged default when path is None), checked by parsing it."""
    path = DEFAULT_PAGE if path is None else Path(path)
    if not path.is_file():
        raise StudyError(f"--page {str(path)!r}: no such file; copy configs/study-page.md and edit it.")
    text = path.read_text(encoding="utf-8")
    parse_page(text, str(path))
    return text
