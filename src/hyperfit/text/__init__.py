"""Text as users have it (books, wikis, web dumps) made into clean documents: encoding repair, Project
Gutenberg boilerplate, WikiText's tokenised form and `<unk>` markers, hard-wrapped lines, and the word list
the non-word rate uses.

    from hyperfit.text import clean, CleanStats
    stats = CleanStats(); text = clean(raw, cfg.data, stats)
"""

from hyperfit.text.clean import CleanStats, clean
from hyperfit.text.gutenberg import strip_gutenberg
from hyperfit.text.reflow import reflow, wrap_width
from hyperfit.text.repair import repair
from hyperfit.text.wikitext import detokenize, handle_unknown, looks_like_wikitext
from hyperfit.text.words import general_words, known_languages

__all__ = ["CleanStats", "clean", "detokenize", "general_words", "handle_unknown", "known_languages",
           "looks_like_wikitext", "reflow", "repair", "strip_gutenberg", "wrap_width"]
