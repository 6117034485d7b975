"""Correctness on the GPU before timing: fast greedy (graph and compile modes) gives generate()'s tokens,
with and without the citation blocker, and a blocked graph-mode call never waits for the host.

    python benchmarks/gpu_checks.py          # tiny fp32 model; prints one line per check, exit 1 on a mismatch
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_model  # noqa: E402
from generate import blocker_for, hf_generate  # noqa: E402


def main() -> int:
    from transformers import LogitsProcessorList

    from hyperfit.fast_greedy import GreedyDecoder

    model = build_model("tiny", "cuda", torch.float32).eval()
    ids = torch.randint(3, 512, (4, 8), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    ref = hf_generate(model, ids, 24)
    blocker = blocker_for(model, ref, samples=200, length=64)
    blocked_ref = hf_generate(model, ids, 24, blocker)
    print(f"blocker changes {(blocked_ref != ref).float().mean():.0%} of generate()'s tokens")
    ok = True
    for mode in ("eager", "graph", "compile"):
        for hook in (None, blocker):
            try:
                want = ref if hook is None else blocked_ref
                dec = GreedyDecoder(model, 4, 8, 24, ban_ids=[model.config.eos_token_id], processor=hook, mode=mode)
                got = [dec(ids), dec(ids.flip(0)).flip(0)]  # second call reuses the recording
                same = all(torch.equal(g, want) for g in got)
            except Exception as e:  # noqa: BLE001
                same, got = False, f"{type(e).__name__}: {str(e)[:300]}"
            ok &= same
            print(f"fast greedy {mode:8s} blocker={hook is not None!s:5s} equal to generate(): {same}"
                  + ("" if same else f"  ({got if isinstance(got, str) else 'tokens differ'})"))
    dec = GreedyDecoder(model, 4, 8, 24, ban_ids=[model.config.eos_token_id], processor=blocker, mode="graph")
    dec(ids)
    torch.cuda.set_sync_debug_mode("error")  # any device→host wait inside the call now raises
    try:
        dec(ids)
        print("graph + blocker call without a host sync: True")
    except RuntimeError as e:
        print(f"graph + blocker call without a host sync: False ({str(e)[:200]})")  # reported, not fatal
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
