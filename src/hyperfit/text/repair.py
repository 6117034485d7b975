"""Mojibake and broken-encoding repair with ftfy (e.g. "â€™" back to "’", "Ã©" back to "é")."""

from __future__ import annotations

import ftfy

# Keep what is text, not damage: curly quotes and full-width characters are real typography, and uncurling
# them would change the words a model learns (and what the human row of the metrics is measured on).
_CONFIG = ftfy.TextFixerConfig(uncurl_quotes=False, fix_character_width=False, explain=False)


def repair(text: str) -> str:
    """`text` with encoding damage undone; unchanged when there is none.

    >>> repair("Alice didnâ€™t know")
    'Alice didn’t know'
    >>> repair("“Curly” quotes stay")
    '“Curly” quotes stay'
    """
    return ftfy.fix_text(text, config=_CONFIG)
