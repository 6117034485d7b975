"""The offline tasks `hyperfit bench` ships: a multiple-choice cloze and a perplexity task over held-out text.

The task definitions are lm-eval YAML files in tasks/ (packaged); their data are built here from a text file
(--text FILE, else the run's own data.source when it is a local file, else TinyStories validation text in
$HYPERFIT_ASSETS/text/tinystories/), leaving out every
document the run used (training, validation and context documents, by text hash), into RUN/bench/data/. The
harness then reads them with its own `json` dataset loader, so the tests run the real harness end to end.
"""

from __future__ import annotations

import os
import random
import re
from importlib import resources
from pathlib import Path

import yaml

from hyperfit.config import DataConfig
from hyperfit.errors import RunError
from hyperfit.runs import RunDir, read_jsonl, write_jsonl
from hyperfit.stages.data import read_documents, text_hash

LOCAL_TASKS = ("hyperfit_cloze", "hyperfit_ppl")
DEFAULT_TEXT = Path("text") / "tinystories" / "tinystories_val.txt"
STORIES = {"hyperfit_cloze": 400, "hyperfit_ppl": 100}  # documents per task before --limit
_LAST_WORD = re.compile(r"^(?P<context>.*\S)\s+(?P<word>[A-Za-z]+)[.!?\"'”’]*$", re.S)


def default_text(text: str | None, source: str = "") -> Path:
    """--text, else the run's own data.source when it is a local file (its documents then match the run's text
    hashes exactly, so none it used can slip in), else TinyStories validation text under $HYPERFIT_ASSETS."""
    if text is None and source and Path(source).is_file():
        text = source
    if text is None and os.environ.get("HYPERFIT_ASSETS"):
        text = str(Path(os.environ["HYPERFIT_ASSETS"]) / DEFAULT_TEXT)
    if text is None or not Path(text).is_file():
        raise RunError(f"the local bench tasks ({', '.join(LOCAL_TASKS)}) are built from a text file of held-out "
                       f"documents, and {text or 'none'} is not one: pass --text FILE (documents separated by blank "
                       f"lines) or set HYPERFIT_ASSETS to the assets folder (it reads {DEFAULT_TEXT})")
    return Path(text)


def held_out_documents(text: Path, run: RunDir, seed: int = 0) -> list[str]:
    """The documents of `text` the run never saw (training, validation, contexts), one line each, shuffled."""
    used = {row.get("text_hash") for split in ("train", "val", "contexts") if run.data_file(split).is_file()
            for row in read_jsonl(run.data_file(split))}
    # Hashed as the data stage hashes them (read_documents' text), then put on one line.
    docs = [" ".join(d.split()) for d in read_documents(DataConfig(source=str(text))) if text_hash(d) not in used]
    docs = [d for d in docs if len(d.split()) >= 20]
    random.Random(seed).shuffle(docs)
    return docs


def cloze_items(docs: list[str], n: int, seed: int = 0) -> list[dict]:
    """Each document without its last word as context; that word and three other documents' last words as
    choices (a LAMBADA-like cloze, multiple-choice so that small models score above chance).

    >>> cloze_items(["a b c dog.", "x y cat!", "p q sun", "m n hat.", "e f"], 1)[0]["context"]
    'a b c'
    """
    pairs = [(m["context"], m["word"]) for m in map(_LAST_WORD.match, docs) if m]
    words = sorted({w for _, w in pairs})
    rng = random.Random(seed)
    items = []
    for context, word in pairs[:n]:
        others = [w for w in words if w.lower() != word.lower()]
        if len(others) < 3:
            continue
        choices = [word, *rng.sample(others, 3)]
        rng.shuffle(choices)
        items.append({"context": context, "choices": choices, "label": choices.index(word)})
    return items


def build_local_data(tasks: list[str], run: RunDir, text: Path) -> dict[str, Path]:
    """RUN/bench/data/<task>.jsonl for each local task asked for."""
    docs = held_out_documents(text, run)
    out = {}
    for task in tasks:
        rows = (cloze_items(docs, STORIES[task]) if task == "hyperfit_cloze"
                else [{"text": d} for d in docs[: STORIES[task]]])
        if not rows:
            raise RunError(f"{text} holds no held-out document the {task} task can use (documents of 20+ words not "
                           "in the run's data); pass another --text")
        out[task] = run.path / "bench" / "data" / f"{task}.jsonl"
        write_jsonl(out[task], rows)
    return out


def task_config(task: str, data: Path, cache: Path) -> dict:
    """The shipped YAML of a local task, pointed at its built data file."""
    spec = yaml.safe_load(resources.files("hyperfit.bench").joinpath("tasks", f"{task}.yaml").read_text())
    spec["dataset_kwargs"] = {"data_files": {"train": str(data)}, "cache_dir": str(cache)}
    return spec
