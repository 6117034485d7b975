"""The precision guard's measurement over longer runs and other weight draws: the numbers behind the
"Which modes keep the paper's updates" table of docs/lowmem.md.

    PYTHONPATH=$PWD/src python benchmarks/lowmem_horizon.py                     # all bf16 modes, minutes on CPU
    PYTHONPATH=$PWD/src python benchmarks/lowmem_horizon.py --modes torchao_8bit_sr --draws 6

`kept_share` (memory_modes): 16,384 weights N(0, 0.02), a steady gradient of random sign, AdamW at lr 1e-6
against exact (float64) AdamW from the same start; the share of its movement the mode's effective weights made.
Horizon table: one draw (seed 100) after each number of updates, each a run from the start. Draw table:
PROBE_STEPS updates on `--draws` weight draws (seeds 100, 101, ...), where a verdict can depend on the weights.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from hyperfit.memory_modes import KEPT_RANGE, MODES, PROBE_STEPS, kept_share


def weights(seed: int, n: int = 16384) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * 0.02).bfloat16()


def horizon(modes: list[str], steps: list[int], lr: float) -> list[str]:
    lines = ["| mode | " + " | ".join(f"{s} updates" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    w = weights(100)
    for name in modes:
        lines.append(f"| {name} | " + " | ".join(f"{kept_share(name, w, lr, s):.2%}" for s in steps) + " |")
        print(lines[-1], flush=True)
    return lines


def draws(modes: list[str], n: int, lr: float) -> list[str]:
    lines = ["| mode | " + " | ".join(f"seed {100 + i}" for i in range(n)) + " | inside the bar |",
             "|---" * (n + 2) + "|"]
    for name in modes:
        kept = [kept_share(name, weights(100 + i), lr, PROBE_STEPS) for i in range(n)]
        inside = sum(KEPT_RANGE[0] <= k <= KEPT_RANGE[1] for k in kept)
        lines.append(f"| {name} | " + " | ".join(f"{k:.2%}" for k in kept) + f" | {inside} of {n} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default=",".join(n for n, m in MODES.items() if m.weights == "bfloat16"))
    ap.add_argument("--steps", default="64,300,1000,5000")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--out", help="also write the tables to this markdown file")
    a = ap.parse_args()
    modes = a.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {unknown}; the modes are {', '.join(MODES)}")
    t0 = time.time()
    lines = ["## Kept share by run length (seed 100)", ""] + horizon(modes, [int(s) for s in a.steps.split(",")], a.lr)
    lines += ["", f"## Kept share at {PROBE_STEPS} updates by weight draw", ""] + draws(modes, a.draws, a.lr)
    head = (f"`{' '.join(['python benchmarks/lowmem_horizon.py'] + sys.argv[1:])}` — "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()} CPU, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}, lr {a.lr:g}, {time.time() - t0:.0f} s.")
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join([head, ""] + lines) + "\n")


if __name__ == "__main__":
    main()
