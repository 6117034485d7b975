"""Split per-batch work over the processes of `accelerate launch`, and gather it back in order.

    for b in my_batches(n):          # rank r runs batches r, r + R, r + 2R, ... (-1: a padding batch)
        results[b] = work(b)
    rows = gather_batches(results, n)  # every rank gets all n batches' rows, in batch order
    rows = map_batches(n, work)        # the same two steps, for work that keeps no state between batches
    print0(f"wrote {path}")            # once under a launch, not once per process

Batches, not rows, are dealt out, so each batch is built exactly as in one process (same contexts, same
sampling seed `seed + b`): the gathered rows equal a one-process run's. Every rank runs the same number
of batches (padding with -1), because under FSDP / ZeRO-3 every forward is a collective that all ranks
must enter. Single process: no process group, nothing gathered.
"""

from __future__ import annotations

import math
import os
import sys

from hyperfit.errors import RunError


def world() -> tuple[int, int]:
    """(rank, number of processes); starts the process group when launched by accelerate/torchrun."""

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Idempotent: reuses the training Accelerator's process group if there is one. CPU processes need
    # cpu=True to form a (gloo) group: PartialState, unlike the Accelerator, ignores ACCELERATE_USE_CPU.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    check_group(state.num_processes)
    return state.process_index, state.num_processes


def check_group(formed: int) -> None:
    """Refuse a launch whose processes formed no group of their own number.

    A GPU launch config (distributed_type: MULTI_GPU) on a process that sees no GPU makes accelerate
    fall back to one process each, silently: every process would then train the whole run and write the
    same files. Called with the group size accelerate formed."""

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != formed:
        import torch

        sees = "sees no GPU (torch.cuda.is_available() is False)" if not torch.cuda.is_available() else \
            f"sees {torch.cuda.device_count()} GPU(s)"
        raise RunError(
            f"launched as {launched} processes (WORLD_SIZE={launched}), but accelerate formed a group of {formed}: "
            f"each process would run the whole job alone. This process {sees}. On GPUs, check the driver and "
            "CUDA_VISIBLE_DEVICES; on CPUs, launch with ACCELERATE_USE_CPU=true (gloo)")


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only: a message said once per launch, not once per process.

    Not accelerate's PartialState.print: that prints on each node's local main process, so a two-node
    launch would say everything twice. One process needs no process group, hence no accelerate import."""
    if world()[0] == 0:
        print(*args, **kwargs)


def barrier() -> None:
    """Wait for every process (no-op in one process): e.g. until rank 0 has written a shared file."""
    if world()[1] > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def my_batches(n: int) -> list[int]:
    """Indices of the batches this rank runs; -1 marks a padding batch whose result is thrown away."""
    rank, size = world()
    per_rank = math.ceil(n / size)
    return [b if b < n else -1 for b in range(rank, per_rank * size, size)]


def map_batches(n: int, work) -> list:
    """The rows of work(0), ..., work(n - 1), concatenated in order, with the batches dealt out over the
    launched processes (one process: simply every batch in turn).

    A padding batch (-1) runs batch 0 again and is dropped, so every rank enters as many forwards (a
    collective for sharded weights). Tensors in the rows are moved to the CPU before the gather: a pickled
    CUDA tensor would be unpickled onto the sending rank's device."""
    results = {b: work(max(b, 0)) for b in my_batches(n)}
    if world()[1] > 1:
        from torch.utils._pytree import tree_map

        results = tree_map(lambda x: x.cpu() if hasattr(x, "cpu") else x, results)
    return gather_batches(results, n)


def gather_batches(results: dict[int, list], n: int) -> list:
    """All ranks' {batch index: rows} → every row of batches 0..n-1, in order (a collective)."""
    rank, size = world()
    mine = {b: rows for b, rows in results.items() if b >= 0}
    if size > 1:
        import torch.distributed as dist

        parts: list = [None] * size
        dist.all_gather_object(parts, mine)  # pickled through the backend: gloo on CPU, NCCL on GPU
        for part in parts:
            mine.update(part)
    missing = [b for b in range(n) if b not in mine]
    if missing:
        raise RuntimeError(f"batches {missing} came back from no rank; were all ranks running the same command?")
    return [row for b in range(n) for row in mine[b]]


def device():
    """This process's device: cuda:LOCAL_RANK under a multi-GPU launch, cuda on one GPU, else cpu."""
    import torch

    if world()[1] > 1:
        from accelerate import PartialState

        return PartialState().device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def close_process_group() -> None:
    """Tear down the launch's process group once a command has finished on every rank. Left to interpreter
    shutdown, gloo's worker threads can abort a process that has done all its work ("terminate called
    without an active exception", SIGABRT), and the launch then fails. Costs nothing when torch.distributed
    was never loaded or no group was formed."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
