"""Correctness on the GPU before timing: fast greedy (graph and compile modes) gives generate()'s tokens,
with and without the citation blocker, and a blocked graph-mode call never waits for the host.

    python benchmarks/gpu_checks.py          # tiny fp32 model; prints one line per check, exit 1 on a mismatch
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_model  # noqa: E402
from generate import blocker_for, hf_generate  # noqa: E402


def main() -> int:
    from hyperfit.decoding.fast_greedy import GreedyDecoder

    model = build_model("tiny", "cuda", torch.float32).eval()
    ids = torch.randint(3, 512, (4, 8), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    ref = hf_generate(model, ids, 24)
    blocker = blocker_for(model, ref, samples=200, length=64)
    blocked_ref = hf_generate(model, ids, 24, blocker)
    print(f"blocker changes {(blocked_ref != ref).float().mean():.0%} of generate()'s tokens")
    ok = True
    for mode in os.environ.get("CHECK_MODES", "eager,graph,compile").split(","):
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
    # The blocker alone must never wait for the host; a whole decoder call may (transformers' prefill), but
    # not once per token: count the syncs of one 24-token call.
    tokens, scores = torch.cat([ids, ref], 1), torch.randn(4, 512, device="cuda")
    blocker(tokens, scores)
    torch.cuda.set_sync_debug_mode("error")
    try:
        blocker(tokens, scores)
        print("blocker call without a host sync: True")
    except RuntimeError as e:
        ok = False
        print(f"blocker call without a host sync: False ({str(e)[:200]})")
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for mode in ("graph", "eager"):
        dec = GreedyDecoder(model, 4, 8, 24, ban_ids=[model.config.eos_token_id], processor=blocker, mode=mode)
        dec(ids)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                dec(ids)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        print(f"{mode} + blocker, 24 new tokens: {syncs} host syncs per call")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
