"""Project Gutenberg boilerplate: the header before "*** START OF ...", the footer and licence after
"*** END OF ..." (Gutenberg's own markers, in every ebook since ~2006), kept out of the samples."""

from __future__ import annotations

import re

# "*** START OF THIS PROJECT GUTENBERG EBOOK ALICE ... ***", "*** START OF THE PROJECT GUTENBERG EBOOK ...",
# older "***START OF THE PROJECT GUTENBERG ETEXT ..."; the line is removed with everything before it.
_START = re.compile(r"^\*{3}\s*START OF (?:THIS|THE) PROJECT GUTENBERG E(?:BOOK|TEXT)[^\n]*$", re.I | re.M)
_END = re.compile(r"^(?:\*{3}\s*END OF (?:THIS|THE) PROJECT GUTENBERG E(?:BOOK|TEXT)"
                  r"|End of (?:the |this )?Project Gutenberg\b)[^\n]*$", re.I | re.M)
# Licence sections appear on their own too (a book split into rows: the last row holds only the footer).
_LICENCE = re.compile(r"^\*{3}\s*START: FULL LICENSE\s*\*{3}", re.I | re.M)
# The producers' credit right under the START marker ("Produced by Arthur DiBianca and David Widger").
_CREDIT = re.compile(r"\A\s*(?:Produced by|E-?text prepared by|Transcribed from)[^\n]*(?:\n[^\n]+)*", re.I)


def strip_gutenberg(text: str) -> tuple[str, int]:
    """(text without Project Gutenberg header, footer and licence, characters removed); text without the
    markers comes back unchanged with 0.

    >>> strip_gutenberg("The Project Gutenberg eBook of X\\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\\n"
    ...                 "Produced by A. B.\\n\\nOnce upon a time.\\n"
    ...                 "*** END OF THE PROJECT GUTENBERG EBOOK X ***\\nLicence")
    ('Once upon a time.', 152)
    """
    out = text
    start = _START.search(out)
    if start:
        out = out[start.end():]
        out = _CREDIT.sub("", out, count=1)
    end = _END.search(out) or _LICENCE.search(out)
    if end:
        out = out[: end.start()]
    out = out.strip() if out is not text else out
    return out, len(text) - len(out)
