"""Peak memory of the data stage's tokenization against the size of one long document: the stage (texts cut
before tokenizing) against tokenizing the whole text (the baseline), each size in a fresh process.

    PYTHONPATH=src python benchmarks/data_memory.py                    # 1, 4, 16 MB one-line documents
    PYTHONPATH=src python benchmarks/data_memory.py --sizes-mb 1 32

The tokenizer is stories260K's (../shared/assets), or a word-level one built in-process where that is missing.
Peak is the child process's max RSS (ru_maxrss), so the baseline's and the stage's rows are comparable.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"
TINYSTORIES = ASSETS / "text" / "tinystories" / "tinystories_val.txt"


def tokenizer():
    from hyperfit.llama2c import build_tokenizer

    model = ASSETS / "stories260K" / "tok512.model"
    if model.exists():
        return build_tokenizer(model)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tinymodels import build_tokenizer as word_level
    from tinymodels import make_corpus

    return word_level(make_corpus())


def document(megabytes: float) -> str:
    seed = TINYSTORIES.read_text(encoding="utf-8")[:200_000] if TINYSTORIES.exists() else "the dog ran home . " * 5000
    seed = seed.replace("\n", " ")
    return (seed * (int(megabytes * 2**20) // len(seed) + 1))[: int(megabytes * 2**20)]


def child(mode: str, megabytes: float) -> dict:
    from hyperfit.stages.data import REFERENCE_MAX_TOKENS, tokenize_documents

    tok, doc = tokenizer(), document(megabytes)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if mode == "stage":
        ids = tokenize_documents([doc], tok, seq_len=256)[0]
    else:
        ids = tok([doc], add_special_tokens=True)["input_ids"][0][: 256 + REFERENCE_MAX_TOKENS]
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "mb": megabytes, "seconds": round(seconds, 3), "peak_mib": round(peak / 1024, 1),
            "added_mib": round((peak - before) / 1024, 1), "tokens_kept": len(ids), "first": ids[:8]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 4, 16])
    p.add_argument("--child", nargs=2, metavar=("MODE", "MB"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]))))
        return
    print(f"{'MB':>6} {'mode':>9} {'seconds':>8} {'peak MiB':>9} {'added MiB':>10} {'same tokens':>12}")
    for mb in args.sizes_mb:
        rows = {}
        for mode in ("baseline", "stage"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(mb)], capture_output=True, text=True,
                                 check=True)
            rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        same = rows["stage"]["first"] == rows["baseline"]["first"] and \
            rows["stage"]["tokens_kept"] == rows["baseline"]["tokens_kept"]
        for mode, r in rows.items():
            print(f"{mb:>6g} {mode:>9} {r['seconds']:>8.2f} {r['peak_mib']:>9.1f} {r['added_mib']:>10.1f} "
                  f"{str(same):>12}")


if __name__ == "__main__":
    main()
