"""How work is dealt out over launched processes (hyperfit.dist), without launching: the rank and the
process count are faked; tests/test_distributed.py launches real processes."""

import pytest

import hyperfit.dist as ranks
from hyperfit.errors import RunError


def as_rank(monkeypatch, rank: int, size: int) -> None:
    monkeypatch.setattr(ranks, "world", lambda: (rank, size))


@pytest.mark.parametrize("n, size", [(7, 3), (2, 4), (1, 3), (8, 2)])
def test_every_batch_is_run_by_exactly_one_rank_and_every_rank_runs_as_many(monkeypatch, n, size):
    dealt = []
    for rank in range(size):
        as_rank(monkeypatch, rank, size)
        dealt.append(ranks.my_batches(n))
    assert sorted(b for mine in dealt for b in mine if b >= 0) == list(range(n))
    assert len({len(mine) for mine in dealt}) == 1  # padding (-1) evens them out: forwards are collectives


def test_map_batches_runs_only_this_ranks_batches_and_pads_with_batch_0(monkeypatch):
    # 7 batches over 3 ranks: rank 2 runs batches 2 and 5, then batch 0 again as padding, whose rows are dropped.
    as_rank(monkeypatch, 2, 3)
    monkeypatch.setattr(ranks, "gather_batches", lambda results, n: results)  # what this rank contributes
    ran = []

    def work(b):
        ran.append(b)
        return [f"row of {b}"]

    assert ranks.map_batches(7, work) == {2: ["row of 2"], 5: ["row of 5"], -1: ["row of 0"]}
    assert ran == [2, 5, 0]


def test_map_batches_in_one_process_is_every_batch_in_order():
    assert ranks.map_batches(4, lambda b: [b, b * 10]) == [0, 0, 1, 10, 2, 20, 3, 30]


def test_a_launch_whose_processes_formed_no_group_is_refused(monkeypatch):
    # A GPU launch config on processes that see no GPU: accelerate falls back to one process each, which
    # would all train the whole run into the same folder.
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RunError, match=r"launched as 2 processes \(WORLD_SIZE=2\), but accelerate formed a group "
                                       r"of 1.*ACCELERATE_USE_CPU=true"):
        ranks.check_group(1)
    ranks.check_group(2)
    monkeypatch.delenv("WORLD_SIZE")
    ranks.check_group(1)


def test_print0_speaks_once_per_launch(monkeypatch, capsys):
    # Rank 0 of any node count; accelerate's PartialState.print would speak once per node.
    for rank in range(3):
        as_rank(monkeypatch, rank, 3)
        ranks.print0("wrote", "x", sep=": ")
    assert capsys.readouterr().out == "wrote: x\n"


def test_importing_dist_loads_neither_accelerate_nor_torch():
    import subprocess
    import sys

    code = "import sys, hyperfit.dist as d; d.print0('hi'); print(sorted({'torch', 'accelerate'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={
        **__import__("os").environ, "WORLD_SIZE": "1"})
    assert out.stdout.split("\n")[:2] == ["hi", "[]"]


def test_a_finished_command_closes_the_process_group(tmp_path):
    # Left to interpreter shutdown, gloo's threads aborted a launched process that had finished its work
    # (SIGABRT, "terminate called without an active exception"), failing the launch.
    import torch.distributed as dist

    from hyperfit.dist import close_process_group

    close_process_group()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    close_process_group()
    assert not dist.is_initialized()
