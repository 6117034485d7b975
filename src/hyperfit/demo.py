"""`hyperfit demo`: the whole pipeline on a real pretrained model, on CPU, in a few minutes.

    hyperfit demo                                  # assets from $HYPERFIT_ASSETS or the Hugging Face hub
    hyperfit demo --assets ../shared/assets        # a local copy
    hyperfit demo train.epochs=10                  # any setting can be overridden

Model: karpathy's stories260K (llama2.c, 260K parameters, MIT), imported to a transformers Llama.
Data: TinyStories (its own training distribution). The paper's lr 1e-6 is for 1B+ models; a model this
small needs ~1e-3 to reach near-zero training loss, and measurements on it (shared/assets/README.md)
favour ~256 samples. What to expect: greedy TTR and distinct-n rise to the human level and loops vanish,
while validation loss rises — and part of the new diversity is non-words, which the report shows.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from hyperfit.config import load_config
from hyperfit.runs import RunDir, RunError, read_jsonl
from hyperfit.stages.report import metrics_rows

MODEL_FILES = ("stories260K/stories260K.bin", "stories260K/tok512.model")
TEXT_FILE = "text/tinystories/tinystories_val.txt"
HUB_MODEL_REPO = "karpathy/tinyllamas"
HUB_TEXT = ("roneneldan/TinyStories", "TinyStories-valid.txt")
DEMO_MARKER = ".hyperfit-demo"  # in a run folder the demo made: the only kind it replaces

# Chosen from measurements on this model (see the README's demo section); each is an ordinary override.
SETTINGS = [
    "name=demo",
    "data.seq_len=128", "data.num_train=256", "data.num_val=64", "data.num_contexts=64",
    "train.lr=1e-3", "train.epochs=30", "train.probe_every=5", "train.probe_contexts=32",
    "generate.max_new_tokens=256", "generate.batch_size=64",
]


def find_assets(assets: str | None, workdir: Path) -> tuple[Path, Path]:
    """(llama2.c folder, text source) from --assets, $HYPERFIT_ASSETS, or the hub; else a clear error."""
    for root in (assets, os.environ.get("HYPERFIT_ASSETS")):
        if root:
            root = Path(root)
            missing = [f for f in (*MODEL_FILES, TEXT_FILE) if not (root / f).is_file()]
            if missing:
                raise RunError(f"assets folder {root} lacks {missing}; it needs {', '.join((*MODEL_FILES, TEXT_FILE))}")
            return root / "stories260K", stories_jsonl(root / TEXT_FILE, workdir)
    try:
        return _from_hub(workdir)
    except Exception as e:  # noqa: BLE001 - offline, no hub access, proxy errors: all mean "not reachable"
        raise RunError(
            "the demo needs karpathy's stories260K model and TinyStories text, and neither a local copy nor the "
            f"Hugging Face hub is available ({type(e).__name__}: {str(e)[:200]}). Give a folder holding "
            f"{', '.join((*MODEL_FILES, TEXT_FILE))} with --assets DIR (or HYPERFIT_ASSETS=DIR); in this repository's "
            "development setup that is ../shared/assets") from e


def stories_jsonl(text: Path, workdir: Path) -> Path:
    """The local TinyStories text as one JSONL row per story.

    Its stories are separated by blank lines but also contain them, so read as a .txt each paragraph
    became a document: 24 of the demo's 64 held-out contexts came from stories with another paragraph in
    the training set. A paragraph that opens with "Once upon a time" starts a story; the others join the
    story before them (a merged pair is one document, which cannot leak).
    """
    stories: list[list[str]] = []
    for paragraph in (p.strip() for p in text.read_text(encoding="utf-8-sig").split("\n\n")):
        if paragraph and (paragraph.startswith("Once upon a time") or not stories):
            stories.append([paragraph])
        elif paragraph:
            stories[-1].append(paragraph)
    out = workdir / "assets" / "tinystories_val_stories.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"text": "\n\n".join(s)}) + "\n" for s in stories), encoding="utf-8")
    return out


def _from_hub(workdir: Path) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download

    model_dir = workdir / "assets" / "stories260K"
    model_dir.mkdir(parents=True, exist_ok=True)
    for f in MODEL_FILES:
        shutil.copy(hf_hub_download(HUB_MODEL_REPO, f), model_dir / Path(f).name)
    text = Path(hf_hub_download(HUB_TEXT[0], HUB_TEXT[1], repo_type="dataset"))
    # The hub file separates stories with <|endoftext|>; stories contain blank lines, so write JSONL.
    stories = [s.strip() for s in text.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()]
    out = workdir / "assets" / "tinystories_valid.jsonl"
    out.write_text("".join(json.dumps({"text": s}) + "\n" for s in stories))
    return model_dir, out


def demo(assets: str | None = None, out_dir: str = "runs", overrides=(), resume: bool = False) -> RunDir:
    """The whole pipeline on stories260K. A rerun replaces the previous demo run of the same name (the marker
    file, written before anything else, says the folder is the demo's, so a killed demo can be rerun);
    resume=True finishes it instead."""
    from hyperfit.llama2c import import_llama2c
    from hyperfit.stages.pipeline import run

    out = Path(out_dir)
    llama2c_dir, text = find_assets(assets, out)
    model_dir = out / "stories260K-hf"
    if not (model_dir / "config.json").is_file():
        print(f"importing {llama2c_dir} → {model_dir}")
        import_llama2c(llama2c_dir, model_dir)
    cfg = load_config(None, [*SETTINGS, f"out_dir={out}", f"model.name={model_dir}", f"data.source={text}", *overrides])
    run_dir = RunDir(cfg.run_dir)
    resume = resume and run_dir.config.is_file()
    claim_run_dir(run_dir, resume)
    run(cfg, resume=resume)
    report_to_terminal(run_dir)
    return run_dir


def claim_run_dir(run_dir: RunDir, resume: bool) -> None:
    """Refuse a folder the demo did not write; otherwise replace it (or keep it, to resume) and mark it."""
    marker = run_dir.path / DEMO_MARKER
    if run_dir.path.exists() and not marker.is_file():
        raise RunError(f"{run_dir.path} exists and was not written by hyperfit demo, which replaces only its own "
                       "runs; choose another name=... or --out DIR, or move that folder")
    if marker.is_file() and not resume:
        print(f"replacing the previous demo run in {run_dir.path} (hyperfit demo --resume finishes it instead)")
        shutil.rmtree(run_dir.path)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by hyperfit demo; the next demo with this name and --out replaces this folder\n")


def report_to_terminal(run_dir: RunDir) -> None:

    header, rows = metrics_rows([run_dir])
    keep = [header.index(k) for k in ("weights / decoder", "ttr", "distinct_4", "rep_4", "nonword_rate", "val loss",
                                      "val entropy")]
    print("\n" + " | ".join(f"{header[i]:>17s}" for i in keep))
    for row in rows:
        print(" | ".join(f"{row[i]:>17.3f}" if isinstance(row[i], float) else f"{str(row[i] or '–'):>17s}"
                         for i in keep))
    ctx = read_jsonl(run_dir.data_file("contexts"))[0]
    before = read_jsonl(run_dir.generation_file("base-greedy"))[0]["continuation"]
    after = read_jsonl(run_dir.generation_file("greedy"))[0]["continuation"]
    print(f"\ncontext: {ctx['context']!r}\n\nbefore (greedy): {before[:500]!r}\n\nafter  (greedy): {after[:500]!r}")
    print(f"\nreport: {run_dir.report}  (plots in {run_dir.plots})")
