"""data/report.md: what the data stage read, cleaned, kept and dropped, from its manifest.

    hyperfit data configs/x.yaml     # writes runs/<name>/data/report.md; report.md carries it as a section
"""

from __future__ import annotations


def render_data_report(m: dict) -> str:
    """The data report in Markdown; older manifests (without the cleaning counts) give the counts they have."""
    c = m.get("cleaning") or {}
    used = m.get("documents_used") or {}
    dropped = m.get("dropped") or {}
    lines = ["# Data", "",
             f"- source: `{m['source']}`",
             f"- documents read: {m['documents']:,}; with ≥ {m['seq_len']} tokens: {m['qualifying']:,}",
             f"- dropped: {dropped.get('shorter_than_seq_len', 0):,} shorter than data.seq_len={m['seq_len']} tokens, "
             f"{dropped.get('duplicates', 0):,} repeated documents (counted once)",
             f"- samples: {m['train']} train from {used.get('train', m['train'])} documents, {m['val']} validation "
             f"from {used.get('val', m['val'])}, {m['contexts']} contexts (one per document); at most "
             f"{m.get('samples_per_document', 1)} per document (data.samples_per_document), sides disjoint by "
             "document"]
    if c:
        widths = ", ".join(f"{w} characters" for w in c.get("wrap_widths", {})) or "–"
        markup = ", ".join(f"{k} ({v} texts)" for k, v in c.get("markup", {}).items()) or "none found"
        lines += [f"- texts cleaned: {c['texts']:,} (a .txt file is one text, split at blank lines afterwards)",
                  f"- encoding repaired (ftfy): {c['repaired']:,} texts",
                  f"- Project Gutenberg boilerplate removed: {c['boilerplate_texts']:,} texts, "
                  f"{c['boilerplate_chars']:,} characters",
                  f"- markup undone: {markup}; `<unk>` markers: {c['unknown_markers']:,} "
                  f"({(m.get('options') or {}).get('unknown_marker', 'drop')})",
                  f"- hard wraps joined: {c['wraps_joined']:,} line breaks in {c['wrapped_texts']:,} texts "
                  f"(wrap width {widths})"]
    specials = m.get("special_strings")
    if specials is not None:
        seen = ", ".join(f"`{k}` ×{v:,}" for k, v in specials.items()) or "none"
        lines.append(f"- special-token strings in the text: {seen} (tokenized as text, never as control ids)")
    if m.get("word_list"):
        lines.append(f"- language: {m.get('language') or '–'}; non-word rate word list: {m['word_list']} "
                     f"({m['vocabulary_words']:,} words)")
    return "\n".join(lines) + "\n"
