"""WikiText's tokenised form ("a @-@ b", "word , word", " = Heading = ") back to ordinary text.

WikiText (Merity et al., 2016) ships text split into tokens with spaces around punctuation and numbers'
separators written " @-@ ", " @,@ ", " @.@ ". The rules follow the detokenizer commonly used to score LMs on
WikiText (Megatron-LM's tasks/zeroshot_gpt/detokenizer.py, Radford et al.'s GPT-2 evaluation).
"""

from __future__ import annotations

import re

UNKNOWN = "<unk>"  # WikiText's marker for words outside its 33k vocabulary
REPLACEMENT = "\ufffd"  # Unicode's mark for an unrepresentable character, used by unknown_marker=replace

_SEPARATORS = (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")
_PUNCT = (" : ", ": "), (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")
_BRACKETS = (re.compile(r"\(\s*([^)]*?)\s*\)"), r"(\1)"), (re.compile(r"\[\s*([^\]]*?)\s*\]"), r"[\1]"), \
            (re.compile(r'"\s*([^"]*?)\s*"'), r'"\1"')
_HEADING = re.compile(r"^ ?(=(?: =)*) ([^\n=]+?) \1 ?$", re.M)


def looks_like_wikitext(text: str) -> bool:
    """True when the text carries WikiText's number separators or its " = Title = " headings.

    >>> looks_like_wikitext(" = Valkyria = \\n The 2 @,@ 000 soldiers , who ...")
    True
    >>> looks_like_wikitext("A plain sentence, with a comma.")
    False
    """
    return any(sep in text for sep, _ in _SEPARATORS) or bool(_HEADING.search(text))


def detokenize(text: str) -> str:
    """WikiText's tokenised text as it would be written.

    >>> detokenize(' = Tower = \\n The 1 @,@ 200 @-@ metre tower ( built 1889 ) is " tall " , they say . ')
    '= Tower =\\nThe 1,200-metre tower (built 1889) is "tall", they say.'
    """
    for sep, joined in _SEPARATORS:
        text = text.replace(sep, joined)
    text = _HEADING.sub(lambda m: f"{m.group(1).replace(' ', '')} {m.group(2)} {m.group(1).replace(' ', '')}", text)
    for spaced, written in _PUNCT:
        text = text.replace(spaced, written)
    for pattern, repl in _BRACKETS:
        text = pattern.sub(repl, text)
    text = text.replace(" 's", "'s").replace(" n't", "n't").replace("s ' ", "s' ")
    text = re.sub(r" ([.,;:!?])$", r"\1", text, flags=re.M)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def handle_unknown(text: str, how: str) -> tuple[str, int]:
    """(text with each `<unk>` kept, dropped or replaced by U+FFFD, markers found).

    Dropping one item of a list leaves its comma: "including <unk> , <unk> , Tikal" keeps one.

    >>> handle_unknown("a <unk> lobster , <unk> larvae", "drop")
    ('a lobster , larvae', 2)
    >>> handle_unknown("states , including <unk> , <unk> , Tikal", "drop")
    ('states , including , Tikal', 2)
    """
    found = text.count(UNKNOWN)
    if not found or how == "keep":
        return text, found
    if how == "drop":
        text = re.sub(r"[^\S\n]*<unk>", "", text).lstrip(" ")
        return re.sub(r"( ,)(?: ,)+", r"\1", text), found
    return text.replace(UNKNOWN, REPLACEMENT), found
