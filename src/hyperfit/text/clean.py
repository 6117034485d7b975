"""One source text (a file, or one row of a .jsonl/.csv) through repair, boilerplate removal, markup and
reflow, with counts of what each step changed for the data report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hyperfit.text.gutenberg import strip_gutenberg
from hyperfit.text.reflow import reflow, wrap_width
from hyperfit.text.repair import repair
from hyperfit.text.wikitext import detokenize, handle_unknown, looks_like_wikitext


@dataclass
class CleanStats:
    """What cleaning changed, summed over a source's texts (for data/report.md and the manifest)."""

    texts: int = 0
    repaired: int = 0
    boilerplate_texts: int = 0
    boilerplate_chars: int = 0
    markup: Counter = field(default_factory=Counter)
    unknown_markers: int = 0
    wrapped_texts: int = 0
    wrap_widths: Counter = field(default_factory=Counter)
    wraps_joined: int = 0

    def as_dict(self) -> dict:
        return {"texts": self.texts, "repaired": self.repaired, "boilerplate_texts": self.boilerplate_texts,
                "boilerplate_chars": self.boilerplate_chars, "markup": dict(self.markup),
                "unknown_markers": self.unknown_markers, "wrapped_texts": self.wrapped_texts,
                "wrap_widths": {str(k): v for k, v in sorted(self.wrap_widths.items())},
                "wraps_joined": self.wraps_joined}


def clean(text: str, cfg, stats: CleanStats) -> str:
    """`text` (newlines already \\n) cleaned as the data.* settings say; `stats` counts each change.

    `cfg` is a DataConfig: repair_text, strip_boilerplate (auto|none), markup (auto|none|wikitext),
    unknown_marker (keep|drop|replace), reflow (auto|none|always).
    """
    stats.texts += 1
    if cfg.repair_text:
        fixed = repair(text)
        stats.repaired += fixed != text
        text = fixed
    if cfg.strip_boilerplate == "auto":
        text, removed = strip_gutenberg(text)
        stats.boilerplate_texts += removed > 0
        stats.boilerplate_chars += removed
    text, unknown = handle_unknown(text, cfg.unknown_marker)
    stats.unknown_markers += unknown
    if cfg.markup == "wikitext" or (cfg.markup == "auto" and looks_like_wikitext(text)):
        text = detokenize(text)
        stats.markup["wikitext"] += 1
    width = 10**9 if cfg.reflow == "always" else wrap_width(text) if cfg.reflow == "auto" else None
    if width:
        text, joined = reflow(text, width)
        stats.wrapped_texts += joined > 0
        stats.wraps_joined += joined
        if joined and cfg.reflow == "auto":
            stats.wrap_widths[width] += 1
    return text
