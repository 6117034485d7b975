"""lm-evaluation-harness on a run's original and hyperfitted models, through its Python API.

Each model is loaded as generation loads it (`load_for_inference`: the run's model.dtype, this process's
device), wrapped in the harness's HFLM as an object (no subprocess, no second load by name), and evaluated
with `lm_eval.simple_evaluate`. metrics/bench-<tag>.json is written after each model, so an interrupted
bench keeps the model it finished and a rerun with the same tasks and limit evaluates only the other.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from hyperfit.bench.local import LOCAL_TASKS, build_local_data, default_text, task_config
from hyperfit.errors import RunError
from hyperfit.runs import RunDir, load_run_config, write_json

MODELS = ("base", "final")  # model.name as it was, and checkpoints/final


def bench(run: RunDir | str | Path, tasks: list[str] | None = None, limit: int | None = None, text: str | None = None,
          batch_size: int = 8, tag: str | None = None) -> Path:
    """Evaluate the run's original and hyperfitted models on `tasks` (default: the local ones); returns
    metrics/bench-<tag>.json (tag: the task names joined by '-')."""
    run = RunDir.of(run)
    cfg = load_run_config(run)
    tasks = list(tasks or LOCAL_TASKS)
    run.weights_for("final")  # refuses before any work when the run has not been trained
    specs = _task_specs(tasks, run, text, cfg.data.source)
    out = run.metrics / f"bench-{tag or '-'.join(tasks)}.json"
    result = {"kind": "bench", "tasks": tasks, "limit": limit, "lm_eval": _version(), "models": {}}
    if out.is_file():
        saved = json.loads(out.read_text())
        if (saved.get("tasks"), saved.get("limit")) == (tasks, limit):
            result["models"] = saved.get("models", {})  # the models already done with these settings
    manager = None
    for which in MODELS:
        if which not in result["models"]:
            manager = manager or task_manager(only_local=all(isinstance(s, dict) for s in specs))
            result["models"][which] = evaluate_model(cfg.model, run.weights_for(which), specs, limit, batch_size,
                                                     manager)
            write_json(out, result)
    return out


def _task_specs(tasks: list[str], run: RunDir, text: str | None, source: str) -> list:
    """Local task names → their configs (data built now); other names go to the harness as they are."""
    local = [t for t in tasks if t in LOCAL_TASKS]
    if not local:
        return tasks
    data = build_local_data(local, run, default_text(text, source))
    return [task_config(t, data[t], run.path / "bench" / "cache") if t in data else t for t in tasks]


def _version() -> str:
    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return "not installed"


def task_manager(only_local: bool):
    """The harness's task index. Indexing its thousands of built-in task files takes ~25 s on a shared CPU:
    when every task is a local config, none of them is needed."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise RunError("hyperfit bench runs lm-evaluation-harness, which is not installed: "
                       "pip install 'hyperfit[bench]' (or pip install lm-eval)") from e
    return TaskManager(include_defaults=not only_local)


def evaluate_model(model_cfg, weights: Path | None, specs: list, limit: int | None, batch_size: int,
                   manager) -> dict:
    """{task: {metric: value}} for one model; weights None: model.name itself."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from hyperfit.models import load_for_inference, load_tokenizer

    model = load_for_inference(model_cfg, weights).eval()
    lm = HFLM(pretrained=model, tokenizer=load_tokenizer(model_cfg, weights), batch_size=batch_size)
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=specs, limit=limit, log_samples=False, bootstrap_iters=1000,
                                     task_manager=manager)
    except (KeyError, ValueError, FileNotFoundError, ConnectionError, OSError) as e:
        raise RunError(f"lm-evaluation-harness could not run tasks {[_name(s) for s in specs]}: "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Harness tasks by name need their "
                       f"data from the hub (unset HF_HUB_OFFLINE); offline, use the local tasks "
                       f"{', '.join(LOCAL_TASKS)}") from e
    return {task: _clean(values) for task, values in out["results"].items()}


def _name(spec) -> str:
    return spec["task"] if isinstance(spec, dict) else str(spec)


def _clean(values: dict) -> dict:
    """lm-eval's 'acc,none' keys → 'acc'; numbers only (it also reports the task's alias)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key.split(",")[0]] = float(value)
    return out
