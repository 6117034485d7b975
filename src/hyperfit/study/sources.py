"""Read the systems to compare: generation files, and a run's human references ("original").

A generations file is `runs/<name>/generations/<tag>.jsonl` (one row per context and sample, written by
`hyperfit generate`); its run directory is the file's grandparent, which is where `--vs original` finds
`data/contexts.jsonl` and where `results` later writes `metrics/human_study-STUDY.json`.

Everything here is pure reading and checking: `create` calls it before it writes anything, so a bad input
leaves no half-made study behind.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from hyperfit.study import StudyError

ORIGINAL = "original"

# Fields of a generation row that describe how it was made; kept server-side as the system's provenance.
_PROVENANCE = ("decoder", "decoder_config", "model", "checkpoint")


@dataclass(frozen=True)
class System:
    """One side of the comparison: a continuation per context id, plus where it came from."""

    name: str
    """Shown only in results and admin exports, never to annotators (e.g. `paper-run/greedy`)."""
    source: str
    """The file it was read from."""
    texts: dict[str, str]
    """context id -> continuation text."""
    contexts: dict[str, str]
    """context id -> context text (to check that two systems continued the same contexts)."""
    info: dict = field(default_factory=dict)
    """Decoder, decoder config, model, checkpoint: server-side provenance for the report."""
    run_dir: Path | None = None
    """The run directory the file belongs to, when it sits in `<run>/generations/`."""


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSON-lines file; a bad line is reported with its number."""
    if not path.is_file():
        raise StudyError(f"file not found: {str(path)!r}. Pass an existing .jsonl file "
                         "(e.g. runs/NAME/generations/greedy.jsonl, written by `hyperfit generate`).")
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise StudyError(f"{path}:{number} is not valid JSON ({e.msg}); fix or regenerate the file.") from e
            if not isinstance(row, dict):
                raise StudyError(f"{path}:{number} is {type(row).__name__}, expected a JSON object per line.")
            rows.append(row)
    if not rows:
        raise StudyError(f"{str(path)!r} has no rows; generate continuations before creating a study.")
    return rows


def run_dir_of(path: Path) -> Path | None:
    """`runs/x/generations/greedy.jsonl` -> `runs/x`; None for a file outside a run directory."""
    path = path.resolve()
    return path.parent.parent if path.parent.name == "generations" else None


def _missing_keys(rows: list[dict], keys: tuple[str, ...], path: Path) -> None:
    for number, row in enumerate(rows, 1):
        missing = [k for k in keys if k not in row]
        if missing:
            raise StudyError(f"{path} row {number} lacks {missing} (has {sorted(row)}); "
                             "is this a `hyperfit generate` output file?")


def load_generations(path: Path) -> System:
    """A generations file as a System; with several samples per context the lowest `sample` is used."""
    rows = read_jsonl(path)
    _missing_keys(rows, ("context_id", "context", "continuation"), path)
    chosen: dict[str, dict] = {}
    for row in rows:
        cid = str(row["context_id"])
        if cid not in chosen or row.get("sample", 0) < chosen[cid].get("sample", 0):
            chosen[cid] = row
    run_dir = run_dir_of(path)
    name = f"{run_dir.name}/{path.stem}" if run_dir else path.stem
    first = rows[0]
    return System(
        name=name,
        source=str(path.resolve()),
        texts={cid: str(r["continuation"]) for cid, r in chosen.items()},
        contexts={cid: str(r["context"]) for cid, r in chosen.items()},
        info={k: first[k] for k in _PROVENANCE if k in first},
        run_dir=run_dir,
    )


def load_original(run_dir: Path) -> System:
    """The human continuations (`reference`) of a run's held-out contexts."""
    path = run_dir / "data" / "contexts.jsonl"
    if not path.is_file():
        raise StudyError(f"--vs original needs the run's contexts, but {str(path)!r} does not exist. "
                         "Pass a --from file inside RUN_DIR/generations/ of a prepared run, "
                         "or compare against another file with --vs OTHER.jsonl.")
    rows = read_jsonl(path)
    _missing_keys(rows, ("id", "context", "reference"), path)
    return System(
        name=f"{run_dir.name}/{ORIGINAL}",
        source=str(path.resolve()),
        texts={str(r["id"]): str(r["reference"]) for r in rows},
        contexts={str(r["id"]): str(r["context"]) for r in rows},
        info={"kind": "human reference"},
        run_dir=run_dir,
    )


def load_systems(froms: list[Path], vs: str | None) -> tuple[list[System], System | None]:
    """The --from systems and the --vs opponent (None for `--vs none`), with unique names."""
    systems = [load_generations(p) for p in froms]
    opponent = None
    if vs == ORIGINAL:
        run_dir = systems[0].run_dir
        if run_dir is None:
            raise StudyError(f"--vs original: {str(froms[0])!r} is not inside RUN_DIR/generations/, so "
                             "there is no run to take the human references from. Pass the file from its run "
                             "directory, or use --vs OTHER.jsonl.")
        opponent = load_original(run_dir)
    elif vs not in (None, "none"):
        opponent = load_generations(Path(vs))
    names = [s.name for s in systems] + ([opponent.name] if opponent else [])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StudyError(f"two inputs get the same system name {duplicates} (names are <run>/<tag>); "
                         "pass each generations file only once, or copy one to a different tag.")
    return systems, opponent


def shared_context_ids(systems: list[System], common_only: bool) -> list[str]:
    """Context ids that every system continued, in the first system's order.

    Systems must have continued the *same* contexts: a context id missing from one side, or a context
    whose text differs between two files (generations from different data splits), is an error, listed
    in full so the user sees every problem at once. `common_only` accepts missing ids (not differing text).
    """
    problems = []
    first = systems[0]
    ids = list(first.texts)
    for other in systems[1:]:
        only_first = sorted(set(first.texts) - set(other.texts))
        only_other = sorted(set(other.texts) - set(first.texts))
        if (only_first or only_other) and not common_only:
            problems.append(
                f"{other.name} ({other.source}) lacks {len(only_first)} context ids of {first.name} "
                f"(e.g. {only_first[:3]}) and has {len(only_other)} it lacks (e.g. {only_other[:3]})")
        for cid in set(first.texts) & set(other.texts):
            if normalise(first.contexts[cid]) != normalise(other.contexts[cid]):
                problems.append(f"context {cid!r} differs between {first.name} and {other.name}: "
                                "they continued different data")
                break
        ids = [cid for cid in ids if cid in other.texts]
    if problems:
        raise StudyError("the systems do not pair up by context_id:\n  - " + "\n  - ".join(problems) +
                         "\nFix: compare generations of the same run's contexts, or pass --common-only "
                         "to use only the context ids present in every file.")
    if not ids:
        raise StudyError("no context id is shared by all inputs, so there is nothing to compare; "
                         "check that the files come from runs with the same contexts.")
    return ids


def normalise(text: str) -> str:
    """Whitespace collapsed to single spaces: `" a\\n\\n b "` -> `"a b"`."""
    return " ".join(text.split())


def truncate_pair(a: str, b: str, max_words: int | None = None) -> tuple[str, str]:
    """Both sides cut to the same number of whole words (characters, in scripts without spaces), whitespace
    normalised, and both ending mid-sentence.

    The shared length is at most min(max_words, whole words in a, whole words in b) (None: no cap, the
    generations' full length), so a side's length cannot give away which system wrote it:
    `truncate_pair("x y z ", "p  q\\nr s ", 10)` -> `("x y z", "p q r")`. A text that stops without a
    space or punctuation after its last word may have been cut inside it by the token limit ("…the v"),
    so that word does not count: `truncate_pair("a b c", "d e f g", 9)` -> `("a b", "d e")`.
    Nor can its ending: the shorter side would otherwise end where its text ends (a human story's last
    full stop) and the other mid-sentence where it was cut. So the cut moves back to the last word where
    neither side ends a sentence: `truncate_pair("A b. C d.", "W x y z q", 10)` -> `("A b. C", "W x y")`.
    """
    wa, wb = whole_units(a), whole_units(b)
    n = min(len(wa), len(wb)) if max_words is None else min(max_words, len(wa), len(wb))
    cut = next((k for k in range(n, 0, -1) if not (_ENDS_SENTENCE.search(wa[k - 1])
                                                    or _ENDS_SENTENCE.search(wb[k - 1]))), n)
    return "".join(wa[:cut]).lstrip(), "".join(wb[:cut]).lstrip()


def whole_units(text: str) -> list[str]:
    """`units(text)` without a last word the token limit may have cut: one that ends the text with no
    space or punctuation after it. `whole_units("the v")` -> `["the"]`, `whole_units("the end.")` keeps
    both; a character of a script without spaces is always whole, a broken one (U+FFFD) never is."""
    text = text.rstrip("\ufffd")
    found = units(text)
    last = found[-1].strip() if found else ""
    if last and not text[-1].isspace() and not _CLOSED.search(last) and not _CJK_UNIT.fullmatch(last):
        found.pop()
    return found


def split_context(context: str, continuations: list[str]) -> tuple[str, list[str]]:
    """A context cut inside a word moves that word's start to every continuation, so no word is split
    across the context box and the continuation ("…the ri" + "ver" -> "…the" + "river").

    A context that ends without a space is cut mid-word when some continuation goes on with a letter
    or digit; then the context's last partial word is moved: `split_context("A b ri", ["ver", " x"])`
    -> `("A b", ["river", "ri x"])`. Otherwise the texts are returned unchanged.
    """
    if not context or context[-1].isspace() or not context[-1].isalnum():
        return context, continuations
    if not any(c[:1].isalnum() for c in continuations):
        return context, continuations
    head, _, fragment = context.rpartition(" ")
    if not head.strip():  # one long word: nothing to move it away from
        return context, continuations
    return head.rstrip(), [fragment + c for c in continuations]


# Scripts written without spaces (Chinese, Japanese kana, Korean syllables, full-width forms): each character is
# a unit of length there, or a whole Japanese story would count as one "word" and never be cut to length.
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_UNIT = re.compile(rf"(\s*)([{_CJK}]|[^\s{_CJK}]+)")
_ENDS_SENTENCE = re.compile(r"[.!?…。！？][\"'”’」』)\]）]*$")
_CLOSED = re.compile(r"[.,;:!?…。！？、\"'”’」』)\]）]$")  # a word that ends in punctuation is whole
_CJK_UNIT = re.compile(rf"[{_CJK}]")


def units(text: str) -> list[str]:
    """The text as units of length, each carrying the single space that preceded it (if any): words, and
    single characters of scripts without spaces. `"".join(units(t)).lstrip()` is `t` with whitespace
    normalised: `units("猫は  ok")` -> `['猫', 'は', ' ok']`."""
    return [(" " if space else "") + unit for space, unit in _UNIT.findall(text)]


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def last_sentence(context: str, min_words: int = 4) -> str:
    """The context's last sentence of at least `min_words` words (else its last 12 words).

    Used to build an attention check's degenerate side: the sentence repeated in a loop.
    """
    sentences = [normalise(s) for s in _SENTENCE_END.split(context) if s.strip()]
    for sentence in reversed(sentences):
        if len(sentence.split()) >= min_words:
            return sentence
    return " ".join(context.split()[-12:])
