"""Fig. 1: a continuation with the n-grams it repeats coloured, before and after hyperfitting.

A token is coloured when it belongs to an n-gram (of token ids) that already occurred earlier in the same
continuation; the colour deepens with how many times that n-gram has occurred. The original model's greedy
text loops, so most of it is coloured; the hyperfitted model's is not.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from hyperfit.runs import RunDir, load_run_config, read_jsonl, write_text
from hyperfit.stages.report import pyplot, save_figure

SHADES = ("#ffe08a", "#ffb35c", "#ff7a5c", "#e0457b")  # 2nd, 3rd, 4th, 5th+ occurrence


def repeats(ids: Sequence[int], n: int) -> list[int]:
    """Per token: how many times the most repeated n-gram covering it had occurred up to and including it
    (0: in no repeated n-gram).

    >>> repeats([1, 2, 3, 1, 2, 3, 1, 2], 2)
    [0, 0, 0, 2, 2, 2, 3, 3]
    """
    seen: dict[tuple, int] = {}
    level = [0] * len(ids)
    for i in range(len(ids) - n + 1):
        gram = tuple(ids[i : i + n])
        seen[gram] = seen.get(gram, 0) + 1
        if seen[gram] > 1:
            for j in range(i, i + n):
                level[j] = max(level[j], seen[gram])
    return level


def pieces(tokenizer, ids: Sequence[int], context_ids: Sequence[int]) -> list[str]:
    """Each continuation token's text as it reads after the context (decoded by prefix difference)."""
    out, before = [], tokenizer.decode(list(context_ids), skip_special_tokens=True)
    for i in range(len(ids)):
        now = tokenizer.decode(list(context_ids) + list(ids[: i + 1]), skip_special_tokens=True)
        out.append(now[len(before):] if now.startswith(before) else tokenizer.decode([ids[i]]))
        before = now
    return out


def colour(level: int) -> str | None:
    return SHADES[min(level, len(SHADES) + 1) - 2] if level >= 2 else None


def html_block(title: str, context: str, texts: list[str], levels: list[int]) -> str:
    spans = "".join(f'<span style="background:{colour(v)}">{html.escape(t)}</span>' if colour(v) else html.escape(t)
                    for t, v in zip(texts, levels))
    share = sum(v >= 2 for v in levels) / max(len(levels), 1)
    return (f"<h2>{html.escape(title)} <small>({share:.0%} of tokens in a repeated n-gram)</small></h2>"
            f'<p style="white-space:pre-wrap;font-family:monospace"><b>{html.escape(context)}</b>{spans}</p>')


def draw_png(blocks: list[tuple[str, str, list[str], list[int]]], out: Path, width: int = 90) -> Path:
    """The same text in monospace, wrapped at `width` characters, repeated tokens on their colour."""
    lines_per = []
    for _, context, texts, levels in blocks:
        cells, col, row = [], 0, 0
        for text, level in [(context, 0), *zip(texts, levels)]:
            for ch in text:
                if ch == "\n" or col >= width:
                    row, col = row + 1, 0
                    if ch == "\n":
                        continue
                cells.append((row, col, ch, "bold" if text is context and level == 0 else None, colour(level)))
                col += 1
        lines_per.append((cells, row + 1))
    plt = pyplot()
    total = sum(n + 3 for _, n in lines_per)
    fig = plt.figure(figsize=(width * 0.1, total * 0.2))  # ~0.1 in per 8-point monospace character
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(total, 0)
    ax.axis("off")
    top = 0
    for (title, *_), (cells, n) in zip(blocks, lines_per):
        ax.text(0, top + 1, title, fontsize=10, weight="bold", va="center")
        for row, col, ch, weight, bg in cells:
            if bg:
                ax.add_patch(plt.Rectangle((col, top + 2 + row - 0.5), 1, 1, color=bg, linewidth=0))
            ax.text(col + 0.5, top + 2 + row, ch, family="monospace", fontsize=8, ha="center", va="center",
                    weight=weight or "normal")
        top += n + 3
    return save_figure(fig, out)


def draw(runs: list[RunDir], out: Path, index: int = 0, n: int = 3, tags: Sequence[str] = ("base-greedy", "greedy"),
         **_) -> list[Path]:
    from hyperfit.models import load_tokenizer  # the torch boundary

    blocks = []
    for run in runs:
        cfg = load_run_config(run)
        tokenizer = load_tokenizer(cfg.model)
        for tag in tags:
            path = run.generation_file(tag)
            if not path.is_file():
                continue
            rows = read_jsonl(path)
            row = rows[min(index, len(rows) - 1)]
            context_ids = next(c["context_ids"] for c in run.read_samples("contexts") if c["id"] == row["context_id"])
            ids = row["continuation_ids"]
            label = {"base-greedy": "original model, greedy", "greedy": "hyperfitted model, greedy"}.get(tag, tag)
            blocks.append((f"{run.path.name}: {label}", row["context"], pieces(tokenizer, ids, context_ids),
                           repeats(ids, n)))
    if not blocks:
        raise FileNotFoundError(f"no generations {', '.join(tags)} in {', '.join(str(r.path) for r in runs)}")
    page = "".join(html_block(*b) for b in blocks)
    legend = "".join(f'<span style="background:{c}"> {i + 2}× </span> ' for i, c in enumerate(SHADES))
    write_text(out / "repetition.html", f"<!doctype html><meta charset=utf-8><title>Repeated {n}-grams</title>"
               f"<p>Tokens in a {n}-gram (of tokens) seen before in the same continuation: {legend}</p>{page}\n")
    return [out / "repetition.html", draw_png(blocks, out / "repetition.png")]
