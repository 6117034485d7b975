"""Launchers: how the cells that are not done get run. Each yields (cell, outcome) as cells finish.

    hyperfit experiment SPEC                        # local: one cell after another, in this process
    hyperfit experiment SPEC --launcher submitit    # one SLURM job per cell (pip install 'hyperfit[experiments]')

Both run the same function, `cells.run_cell(config, run_dir)`; submitit pickles it into each job, so a cell
on a cluster is exactly a local cell run elsewhere. The spec's `submitit:` section holds the executor's
parameters (timeout_min, slurm_partition, gpus_per_node, ...), plus two of ours: `cluster` (submitit's
AutoExecutor choice: slurm, local, debug; default: slurm where sbatch exists, else local) and `poll_s` (how
often to ask which jobs finished).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hyperfit.errors import ConfigError, did_you_mean
from hyperfit.experiments.cells import Cell, one_line, record_failure, run_cell

Started = Callable[[Cell], None]
Outcomes = Iterator[tuple[Cell, dict]]


def run_local(cells: Sequence[Cell], started: Started, options: dict, folder: Path,
              store: str | None = None) -> Outcomes:
    """One cell after another in this process (tokenizer and library imports are paid once)."""
    for cell in cells:
        started(cell)
        yield cell, run_cell(cell.config, str(cell.path), store)


def run_submitit(cells: Sequence[Cell], started: Started, options: dict, folder: Path,
                 store: str | None = None) -> Outcomes:
    """One job per cell through submitit's AutoExecutor; outcomes in the order the jobs finish. A job that
    died without recording its cell (timed out, preempted, out of memory) is recorded as failed here."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher submitit needs submitit: pip install 'hyperfit[experiments]' (or use "
                          "--launcher local)") from None
    if not cells:
        return
    params = dict(options)
    cluster, poll_s = params.pop("cluster", None), float(params.pop("poll_s", 10))
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    try:
        executor.update_parameters(name=folder.parent.name, **params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"the spec's submitit: section: {e}") from None
    with executor.batch():  # one array submission instead of a scheduler call per cell
        jobs = [executor.submit(run_cell, cell.config, str(cell.path), store) for cell in cells]
    for cell in cells:
        started(cell)
    by_job = {id(job): cell for cell, job in zip(cells, jobs)}
    for job in submitit.helpers.as_completed(jobs, poll_frequency=poll_s):
        cell = by_job[id(job)]
        try:
            yield cell, job.result()
        except Exception as e:  # noqa: BLE001 - the job's failure is the cell's: record it, go on
            yield cell, record_failure(cell.path, cell.key, f"job {job.job_id}: {one_line(e)}",
                                       f"submitit job {job.job_id} ({folder}): {e}")


LAUNCHERS: dict[str, Callable[..., Outcomes]] = {"local": run_local, "submitit": run_submitit}


def get_launcher(name: str) -> Callable[..., Outcomes]:
    if name not in LAUNCHERS:
        raise ConfigError(f"--launcher {name!r} is not a launcher; choose {', '.join(LAUNCHERS)}."
                          f"{did_you_mean(name, LAUNCHERS)}")
    return LAUNCHERS[name]
