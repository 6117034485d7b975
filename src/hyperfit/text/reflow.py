"""Hard-wrapped text (a newline every ~70 characters, as in Project Gutenberg's .txt files) back to
paragraphs: a model trained on wrapped samples learns to write the wraps."""

from __future__ import annotations

import re

MAX_WRAP = 100  # wider lines are not a typesetter's wrap
SLACK = 20  # a wrapped line is at most a long word shorter than the width
_PARAGRAPHS = re.compile(r"(\n[^\S\n]*\n)")


def wrap_width(text: str) -> int | None:
    """The column text is hard-wrapped at, or None when it is not: most lines that continue a paragraph end
    within SLACK characters of one width (the 95th percentile of line lengths) of at most MAX_WRAP.

    >>> wrap_width(("word " * 40 + "\\n\\n") * 3)  # one long line per paragraph
    >>> import textwrap; wrap_width(textwrap.fill("The quick brown fox jumps over the lazy dog. " * 40, 70))
    67
    """
    lines = [line.rstrip() for para in _PARAGRAPHS.split(text)[::2] for line in para.split("\n")[:-1]]
    lines = [line for line in lines if line.strip()]
    if len(lines) < 3:
        return None
    lengths = sorted(len(line) for line in text.split("\n") if line.strip())
    width = lengths[int(0.95 * (len(lengths) - 1))]
    if width > MAX_WRAP:
        return None
    near = sum(len(line) >= width - min(SLACK, width // 3) for line in lines)
    return width if near >= 0.8 * len(lines) else None


def reflow(text: str, width: int) -> tuple[str, int]:
    """(text with the lines of each wrapped paragraph joined, line breaks removed). A paragraph whose lines end
    well short of `width` (verse, a table of contents, an address) keeps its lines.

    >>> reflow("It was a dark and stormy\\nnight.\\n\\nRoses are red,\\nViolets blue", 24)
    ('It was a dark and stormy night.\\n\\nRoses are red,\\nViolets blue', 1)
    """
    parts = _PARAGRAPHS.split(text)
    joined = 0
    for i in range(0, len(parts), 2):
        lines = parts[i].split("\n")
        inner = [line.rstrip() for line in lines[:-1]]
        if inner and all(len(line) >= width - min(SLACK, width // 3) for line in inner if line.strip()):
            parts[i] = " ".join(line.strip() for line in lines if line.strip())
            joined += len(lines) - 1
    return "".join(parts), joined
