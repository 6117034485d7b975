"""The word list the non-word rate checks generated words against: a general list for the language
(wordfreq's most frequent words) joined with the source's own words (names, coinages, archaic forms)."""

from __future__ import annotations

from importlib.metadata import version

import wordfreq

# wordfreq's top 200k words: literary words a book uses once ('drawling', 'tureen') are in only from ~150k.
GENERAL_WORDS = 200_000


def general_words(language: str | None) -> tuple[frozenset[str], str]:
    """(lower-cased words, a description for the report) of `language` (an ISO 639 code wordfreq knows);
    none for language None. Both apostrophes are accepted: wordfreq writes "don't", books "don’t"."""
    if not language:
        return frozenset(), "the source's own words only (data.language unset)"
    found = wordfreq.top_n_list(language, GENERAL_WORDS)
    words = frozenset(found) | {w.replace("'", "’") for w in found if "'" in w}
    return words, f"wordfreq {version('wordfreq')} top {len(found):,} '{language}' words + the source's own words"


def known_languages() -> list[str]:
    return sorted(wordfreq.available_languages(wordlist="best"))
