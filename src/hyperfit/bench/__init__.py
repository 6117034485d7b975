"""`hyperfit bench RUN`: lm-evaluation-harness on the original and the hyperfitted model, before/after.

    hyperfit bench runs/demo                                    # the local tasks (offline)
    hyperfit bench runs/tinyllama --tasks hellaswag,lambada_openai,mmlu --limit 500   # harness tasks (hub)

    local.py    the shipped offline tasks (tasks/*.yaml) and their data, built from a held-out text file
    harness.py  the harness run through its Python API on the run's model objects; metrics/bench-<tag>.json
    results.py  the report's before/after table (reads the JSON only: no torch, no lm-eval)
"""

from hyperfit.bench.harness import bench
from hyperfit.bench.local import LOCAL_TASKS
from hyperfit.bench.results import bench_lines

__all__ = ["LOCAL_TASKS", "bench", "bench_lines"]
